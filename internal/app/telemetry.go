package app

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/internal/telemetry"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/server"
)

// startTracing sets up trace export from the OTEL_* environment (see
// [telemetry.Tracing]); tp is nil when tracing is off. stop flushes the
// spans not yet exported.
func startTracing(ctx context.Context, getenv func(string) string, service string, log *slog.Logger) (tp trace.TracerProvider, stop func(), err error) {
	tp, shutdown, err := telemetry.Tracing(ctx, getenv, service)
	if err != nil {
		return nil, nil, err
	}
	if tp != nil {
		log.Info("tracing on: exporting spans over OTLP", "service", service)
	}
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			log.Warn("spans not exported", "err", err)
		}
	}, nil
}

// tracingOptions are the gRPC server options that make a span of every
// call with tp, a child of the caller's span when the call carries W3C
// trace context: none when tp is nil, so untraced calls cost nothing.
func tracingOptions(tp trace.TracerProvider) []grpc.ServerOption {
	if tp == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{})))}
}

// newRegistry returns a process's metrics registry with the Go runtime's
// and the process's own metrics. Every process, and every test, has its
// own: nothing is registered globally.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metric is one value read from a component's counters at scrape time.
type metric struct {
	name, help string
	counter    bool // a counter, else a gauge
	value      func() float64
}

func register(reg prometheus.Registerer, ms ...metric) []prometheus.Collector {
	cs := make([]prometheus.Collector, 0, len(ms))
	for _, m := range ms {
		var c prometheus.Collector
		if m.counter {
			c = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help}, m.value)
		} else {
			c = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: m.name, Help: m.help}, m.value)
		}
		reg.MustRegister(c)
		cs = append(cs, c)
	}
	return cs
}

// loopRegisterer registers a loop's metrics, labelled loop=name, and
// unregisters them when its loop stops being served.
type loopRegisterer struct {
	reg prometheus.Registerer
	cs  []prometheus.Collector
}

func forLoop(reg prometheus.Registerer, name string) *loopRegisterer {
	return &loopRegisterer{reg: prometheus.WrapRegistererWith(prometheus.Labels{"loop": name}, reg)}
}

func (l *loopRegisterer) register(ms ...metric) { l.cs = append(l.cs, register(l.reg, ms...)...) }

func (l *loopRegisterer) unregister() {
	for _, c := range l.cs {
		l.reg.Unregister(c)
	}
}

// ageSeconds is how long ago t was; 0 for no time (no model yet).
func ageSeconds(t *timestamppb.Timestamp) float64 {
	if t == nil {
		return 0
	}
	return time.Since(t.AsTime()).Seconds()
}

// registerServer registers the metrics of a server and its event
// publisher. sourceUp reports whether the server reaches its model source
// (the learner).
func registerServer(reg prometheus.Registerer, srv *server.Server, pub *server.Publisher, sourceUp func() bool) {
	stat := func(f func(server.PublisherStats) int64) func() float64 {
		return func() float64 { return float64(f(pub.Stats())) }
	}
	register(reg,
		metric{"personalizer_events_written_total", "Event records (rank, reward, activate) the broker acknowledged.", true,
			stat(func(s server.PublisherStats) int64 { return s.Written })},
		metric{"personalizer_events_buffered", "Event records waiting in the buffer for the broker.", false,
			stat(func(s server.PublisherStats) int64 { return int64(s.Buffered) })},
		metric{"personalizer_events_buffer_capacity", "Records the event buffer holds at most (--event-buffer).", false,
			stat(func(s server.PublisherStats) int64 { return int64(s.Limits.Records) })},
		metric{"personalizer_events_buffered_bytes", "Bytes of the event records waiting for the broker, the batch being written included.", false,
			stat(func(s server.PublisherStats) int64 { return s.BufferedBytes })},
		metric{"personalizer_events_buffer_capacity_bytes", "Bytes the event buffer holds at most (--event-buffer-bytes).", false,
			stat(func(s server.PublisherStats) int64 { return s.Limits.Bytes })},
		metric{"personalizer_events_refused_total", "Event records refused because the buffer was full: their ranks are not learned, their Reward or Activate calls failed with ResourceExhausted.", true,
			stat(func(s server.PublisherStats) int64 { return s.Refused })},
		metric{"personalizer_events_lost_total", "Buffered event records not written before shutdown gave up.", true,
			stat(func(s server.PublisherStats) int64 { return s.Lost })},
		metric{"personalizer_events_refused_by_log_total", "Event records the broker refused for good (too large, invalid), written to personalizer.deadletter instead.", true,
			stat(func(s server.PublisherStats) int64 { return s.DeadLettered })},
		metric{"personalizer_events_dropped_total", "Event records the broker refused for good whose dead letters it refused too: dropped, each logged at ERROR.", true,
			stat(func(s server.PublisherStats) int64 { return s.Dropped })},
		metric{"personalizer_events_write_errors_total", "Failed attempts to write event records to the broker (each retried).", true,
			stat(func(s server.PublisherStats) int64 { return s.WriteErrors })},
		metric{"personalizer_events_write_failing", "1 while writing the batch in hand fails and is being retried, else 0.", false,
			func() float64 { return b2f(pub.Stats().Failing) }},
		metric{"personalizer_server_model_source_up", "1 while the server reaches the learner it pulls models from, else 0.", false,
			func() float64 { return b2f(sourceUp()) }},
	)
}

