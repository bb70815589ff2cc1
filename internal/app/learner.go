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
	// CapacityInterval is how often lag and capacity are sampled; 0: never.
	CapacityInterval time.Duration
}

func (c *learnerConfig) registerFlags(fs *flag.FlagSet) {
	brokersVar(fs, &c.Brokers)
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:50052", "gRPC listen address (the ModelService servers pull from)")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8081", "HTTP listen address (GET /healthz, /metrics, /capacity)")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "where the learner keeps its checkpoint (in <data-dir>/learner/<loop>, as dev)")
	loopVar(fs, &c.Loop)
	logLevelVar(fs, &c.LogLevel)
	fs.IntVar(&c.MaxModelBytes, "max-model-bytes", defaultMaxModelBytes, "largest model version sent to servers")
	c.Learner.RegisterFlags(fs, "")
	c.Security.registerFlags(fs)
	capacityIntervalVar(fs, &c.CapacityInterval)
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
	*learnerModule
	api     *api
	configs *configTopic
	writer  *kafkalog.Writer // auto-optimization's evaluations and policy changes

	// Each stage stops on its own, in shutdown order.
	learn, serve, follow stage
}

// startLearner resumes from the checkpoint, if any, and serves its model
// at once.
func startLearner(ctx context.Context, cfg learnerConfig, log *slog.Logger) (*learnerRole, error) {
	l := new(learnerRole)
	l.init(log)
	brokers := splitBrokers(cfg.Brokers)
	l.writer = writerConfig{Compression: "none", MaxRecordBytes: eventlog.DefaultMaxRecordBytes}.writer(brokers, false)
	l.configs = followConfigs(ctx, &l.supervisor, &l.follow, brokers, l.writer,
		flagConfig(cfg.Loop, cfg.Learner.Policy, cfg.Learner.ExportEvery, nil), log)
	var err error
	if l.learnerModule, err = newLearnerModule(cfg.Learner, cfg.DataDir, brokers, l.configs, log); err != nil {
		return nil, errors.Join(err, l.follow.stop(), l.writer.Close())
	}
	l.api, err = listenAPI(cfg.GRPCAddr, cfg.HTTPAddr, cfg.Security, log, func(g *grpc.Server) {
		eventsv1.RegisterModelServiceServer(g, l.svc)
	}, append(tracingOptions(cfg.Learner.TracerProvider), grpc.MaxSendMsgSize(cfg.MaxModelBytes), grpc.MaxRecvMsgSize(cfg.MaxModelBytes+64<<10))...)
	if err != nil {
		return nil, errors.Join(err, l.follow.stop(), l.writer.Close())
	}
	l.api.status = func() any { return learnerStatusOf(l.learner, l.store) }
	// Auto-optimization runs here, beside the learners it applies to: its
	// runs are evaluations, in the store every server follows. Their
	// models are applied here or not at all: none are kept.
	evals := newEvaluations(brokers, l.writer, 0, log)
	auto := newAutoOptimizer(l.configs, evals, localModels{l.svc}, nil, log)
	learn := append(l.learnerModule.serve(l.api.metrics, l.api), evals.follow, auto.Run)
	learners := learnersOf(l.svc)
	if c := startCapacity(capacitySources{role: "learner", learners: learners},
		brokers, cfg.CapacityInterval, l.api.mux, l.api.metrics, log); c != nil {
		learn = append(learn, c.Run)
	}
	l.start(&l.learn, ctx, learn...)
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
	errs = append(errs, l.api.drain(), l.serve.stop(), l.follow.stop(), l.writer.Close())
	return errors.Join(append(errs, l.failure())...)
}
