package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	"github.com/open-personalizer/personalizer/server"
)

// devConfig is everything `personalizer dev` runs.
type devConfig struct {
	GRPCAddr    string
	HTTPAddr    string
	DataDir     string
	Loop        string
	EventBuffer server.BufferLimits
	LogLevel    string
	Kafka       writerConfig
	Broker      kafkalog.BrokerConfig
	Joiner      joiner.Config
	Learner     learner.Config
	Limits      server.Limits
	Security    securityConfig
	// CapacityInterval is how often lag and capacity are sampled; 0: never.
	CapacityInterval time.Duration
	AuditScan        int64 // --audit-scan-records
	// Tracing records spans of Rank, the join and learning; nil is off.
	// runDev sets it from the OTEL_* environment; tests set their own.
	Tracing trace.TracerProvider
	// AutoClock is the clock of the auto-optimization schedule; nil is
	// time.Now. Tests set their own.
	AutoClock func() time.Time
}

func (c *devConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:50051", "gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address (health, REST API)")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "where the broker and the learner keep their data")
	loopVar(fs, &c.Loop)
	c.EventBuffer.RegisterFlags(fs, "")
	logLevelVar(fs, &c.LogLevel)
	c.Kafka.registerFlags(fs)
	c.Broker.RegisterFlags(fs, "")
	c.Joiner.RegisterFlags(fs, "")
	c.Learner.RegisterFlags(fs, "")
	c.Limits.RegisterFlags(fs, "")
	c.Security.registerFlags(fs)
	c.Security.registerModelFlags(fs)
	capacityIntervalVar(fs, &c.CapacityInterval)
	auditScanVar(fs, &c.AuditScan)
	// Seconds, not Personalizer's minutes, so that learning shows at once.
	setDefault(fs, "reward-wait", "2s")
	setDefault(fs, "join-slack", "250ms")
	setDefault(fs, "tick-interval", "500ms")
	setDefault(fs, "model-export-frequency", "2s")
}

func (c *devConfig) validate() error {
	c.Broker.DataDir = filepath.Join(c.DataDir, "broker")
	c.Learner.Dir = filepath.Join(c.DataDir, "learner", c.Loop)
	c.Learner.Loop = c.Loop
	c.Security.Loop = c.Loop
	c.Joiner.MaxRecordBytes = c.Kafka.MaxRecordBytes
	return errors.Join(c.Broker.Validate(), c.Joiner.Validate(), c.Learner.Validate(), c.EventBuffer.Validate(),
		c.Kafka.validate(), c.Limits.Validate(), c.Security.validate(), validateAuditScan(c.AuditScan))
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg devConfig
	log, tp, stopTracing, err := startRole(ctx, "dev", &cfg, &cfg.LogLevel, args, stderr, getenv)
	if err != nil {
		return err
	}
	defer stopTracing()
	cfg.Tracing = tp
	d, err := startDev(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "personalizer dev: gRPC %s, HTTP %s, Kafka %s, data %s\n", d.grpcAddr(), d.api.httpLis.Addr(), d.broker.Addrs()[0], cfg.DataDir)
	fmt.Fprintf(stdout, "personalizer dev: dashboard %s\n", d.api.dashboardURL())
	d.wait(ctx)
	err = stopped(stdout, "dev", d.pub, d.close)
	st := d.learner.Stats()
	fmt.Fprintf(stdout, "personalizer dev: learner at model version %d, %d examples learned in all\n", st.Version, st.Learned)
	return err
}

// stopped runs shutdown and then says on w what it flushed: the events
// pub wrote while the process stopped, and those it had to give up.
func stopped(w io.Writer, role string, pub *server.Publisher, shutdown func() error) error {
	before := pub.Stats()
	err := shutdown()
	after := pub.Stats()
	fmt.Fprintf(w, "personalizer %s: stopped; %d events written to Kafka while stopping, %d lost\n", role, after.Written-before.Written, after.Lost-before.Lost)
	return err
}

// dev is the whole loop in one process.
type dev struct {
	supervisor
	broker *kafkalog.Broker
	events *kafkalog.Writer // the server's records and dead letters, and ticks
	joined *kafkalog.Writer // joiner output: personalizer.joined, .audit, .deadletter
	joiner *joiner.Joiner
	*learnerModule
	*apiModule
	configs  *configTopic
	capacity *capacity // nil with --capacity-interval 0
	auto     *autoOptimizer

	// Each stage stops on its own, in shutdown order.
	serve, publish, roles, follow stage
}

