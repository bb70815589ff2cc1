package app

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	"github.com/open-personalizer/personalizer/server"
)

// apiConfig is what the serving part of a process (dev, or the server
// role) is configured with.
type apiConfig struct {
	Loop           string // the process's own loop
	GRPCAddr       string
	HTTPAddr       string
	EventBuffer    server.BufferLimits
	MaxRecordBytes int
	Policy         *bandit.Policy
	LearningMode   eventsv1.LearningMode
	Limits         server.Limits
	Security       securityConfig
	MaxModelBytes  int64 // largest model import; 0: server.DefaultMaxModelBytes
	Tracing        trace.TracerProvider
	AuditScan      int64 // --audit-scan-records
}

// apiModule is the serving part of a process: the server of every loop
// the configuration topic holds, the publisher of its events, the gRPC and
// HTTP listeners (PersonalizerService, AdminService, REST, health,
// metrics) and the admin API.
type apiModule struct {
	pub   *server.Publisher
	srv   *server.Server
	api   *api
	admin *server.Admin
	evals *evaluations // the loops' offline evaluations, run here
	dash  *dashboard
	// audits is the connection the decision audit reads the log over;
	// the role closes it once it stops serving.
	audits *kafkalog.Inspector
}

// apiDeps are what the serving part takes from the rest of its process.
type apiDeps struct {
	events   eventlog.Writer // where events go
	brokers  []string        // for the logs admin
	configs  *configTopic
	models   server.ModelAdmin    // resets and imports models
	history  server.ModelHistory  // past model versions and rollbacks
	register func(g *grpc.Server) // more gRPC services (dev: the ModelService)
	sourceUp func() bool          // whether the model source is reachable
	opts     []grpc.ServerOption  // more gRPC server options
}

// newAPIModule listens on cfg's addresses and wires the serving part; it
// serves once runs' functions run.
func newAPIModule(cfg apiConfig, deps apiDeps, log *slog.Logger) (*apiModule, error) {
	signingKey, err := cfg.Security.modelSigningKey()
	if err != nil {
		return nil, err
	}
	m := &apiModule{pub: server.NewPublisher(deps.events, cfg.EventBuffer, cfg.MaxRecordBytes, log)}
	m.srv = server.New(server.Config{Loop: cfg.Loop, LearningMode: cfg.LearningMode, Limits: cfg.Limits,
		Policy: cfg.Policy, MaxRecordBytes: cfg.MaxRecordBytes, Configs: deps.configs.reg}, m.pub, log, time.Now)
	m.api, err = listenAPI(cfg.GRPCAddr, cfg.HTTPAddr, cfg.Security, log, func(g *grpc.Server) {
		server.Register(g, m.srv)
		if deps.register != nil {
			deps.register(g)
		}
	}, append(tracingOptions(cfg.Tracing), deps.opts...)...)
	if err != nil {
		return nil, err
	}
	m.api.guard.ServeLoops(m.srv.Serves)
	// The models of the evaluations run here are kept for
	// applyFromEvaluation: up to 256 MiB of model files, the newest.
	m.evals = newEvaluations(deps.brokers, deps.configs.w, server.DefaultMaxModelBytes, log)
	m.audits = kafkalog.NewInspector(deps.brokers)
	m.admin = server.NewAdmin(m.srv, server.AdminConfig{Guard: m.api.guard, Configs: deps.configs, Models: deps.models,
		Logs: kafkaLogs{deps.brokers, deps.configs.reg}, Evaluations: m.evals, MaxModelBytes: cfg.MaxModelBytes, ModelSigningKey: signingKey, Now: time.Now,
		History: deps.history, Decisions: kafkaDecisions{m.audits, cfg.AuditScan}})
	server.RegisterAdmin(m.api.grpc, m.admin) // before serving: the guard comes with the API
	registerServer(m.api.metrics, m.srv, m.pub, deps.sourceUp)
	registerServerLoop(forLoop(m.api.metrics, cfg.Loop), m.srv, cfg.Loop)
	m.api.handleREST(m.srv, m.admin, cfg.Tracing)
	m.dash = &dashboard{srv: m.srv, self: serverName(m.api.grpcLis.Addr())}
	m.dash.serve(m.api.mux, m.api.rest)
	return m, nil
}

// publishes is what runs the publisher, in its own stage.
func (m *apiModule) publishes() func(context.Context) error {
	return func(ctx context.Context) error { return m.pub.Run(ctx, 10*time.Second) }
}

// serves is what serves, in the serving stage: the own loop's models from
// src, every loop's configuration, the evaluations, the listeners.
func (m *apiModule) serves(src server.ModelSource) []func(context.Context) error {
	return []func(context.Context) error{
		func(ctx context.Context) error { return m.srv.WatchModels(ctx, src) }, m.srv.WatchConfig,
		m.evals.follow, m.api.serveGRPC, m.api.serveHTTP,
	}
}