// registerServerLoop registers the metrics of a loop a server serves.
func registerServerLoop(reg *loopRegisterer, srv *server.Server, name string) {
	reg.register(
		metric{"personalizer_server_model_version", "Model version Rank uses in the loop; 0 before the first (the uniform policy).", false,
			func() float64 { return float64(srv.LoopModelInfo(name).GetVersion()) }},
		metric{"personalizer_server_model_age_seconds", "Time since the learner made the model Rank uses in the loop; 0 before the first.", false,
			func() float64 { return ageSeconds(srv.LoopModelInfo(name).GetCreated()) }},
	)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// registerJoiner registers a joiner's counters: each counts once the
// output it describes is acknowledged by the broker.
func registerJoiner(reg prometheus.Registerer, j *joiner.Joiner) {
	stat := func(f func(joiner.Stats) int64) func() float64 {
		return func() float64 { return float64(f(j.Counters())) }
	}
	register(reg,
		metric{"personalizer_joiner_joined_total", "Ranks whose reward window closed and that were written to personalizer.joined.", true,
			stat(func(s joiner.Stats) int64 { return s.Emitted })},
		metric{"personalizer_joiner_learnable_total", "Joined ranks to learn from (the rest are written with _skipLearn).", true,
			stat(func(s joiner.Stats) int64 { return s.Learnable })},
		metric{"personalizer_joiner_default_reward_total", "Joined ranks with no reward in their window: they get --default-reward.", true,
			stat(func(s joiner.Stats) int64 { return s.DefaultRewards })},
		metric{"personalizer_joiner_late_total", "Rewards and activations outside their rank's window, written to personalizer.audit.", true,
			stat(func(s joiner.Stats) int64 { return s.Late })},
		metric{"personalizer_joiner_dangling_total", "Rewards and activations whose rank never came, written to personalizer.audit.", true,
			stat(func(s joiner.Stats) int64 { return s.Dangling })},
		metric{"personalizer_joiner_dead_letter_total", "Records that did not decode, copied to personalizer.deadletter.", true,
			stat(func(s joiner.Stats) int64 { return s.Undecodable })},
		metric{"personalizer_joiner_skewed_total", "Records stamped more than --max-clock-skew ahead of the joiners' clock, written to personalizer.audit; they do not move the watermark.", true,
			stat(func(s joiner.Stats) int64 { return s.Skewed })},
		metric{"personalizer_joiner_truncated_total", "Joined lines written without the outcomes that did not fit --max-record-bytes.", true,
			stat(func(s joiner.Stats) int64 { return s.Truncated })},
		metric{"personalizer_joiner_refused_total", "Outputs over --max-record-bytes or refused by the broker, written to personalizer.deadletter as a reference to their input.", true,
			stat(func(s joiner.Stats) int64 { return s.Refused })},
		metric{"personalizer_joiner_dropped_total", "Outputs refused even as a dead-letter reference: skipped, each logged at ERROR.", true,
			stat(func(s joiner.Stats) int64 { return s.Dropped })},
		metric{"personalizer_joiner_unread_total", "Events whose window closed but whose rank record could not be read back (deleted by retention, or another record at its offset): not joined, written to personalizer.deadletter as a reference, each logged at ERROR.", true,
			stat(func(s joiner.Stats) int64 { return s.Unread })},
		metric{"personalizer_joiner_unknown_slot_rewards_total", "Rewards of multi-slot events that named none of the event's slots (or no slot): left out of the joined line, not learned.", true,
			stat(func(s joiner.Stats) int64 { return s.UnknownSlots })},
		metric{"personalizer_joiner_errors_total", "Failed attempts to fetch records, read a rank record back or write output (each retried).", true,
			stat(func(s joiner.Stats) int64 { return s.Errors })},
		metric{"personalizer_joiner_stalled_partitions", "Partitions of this joiner whose fetch or output write is failing and being retried: they do not move on.", false,
			func() float64 { return float64(j.Stalled()) }},
		metric{"personalizer_joiner_pending_events", "Ranks waiting for their reward window to close in this joiner's partitions; each takes about 140 bytes, whatever its record's size (the rank is read back when the window closes).", false,
			func() float64 { return float64(j.Pending()) }},
	)
}

// registerLearner registers a learner's counters and its model.
func registerLearner(reg *loopRegisterer, l *learner.Learner, store *learner.Store) {
	stat := func(f func(learner.Stats) int64) func() float64 {
		return func() float64 { return float64(f(l.Stats())) }
	}
	reg.register(
		metric{"personalizer_learner_examples_total", "Examples learned, all time (kept across restarts by the checkpoint).", true,
			stat(func(s learner.Stats) int64 { return s.Learned })},
		metric{"personalizer_learner_duplicates_total", "Joined events dropped as repeats of one already learned.", true,
			stat(func(s learner.Stats) int64 { return s.Duplicates })},
		metric{"personalizer_learner_malformed_total", "Joined lines that did not parse.", true,
			stat(func(s learner.Stats) int64 { return s.Malformed })},
		metric{"personalizer_learner_model_version", "Latest model version published.", false,
			stat(func(s learner.Stats) int64 { return int64(s.Version) })},
		metric{"personalizer_learner_model_age_seconds", "Time since the latest model version was made; 0 before the first.", false,
			func() float64 { return ageSeconds(store.Latest().GetInfo().GetCreated()) }},
		metric{"personalizer_learner_checkpoint_failures_total", "Checkpoint writes that failed (a full or broken disk); each is retried with backoff.", true,
			stat(func(s learner.Stats) int64 { return s.CheckpointFailures })},
		metric{"personalizer_learner_checkpoint_failing", "1 while the latest checkpoint write failed: the learner learns in memory and publishes no model version until a checkpoint is written; else 0.", false,
			func() float64 { return b2f(l.Stats().CheckpointFailing) }},
		metric{"personalizer_learner_last_checkpoint_timestamp_seconds", "Unix time the last checkpoint was written (the checkpoint file's after a restart); 0 before the first.", false,
			func() float64 { return unixSeconds(l.Stats().LastCheckpoint) }},
		metric{"personalizer_learner_policy_changes_total", "Policy changes applied: each retrained the new policy over the retained joined log, then swapped it in.", true,
			stat(func(s learner.Stats) int64 { return s.PolicyChanges })},
		metric{"personalizer_learner_retraining", "1 while a policy change retrains (the previous model serves meanwhile); else 0.", false,
			func() float64 { return b2f(l.Stats().Retraining) }},
		metric{"personalizer_learner_retrain_examples", "Examples the current or last retrain learned.", false,
			stat(func(s learner.Stats) int64 { return s.RetrainLearned })},
		metric{"personalizer_learner_retrain_failures_total", "Retrains that failed (the old model and policy stay; retried with backoff).", true,
			stat(func(s learner.Stats) int64 { return s.RetrainFailures })},
		metric{"personalizer_learner_model_resets_total", "Model resets (DELETE /model, ResetModel).", true,
			stat(func(s learner.Stats) int64 { return s.Resets })},
		metric{"personalizer_learner_model_imports_total", "Model imports (PUT /model, ImportModel).", true,
			stat(func(s learner.Stats) int64 { return s.Imports })},
		metric{"personalizer_learner_model_rollbacks_total", "Model rollbacks (POST /model/rollback, RollbackModel).", true,
			stat(func(s learner.Stats) int64 { return s.Rollbacks })},
	)
}

// registerConfig exports the configuration version a role applies to a loop.
func registerConfig(reg *loopRegisterer, c *configTopic, name string) {
	reg.register(metric{"personalizer_config_version", "Version of the loop's configuration this process applies (0: from flags, before any change).", false,
		func() float64 { return float64(c.reg.Get(name).GetVersion()) }})
}

// metricsServer serves GET /metrics and /healthz for a process without an
// API of its own (the joiner).
type metricsServer struct {
	addr   net.Addr
	http   *http.Server
	served chan error
}

// serveMetrics serves reg on addr until close, with the routes already on
// mux (nil: none) and timeouts t (zero fields: the defaults).
func serveMetrics(addr string, reg *prometheus.Registry, mux *http.ServeMux, t httpTimeouts) (*metricsServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if mux == nil {
		mux = http.NewServeMux()
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	m := &metricsServer{addr: lis.Addr(), http: newHTTPServer(mux, t), served: make(chan error, 1)}
	go func() { m.served <- m.http.Serve(lis) }() // ends at close
	return m, nil
}

func (m *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.http.Shutdown(ctx)
	<-m.served
}

// roleConfig is a role's configuration: its flags and their checks.
type roleConfig interface {
	registerFlags(*flag.FlagSet)
	validate() error
}

// startRole parses and checks a role's flags into cfg, then starts its
// logger (at *logLevel, which the flags set) and its tracing.
func startRole(ctx context.Context, name string, cfg roleConfig, logLevel *string, args []string, stderr io.Writer, getenv func(string) string) (*slog.Logger, trace.TracerProvider, func(), error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.registerFlags(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return nil, nil, nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, nil, nil, err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return nil, nil, nil, err
	}
	tp, stop, err := startTracing(ctx, getenv, "personalizer-"+name, log)
	if err != nil {
		return nil, nil, nil, err
	}
	return log, tp, stop, nil
}
