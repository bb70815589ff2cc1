package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	"github.com/open-personalizer/personalizer/server"
)

// modelSourceService is the gRPC health service name that reports whether
// a server reaches its learner; the overall service ("") stays SERVING
// while it does not, since Rank keeps answering with the last model.
const modelSourceService = "personalizer.v1.ModelSource"

// defaultMaxModelBytes bounds a model version sent over gRPC, on both
// sides: the learner's send limit and the server's receive limit.
const defaultMaxModelBytes = 1 << 30

// serverConfig is what `personalizer server` runs: the gRPC API, writing
// to Kafka and pulling models from a learner.
type serverConfig struct {
	Brokers       string
	LearnerAddr   string
	GRPCAddr      string
	HTTPAddr      string
	Loop          string
	EventBuffer   server.BufferLimits
	LogLevel      string
	Kafka         writerConfig
	Policy        string
	LearningMode  eventsv1.LearningMode
	MaxModelBytes int
	Limits        server.Limits
	Security      securityConfig
	LearnerTLSCA  string
	Tracing       trace.TracerProvider // from the OTEL_* environment; nil is off
	// CapacityInterval is how often CPU per Rank is sampled; 0: never.
	CapacityInterval time.Duration
	AuditScan        int64 // --audit-scan-records
}

func (c *serverConfig) registerFlags(fs *flag.FlagSet) {
	brokersVar(fs, &c.Brokers)
	fs.StringVar(&c.LearnerAddr, "learner-addr", "127.0.0.1:50052", "gRPC address of the learner the models come from")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:50051", "gRPC listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address (health, REST API)")
	loopVar(fs, &c.Loop)
	c.EventBuffer.RegisterFlags(fs, "")
	logLevelVar(fs, &c.LogLevel)
	c.Kafka.registerFlags(fs)
	fs.StringVar(&c.Policy, "policy", bandit.DefaultPolicy, "the loop's learning policy (the learner's --policy): until the first model arrives, its interactions bound a Rank's features (--max-interaction-features)")
	joiner.LearningModeVar(fs, &c.LearningMode, "learning-mode")
	fs.IntVar(&c.MaxModelBytes, "max-model-bytes", defaultMaxModelBytes, "largest model version accepted from the learner")
	c.Limits.RegisterFlags(fs, "")
	c.Security.registerFlags(fs)
	c.Security.registerModelFlags(fs)
	capacityIntervalVar(fs, &c.CapacityInterval)
	auditScanVar(fs, &c.AuditScan)
	fs.StringVar(&c.LearnerTLSCA, "learner-tls-ca", "", "PEM CAs of the learner's TLS certificate; calls the learner over TLS, presenting --tls-cert if given (mTLS)")
}

func (c *serverConfig) validate() error {
	var errs []error
	if len(splitBrokers(c.Brokers)) == 0 {
		errs = append(errs, errors.New("--kafka-brokers is empty"))
	}
	if c.LearnerAddr == "" {
		errs = append(errs, errors.New("--learner-addr is empty"))
	}
	if c.Loop == "" {
		errs = append(errs, errors.New("--loop is empty"))
	}
	if _, err := bandit.ParsePolicy(c.Policy); err != nil {
		errs = append(errs, fmt.Errorf("--policy: %w", err))
	}
	if c.MaxModelBytes <= 0 {
		errs = append(errs, fmt.Errorf("--max-model-bytes must be positive, got %d", c.MaxModelBytes))
	}
	c.Security.Loop = c.Loop
	return errors.Join(append(errs, c.EventBuffer.Validate(), c.Kafka.validate(), c.Limits.Validate(), c.Security.validate(), validateAuditScan(c.AuditScan))...)
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg serverConfig
	log, tp, stopTracing, err := startRole(ctx, "server", &cfg, &cfg.LogLevel, args, stderr, getenv)
	if err != nil {
		return err
	}
	defer stopTracing()
	cfg.Tracing = tp
	s, err := startServer(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "personalizer server: gRPC %s, HTTP %s, learner %s, brokers %s\n",
		s.api.grpcAddr(), s.api.httpLis.Addr(), cfg.LearnerAddr, strings.Join(splitBrokers(cfg.Brokers), ","))
	fmt.Fprintf(stdout, "personalizer server: dashboard %s\n", s.api.dashboardURL())
	s.wait(ctx)
	return stopped(stdout, "server", s.pub, s.close)
}

// serverRole is a server in its own process.
type serverRole struct {
	supervisor
	events *kafkalog.Writer // the server's records and dead letters
	*apiModule
	conn    *grpc.ClientConn // to the learner
	remote  *server.RemoteModels
	configs *configTopic

	// Each stage stops on its own, in shutdown order.
	serve, publish, follow stage
}

