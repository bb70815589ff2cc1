package telemetry

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// rankBuckets are the bounds of the Rank latency histogram, in seconds:
// fine around the Rank goal (p99 under 2 ms), coarse beyond.
var rankBuckets = []float64{.00005, .0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}

// ServerInterceptors returns the interceptors a gRPC server runs first, in
// this order: recovery (a panic becomes Internal and is logged), logging
// (one line per call: Debug when it succeeded, Info or worse when not), and
// the Rank latency histogram. It registers personalizer_rank_duration_seconds
// and personalizer_grpc_panics_total with reg. Interceptors that may refuse
// a call (authentication, rate limits) go after these, so that refusals
// are logged and a panic in them is recovered. wrapHTTP does the same for the
// REST API's handler: Rank there counts in the same histogram.
func ServerInterceptors(log *slog.Logger, reg prometheus.Registerer) (unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor, wrapHTTP func(http.Handler) http.Handler) {
	panics := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "personalizer_grpc_panics_total",
		Help: "Panics in gRPC handlers, answered with Internal.",
	})
	rank := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "personalizer_rank_duration_seconds",
		Help:    "Time the server took to answer Rank: a gRPC call from its decoded request to its answer (not yet encoded), one RankStream request from decoded to sent, a REST call whole.",
		Buckets: rankBuckets,
	})
	reg.MustRegister(panics, rank)

	rec := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		panics.Inc()
		log.ErrorContext(ctx, "panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			if c == codes.OK {
				return logging.LevelDebug
			}
			return logging.DefaultServerCodeToLevel(c)
		}),
	}
	logger := slogLogger(log)
	unary = []grpc.UnaryServerInterceptor{
		recovery.UnaryServerInterceptor(rec),
		logFailures(log, logging.UnaryServerInterceptor(logger, logOpts...)),
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if info.FullMethod != personalizerv1.PersonalizerService_Rank_FullMethodName {
				return handler(ctx, req)
			}
			start := time.Now()
			resp, err := handler(ctx, req)
			rank.Observe(time.Since(start).Seconds())
			return resp, err
		},
	}
	stream = []grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(rec),
		logging.StreamServerInterceptor(logger, logOpts...),
		func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if info.FullMethod != personalizerv1.PersonalizerService_RankStream_FullMethodName {
				return handler(srv, ss)
			}
			return handler(srv, &timedStream{ServerStream: ss, h: rank})
		},
	}
	wrapHTTP = func(next http.Handler) http.Handler {
		return restHandler{next: next, log: log, rank: rank, panics: panics}
	}
	return unary, stream, wrapHTTP
}

// restHandler is ServerInterceptors' counterpart for the REST API: it
// recovers a panic as a 500, logs every call at Debug and failed ones (a
// status of 400 or more) at Info or worse, and times Rank.
type restHandler struct {
	next   http.Handler
	log    *slog.Logger
	rank   prometheus.Observer
	panics prometheus.Counter
}

func (h restHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		if p := recover(); p != nil {
			h.panics.Inc()
			h.log.ErrorContext(r.Context(), "panic in HTTP handler", "http.path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			if !sw.wrote {
				http.Error(sw, `{"error":{"code":"InternalServerError","message":"internal error"}}`, http.StatusInternalServerError)
			}
		}
		took := time.Since(start)
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/rank") && sw.status < 300 {
			h.rank.Observe(took.Seconds())
		}
		level := slog.LevelDebug
		switch {
		case sw.status >= 500:
			level = slog.LevelError
		case sw.status >= 400:
			level = slog.LevelInfo
		}
		h.log.Log(r.Context(), level, "finished call", "http.method", r.Method, "http.path", r.URL.Path,
			"http.status", sw.status, "http.start_time", start.Format(time.RFC3339), "http.time_ms", float64(took.Microseconds())/1000)
	}()
	h.next.ServeHTTP(sw, r)
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// logFailures runs go-grpc-middleware's logging interceptor for every call
// when l logs at Debug, else only for failed calls. The interceptor builds
// a call's fields (about 50 allocations, several microseconds) before it
// knows the outcome, too much for the Rank path when the line for a
// successful call is then dropped. A failed call is replayed through it
// after the handler ran, with the call's own start time and duration.
func logFailures(l *slog.Logger, logged grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if l.Enabled(ctx, slog.LevelDebug) {
			return logged(ctx, req, info, handler)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		// The logging interceptor keeps fields already in ctx over its own.
		ctx = logging.InjectFields(ctx, append(logging.Fields{"grpc.start_time", start.Format(time.RFC3339)},
			logging.DurationToTimeMillisFields(time.Since(start))...))
		return logged(ctx, req, info, func(context.Context, any) (any, error) { return resp, err })
	}
}

// slogLogger adapts l to go-grpc-middleware's logging interface.
func slogLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// timedStream observes, for each message sent, the time since the
// request it answers was received. RankStream answers every request with
// one response, in order, so the answers pair with the receive times
// first in, first out. The handler receives in one goroutine and sends in
// another, hence the mutex.
type timedStream struct {
	grpc.ServerStream
	h    prometheus.Observer
	mu   sync.Mutex
	recv []time.Time
}

func (s *timedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.mu.Lock()
		s.recv = append(s.recv, time.Now())
		s.mu.Unlock()
	}
	return err
}

func (s *timedStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	s.mu.Lock()
	if len(s.recv) > 0 {
		s.h.Observe(time.Since(s.recv[0]).Seconds())
		s.recv = s.recv[1:]
	}
	s.mu.Unlock()
	return err
}
