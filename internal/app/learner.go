package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/learner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// learnerConfig is what `personalizer learner` runs: the learner of one
// loop, reading personalizer.joined and serving its model versions.
type learnerConfig struct {
	Brokers       string
	GRPCAddr      string
	HTTPAddr      string
	DataDir       string
	Loop          string
	LogLevel      string
	MaxModelBytes int
	Learner       learner.Config
	Security      securityConfig
}

func (c *learnerConfig) registerFlags(fs *flag.FlagSet) {
	brokersVar(fs, &c.Brokers)
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:50052", "gRPC listen address (the ModelService servers pull from)")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8081", "HTTP listen address (health)")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "where the learner keeps its checkpoint (in <data-dir>/learner/<loop>, as dev)")
	loopVar(fs, &c.Loop)
	logLevelVar(fs, &c.LogLevel)
	fs.IntVar(&c.MaxModelBytes, "max-model-bytes", defaultMaxModelBytes, "largest model version sent to servers")
	c.Learner.RegisterFlags(fs, "")
	c.Security.registerFlags(fs)
}

func (c *learnerConfig) validate() error {
	c.Learner.Dir = filepath.Join(c.DataDir, "learner", c.Loop)
	c.Learner.Loop = c.Loop
	var errs []error
	if len(splitBrokers(c.Brokers)) == 0 {
		errs = append(errs, errors.New("--kafka-brokers is empty"))
	}
	if c.Loop == "" {
		errs = append(errs, errors.New("--loop is empty"))
	}
	if c.MaxModelBytes <= 0 {
		errs = append(errs, fmt.Errorf("--max-model-bytes must be positive, got %d", c.MaxModelBytes))
	}
	c.Security.Loop = c.Loop
	return errors.Join(append(errs, c.Learner.Validate(), c.Security.validate())...)
}

func runLearner(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg learnerConfig
	log, tp, stopTracing, err := startRole(ctx, "learner", &cfg, &cfg.LogLevel, args, stderr, getenv)
	if err != nil {
		return err
	}
	defer stopTracing()
	cfg.Learner.TracerProvider = tp
	l, err := startLearner(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "personalizer learner: gRPC %s, HTTP %s, brokers %s, data %s\n",
		l.api.grpcAddr(), l.api.httpLis.Addr(), strings.Join(splitBrokers(cfg.Brokers), ","), cfg.DataDir)
	l.wait(ctx)
	return l.close()
}

// learnerRole is a learner in its own process.
type learnerRole struct {
	supervisor
	learner *learner.Learner
	svc     *learner.Service
	api     *api
	configs *configTopic

	// Each stage stops on its own, in shutdown order.
	learn, serve, follow stage
}

// startLearner resumes from the checkpoint, if any, and serves its model
// at once.
func startLearner(ctx context.Context, cfg learnerConfig, log *slog.Logger) (*learnerRole, error) {
	l := new(learnerRole)
	l.init(log)
	store := learner.NewStore()
	brokers := splitBrokers(cfg.Brokers)
	l.configs = followConfigs(ctx, &l.supervisor, &l.follow, brokers, nil,
		flagConfig(cfg.Loop, cfg.Learner.Policy, cfg.Learner.ExportEvery, nil), log)
	cfg.Learner.Configs = l.configs.reg
	cfg.Learner.OffsetsAt = joinedOffsetsAt(brokers)
	var err error
	if l.learner, err = learner.New(cfg.Learner, log, store, time.Now); err != nil {
		l.follow.stop()
		return nil, err
	}
	l.svc = learner.NewService(cfg.Loop, store, l.learner)
	l.api, err = listenAPI(cfg.GRPCAddr, cfg.HTTPAddr, cfg.Security, log, func(g *grpc.Server) {
		eventsv1.RegisterModelServiceServer(g, l.svc)
	}, append(tracingOptions(cfg.Learner.TracerProvider), grpc.MaxSendMsgSize(cfg.MaxModelBytes), grpc.MaxRecvMsgSize(cfg.MaxModelBytes+64<<10))...)
	if err != nil {
		l.follow.stop()
		return nil, err
	}
	own := forLoop(l.api.metrics, cfg.Loop)
	registerLearner(own, l.learner, store)
	registerConfig(own, l.configs, cfg.Loop)
	l.api.status = func() any { return learnerStatusOf(l.learner, store) }
	open := func(ctx context.Context, start map[int]int64) (eventlog.Reader, error) {
		return kafkalog.NewTopicReader(ctx, brokers, eventlog.JoinedTopic, start)
	}
	host := &learnerHost{tmpl: cfg.Learner, dataDir: cfg.DataDir, open: open, svc: l.svc,
		metrics: l.api.metrics, configs: l.configs, log: log}
	l.start(&l.learn, ctx, func(ctx context.Context) error { return l.learner.Run(ctx, open) },
		checkpointHealth(l.learner, l.api.health),
		func(ctx context.Context) error { return perLoop(ctx, l.configs.reg, cfg.Loop, host.start) })
	l.start(&l.serve, ctx, l.api.serveGRPC, l.api.serveHTTP)
	l.api.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	return l, nil
}

// close shuts down in a fixed order: stop learning (publishing and
// checkpointing a last version while servers still watch), end the
// watches, then stop serving.
func (l *learnerRole) close() error {
	errs := []error{l.learn.stop()}
	l.svc.Shutdown()
	errs = append(errs, l.api.drain(), l.serve.stop(), l.follow.stop())
	return errors.Join(append(errs, l.failure())...)
}
