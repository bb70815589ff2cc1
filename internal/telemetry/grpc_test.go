package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// BenchmarkServerInterceptors measures what the unary interceptors add to
// a successful Rank call when the log is at Info, as in production.
func BenchmarkServerInterceptors(b *testing.B) {
	log := slog.New(slog.NewJSONHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	unary, _, _ := ServerInterceptors(log, prometheus.NewRegistry())
	info := &grpc.UnaryServerInfo{FullMethod: personalizerv1.PersonalizerService_Rank_FullMethodName}
	h := grpc.UnaryHandler(func(ctx context.Context, req any) (any, error) { return req, nil })
	for i := len(unary) - 1; i >= 0; i-- { // chained as grpc.ChainUnaryInterceptor does
		next, ic := h, unary[i]
		h = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, next) }
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}})
	req := &personalizerv1.RankRequest{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// slowHealth is a health server whose Check takes at least minCall, so
// that the duration a log line reports can be checked from below: a plain
// Check can take less than the microsecond the line resolves.
type slowHealth struct{ healthpb.HealthServer }

const minCall = 2 * time.Millisecond

func (h slowHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	time.Sleep(minCall) // a least duration, not a wait for anything
	return h.HealthServer.Check(ctx, req)
}

// TestLogLines checks the one line per call: a successful call is logged
// only at Debug, a failed one at Info or above, with its start time and
// duration either way, both within what the caller saw.
func TestLogLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		level slog.Level
		want  []string // method/code of the lines
	}{
		{slog.LevelInfo, []string{"Check/NotFound"}},
		{slog.LevelDebug, []string{"Check/OK", "Check/NotFound"}},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: tt.level}))
			unary, stream, _ := ServerInterceptors(log, prometheus.NewRegistry())
			lis := bufconn.Listen(1 << 20)
			srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
			healthpb.RegisterHealthServer(srv, slowHealth{health.NewServer()})
			go srv.Serve(lis)
			conn, err := grpc.NewClient("passthrough:///bufnet",
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			client := healthpb.NewHealthClient(conn)
			// The calls' start times and durations as the client saw
			// them: each line's must lie within its call's.
			var starts []time.Time
			var took []time.Duration
			call := func(service string) error {
				start := time.Now()
				_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
				starts, took = append(starts, start), append(took, time.Since(start))
				return err
			}
			if err := call(""); err != nil {
				t.Fatal(err)
			}
			if err := call("nope"); status.Code(err) != codes.NotFound {
				t.Fatalf("Check(nope) = %v, want NotFound", err)
			}
			conn.Close()
			srv.GracefulStop() // every call has finished, and logged
			if tt.level == slog.LevelInfo {
				starts, took = starts[1:], took[1:] // only the failed call is logged
			}

			var got []string
			for i, l := range slices.Collect(strings.Lines(logs.String())) {
				var e struct {
					Msg    string
					Method string `json:"grpc.method"`
					Code   string `json:"grpc.code"`
					Start  string `json:"grpc.start_time"`
					Millis string `json:"grpc.time_ms"`
				}
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatal(err)
				}
				got = append(got, e.Method+"/"+e.Code)
				start, serr := time.Parse(time.RFC3339, e.Start)
				ms, merr := strconv.ParseFloat(e.Millis, 64)
				if e.Msg != "finished call" || serr != nil || merr != nil {
					t.Errorf("log line %s: want a finished call with start time and duration", l)
					continue
				}
				if i >= len(starts) {
					continue // the line count is checked below
				}
				// The start time is in whole seconds; the duration is
				// in milliseconds with microseconds, rounded down.
				if first := starts[i].Truncate(time.Second); start.Before(first) || start.After(starts[i].Add(took[i])) {
					t.Errorf("log line %s: start time not within the call (%v, took %v)", l, starts[i], took[i])
				}
				if d := time.Duration(ms * float64(time.Millisecond)); d < minCall || d > took[i]+time.Microsecond {
					t.Errorf("log line %s: duration %v, want at least %v and at most the %v the client saw", l, d, minCall, took[i])
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("lines for %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRESTHandler checks the REST API's wrapper: Rank is timed, failed
// calls are logged at Info, a panic becomes a 500 and is counted.
func TestRESTHandler(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	_, _, wrap := ServerInterceptors(log, reg)
	h := wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/personalizer/v1.0/rank":
			w.WriteHeader(http.StatusCreated)
		case "/personalizer/v1.0/events/e1/reward":
			w.WriteHeader(http.StatusNoContent)
		case "/panic":
			panic("boom")
		default:
			http.Error(w, "bad", http.StatusBadRequest)
		}
	}))
	calls := []struct {
		path string
		want int
	}{
		{"/personalizer/v1.0/rank", 201},
		{"/personalizer/v1.0/rank", 201},
		{"/personalizer/v1.0/events/e1/reward", 204},
		{"/nope/rank", 400}, // a failed Rank is not timed
		{"/panic", 500},
	}
	for _, c := range calls {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, c.path, nil))
		if rec.Code != c.want {
			t.Errorf("%s: status %d, want %d", c.path, rec.Code, c.want)
		}
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if h := m.GetHistogram(); h != nil {
			got[mf.GetName()] = float64(h.GetSampleCount())
		} else {
			got[mf.GetName()] = m.GetCounter().GetValue()
		}
	}
	if got["personalizer_rank_duration_seconds"] != 2 || got["personalizer_grpc_panics_total"] != 1 {
		t.Errorf("metrics %v, want 2 ranks timed and 1 panic", got)
	}
	var lines []string
	for l := range strings.Lines(logs.String()) {
		var e struct {
			Msg    string
			Path   string `json:"http.path"`
			Status int    `json:"http.status"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, e.Msg+" "+e.Path+" "+strconv.Itoa(e.Status))
	}
	want := []string{"finished call /nope/rank 400", "panic in HTTP handler /panic 0", "finished call /panic 500"}
	if !slices.Equal(lines, want) {
		t.Errorf("log lines %q, want %q", lines, want)
	}
}