// startServer starts serving at once, with the uniform policy until the
// learner's first model arrives.
func startServer(ctx context.Context, cfg serverConfig, log *slog.Logger) (*serverRole, error) {
	s := new(serverRole)
	s.init(log)
	var err error
	// The learner's client certificate is this server's own.
	learnerTLS := callerConfig{TLSCA: cfg.LearnerTLSCA, TLSCert: cfg.Security.TLSCert, TLSKey: cfg.Security.TLSKey}
	creds, err := learnerTLS.transportCreds()
	if err != nil {
		return nil, err
	}
	if s.conn, err = dialLearner(cfg.LearnerAddr, creds, cfg.MaxModelBytes); err != nil {
		return nil, fmt.Errorf("learner %s: %w", cfg.LearnerAddr, err)
	}
	brokers := splitBrokers(cfg.Brokers)
	s.events = cfg.Kafka.writer(brokers, false)
	seed := flagConfig(cfg.Loop, cfg.Policy, 0, nil)
	seed.Service.LearningMode = loop.ModeName(cfg.LearningMode)
	s.configs = followConfigs(ctx, &s.supervisor, &s.follow, brokers, s.events, seed, log)
	policy, _ := bandit.ParsePolicy(cfg.Policy) // validate checked it
	models := eventsv1.NewModelServiceClient(s.conn)
	s.apiModule, err = newAPIModule(apiConfig{Loop: cfg.Loop, GRPCAddr: cfg.GRPCAddr, HTTPAddr: cfg.HTTPAddr, EventBuffer: cfg.EventBuffer,
		MaxRecordBytes: cfg.Kafka.MaxRecordBytes, Policy: policy, LearningMode: cfg.LearningMode, Limits: cfg.Limits,
		Security: cfg.Security, MaxModelBytes: int64(cfg.MaxModelBytes), Tracing: cfg.Tracing, AuditScan: cfg.AuditScan},
		apiDeps{events: s.events, brokers: brokers, configs: s.configs, models: server.NewRemoteModelAdmin(models), history: server.NewRemoteModelAdmin(models),
			sourceUp: func() bool { return s.remote.Reachable() }}, log)
	if err != nil {
		return nil, errors.Join(err, s.follow.stop(), s.events.Close(), s.conn.Close())
	}
	registerConfig(forLoop(s.api.metrics, cfg.Loop), s.configs, cfg.Loop)
	s.api.status = func() any { return s.status() }
	s.api.health.SetServingStatus(modelSourceService, healthpb.HealthCheckResponse_NOT_SERVING)
	s.remote = server.NewRemoteModels(models, cfg.Loop, s.learnerReachable)
	s.remote.Announce(s.dash.self)
	s.dash.models = models

	s.start(&s.publish, ctx, s.publishes())
	serves := append(s.serves(s.remote), func(ctx context.Context) error {
		return perLoop(ctx, s.configs.reg, cfg.Loop, func(ctx context.Context, name string) func() {
			return s.watchLoop(ctx, models, name)
		})
	})
	if c := startCapacity(capacitySources{role: "server", count: ranksAnswered(s.api.metrics)},
		brokers, cfg.CapacityInterval, s.api.mux, s.api.metrics, log); c != nil {
		serves = append(serves, c.Run)
		s.dash.capacity = c
	}
	s.start(&s.serve, ctx, serves...)
	s.api.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

// watchLoop serves the models of loop name, another than the server's
// own, pulled from the learner, until the returned stop.
func (s *serverRole) watchLoop(ctx context.Context, models eventsv1.ModelServiceClient, name string) (stop func()) {
	metrics := forLoop(s.api.metrics, name)
	registerServerLoop(metrics, s.srv, name)
	registerConfig(metrics, s.configs, name)
	remote := server.NewRemoteModels(models, name, func(ok bool) {
		s.log.Info("learner of loop reachable", "loop", name, "reachable", ok)
	})
	remote.Announce(s.dash.self)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.srv.WatchLoopModels(ctx, name, remote)
	}()
	return func() { cancel(); <-done; metrics.unregister() }
}

// dialLearner returns a connection to a learner's ModelService that takes
// model versions up to maxModelBytes and, while the learner is away, tries
// again at least every 5 s (gRPC's default backoff grows to 2 minutes).
func dialLearner(addr string, creds credentials.TransportCredentials, maxModelBytes int) (*grpc.ClientConn, error) {
	retry := backoff.DefaultConfig
	retry.MaxDelay = 5 * time.Second
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxModelBytes)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: retry, MinConnectTimeout: 5 * time.Second}))
}

// learnerReachable reports a change of the learner's reachability in
// health and the log.
func (s *serverRole) learnerReachable(ok bool) {
	if ok {
		s.log.Info("learner reachable")
		s.api.health.SetServingStatus(modelSourceService, healthpb.HealthCheckResponse_SERVING)
		return
	}
	s.log.Warn("learner unreachable; serving the last model (version 0: the uniform policy)", "version", s.srv.ModelVersion())
	s.api.health.SetServingStatus(modelSourceService, healthpb.HealthCheckResponse_NOT_SERVING)
}

// serverStatus is what a server's GET /healthz answers.
type serverStatus struct {
	ModelVersion     uint64   `json:"model_version"`     // 0: no model yet, the uniform policy
	ModelAgeSeconds  *float64 `json:"model_age_seconds"` // since the learner created it; null without a model
	LearnerReachable bool     `json:"learner_reachable"`
}

func (s *serverRole) status() serverStatus { return modelStatus(s.srv, s.remote.Reachable()) }

// modelStatus is the status of the model srv answers with.
func modelStatus(srv *server.Server, learnerReachable bool) serverStatus {
	st := serverStatus{LearnerReachable: learnerReachable}
	if info := srv.ModelInfo(); info != nil {
		age := ageSeconds(info.GetCreated())
		st.ModelVersion, st.ModelAgeSeconds = info.GetVersion(), &age
	}
	return st
}

// close shuts down in a fixed order: stop taking requests (in-flight ones
// finish), stop pulling models, flush every event the server accepted to
// Kafka, then close the connections. Events it could not flush make the
// process fail.
func (s *serverRole) close() error {
	s.srv.Shutdown()
	errs := []error{s.api.drain(), s.serve.stop(), s.publish.stop()}
	s.audits.Close()
	if lost := s.pub.Stats().Lost; lost > 0 {
		errs = append(errs, fmt.Errorf("%d accepted events were not written to Kafka before shutdown gave up", lost))
	}
	errs = append(errs, s.follow.stop(), s.events.Close(), s.conn.Close())
	return errors.Join(append(errs, s.failure())...)
}