// startDev starts the broker, the learner, the joiner and the server, and
// returns once all of them are serving.
func startDev(ctx context.Context, cfg devConfig, log *slog.Logger) (*dev, error) {
	d := new(dev)
	d.init(log)
	var err error
	if d.broker, err = kafkalog.StartBroker(cfg.Broker, log); err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	brokers := d.broker.Addrs()
	d.events = cfg.Kafka.writer(brokers, false)
	d.joined = cfg.Kafka.writer(brokers, true)
	d.configs = followConfigs(ctx, &d.supervisor, &d.follow, brokers, d.events,
		flagConfig(cfg.Loop, cfg.Learner.Policy, cfg.Learner.ExportEvery, &cfg.Joiner.Rules), log)
	cfg.Joiner.TracerProvider, cfg.Learner.TracerProvider = cfg.Tracing, cfg.Tracing
	if d.learnerModule, err = newLearnerModule(cfg.Learner, cfg.DataDir, brokers, d.configs, log); err != nil {
		d.closeKafka()
		return nil, err
	}
	group := kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: brokers, GroupID: joinerGroup, Topic: eventlog.EventsTopic}, log)
	d.joiner = joiner.New(cfg.Joiner, log, group, d.joined, d.events, time.Now)
	policy, _ := bandit.ParsePolicy(cfg.Learner.Policy) // the learner checked it
	// The model source is this process's own learner, always reachable.
	d.apiModule, err = newAPIModule(apiConfig{Loop: cfg.Loop, GRPCAddr: cfg.GRPCAddr, HTTPAddr: cfg.HTTPAddr, EventBuffer: cfg.EventBuffer,
		MaxRecordBytes: cfg.Kafka.MaxRecordBytes, Policy: policy, LearningMode: cfg.Joiner.LearningMode, Limits: cfg.Limits,
		Security: cfg.Security, Tracing: cfg.Tracing, AuditScan: cfg.AuditScan},
		apiDeps{events: d.events, brokers: brokers, configs: d.configs, models: localModels{d.svc}, history: localModels{d.svc},
			register: func(g *grpc.Server) { eventsv1.RegisterModelServiceServer(g, d.svc) }, sourceUp: func() bool { return true }}, log)
	if err != nil {
		d.closeKafka()
		return nil, err
	}
	if mv := d.store.Latest(); mv != nil { // resumed: serve the learned model from the first request
		if err := d.srv.Load(mv); err != nil {
			d.api.grpcLis.Close()
			d.api.httpLis.Close()
			d.closeKafka()
			return nil, err
		}
	}
	registerJoiner(d.api.metrics, d.joiner)
	d.api.status = func() any { return devStatus{modelStatus(d.srv, true), learnerStatusOf(d.learner, d.store)} }

	// The server serves each other loop's models from its learner here.
	d.host.also = func(name string, store *learner.Store, metrics *loopRegisterer) func(context.Context) error {
		registerServerLoop(metrics, d.srv, name)
		return func(ctx context.Context) error { return d.srv.WatchLoopModels(ctx, name, store) }
	}
	d.auto = newAutoOptimizer(d.configs, d.evals, localModels{d.svc}, cfg.AutoClock, log)
	roles := append([]func(context.Context) error{d.joiner.Run, d.auto.Run}, d.learnerModule.serve(d.api.metrics, d.api)...)
	d.capacity = startCapacity(capacitySources{role: "dev", count: ranksAnswered(d.api.metrics), joiner: d.joiner, learners: learnersOf(d.svc)},
		brokers, cfg.CapacityInterval, d.api.mux, d.api.metrics, log)
	if d.capacity != nil {
		roles = append(roles, d.capacity.Run)
	}
	d.dash.joiner, d.dash.learners, d.dash.rewards, d.dash.capacity, d.dash.svc = d.joiner, learnersOf(d.svc), d.rewards, d.capacity, d.svc
	d.start(&d.roles, ctx, roles...)
	d.start(&d.publish, ctx, d.publishes())
	d.start(&d.serve, ctx, d.serves(d.store)...)
	d.api.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	return d, nil
}

func (d *dev) grpcAddr() string { return d.api.grpcAddr() }

// close shuts down in a fixed order: stop taking requests, flush the
// events the server accepted, then stop the joiner and the learner (which
// publishes and checkpoints a last time), then the broker.
func (d *dev) close() error {
	d.srv.Shutdown()
	d.svc.Shutdown()
	errs := []error{d.api.drain(), d.serve.stop(), d.publish.stop(), d.roles.stop()}
	d.audits.Close()
	d.closeKafka()
	return errors.Join(append(errs, d.failure())...)
}

func (d *dev) closeKafka() {
	d.follow.stop()
	if d.events != nil {
		d.events.Close()
	}
	if d.joined != nil {
		d.joined.Close()
	}
	d.broker.Close()
}
