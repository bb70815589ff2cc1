package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
)

// joinerConfig is what `personalizer joiner` runs: one member of the
// joiners' consumer group against a Kafka cluster.
type joinerConfig struct {
	Brokers  string
	Group    string
	HTTPAddr string
	LogLevel string
	Kafka    writerConfig
	Joiner   joiner.Config
	// Consumer group timing: how soon a dead member is noticed and how
	// long a rebalance may take.
	SessionTimeout    time.Duration
	RebalanceTimeout  time.Duration
	HeartbeatInterval time.Duration
	// CapacityInterval is how often lag and capacity are sampled; 0: never.
	CapacityInterval time.Duration
}

func (c *joinerConfig) registerFlags(fs *flag.FlagSet) {
	brokersVar(fs, &c.Brokers)
	fs.StringVar(&c.Group, "group", joinerGroup, "consumer group of the joiners")
	fs.StringVar(&c.HTTPAddr, "http-addr", "", "HTTP listen address for GET /metrics, /capacity and /healthz (empty: none)")
	logLevelVar(fs, &c.LogLevel)
	c.Kafka.registerFlags(fs)
	fs.DurationVar(&c.SessionTimeout, "session-timeout", kafkalog.DefaultSessionTimeout, "how long the group keeps a silent member before rebalancing without it")
	fs.DurationVar(&c.RebalanceTimeout, "rebalance-timeout", kafkalog.DefaultRebalanceTimeout, "how long a rebalance waits for members to rejoin")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", kafkalog.DefaultHeartbeatInterval, "how often a member checks in with the group")
	c.Joiner.RegisterFlags(fs, "")
	capacityIntervalVar(fs, &c.CapacityInterval)
}

func (c *joinerConfig) brokers() []string { return splitBrokers(c.Brokers) }

// splitBrokers parses --kafka-brokers: addresses separated by commas.
func splitBrokers(list string) []string {
	var out []string
	for _, b := range strings.Split(list, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func (c *joinerConfig) validate() error {
	var errs []error
	if len(c.brokers()) == 0 {
		errs = append(errs, errors.New("--kafka-brokers is empty"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("--group is empty"))
	}
	c.Joiner.MaxRecordBytes = c.Kafka.MaxRecordBytes
	return errors.Join(append(errs, c.Kafka.validate(), c.Joiner.Validate())...)
}

func runJoiner(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg joinerConfig
	log, tp, stopTracing, err := startRole(ctx, "joiner", &cfg, &cfg.LogLevel, args, stderr, getenv)
	if err != nil {
		return err
	}
	defer stopTracing()
	cfg.Joiner.TracerProvider = tp
	brokers := cfg.brokers()
	// The outputs need as many partitions as the input for each output
	// partition to hold what one input partition gave (kafkalog's broker
	// creates them so; against other Kafka they may exist already).
	setup, cancel := context.WithTimeout(ctx, 30*time.Second)
	n, err := kafkalog.PartitionCount(setup, brokers, eventlog.EventsTopic)
	if err == nil {
		err = kafkalog.EnsureTopics(setup, brokers,
			kafkalog.TopicSpec{Name: eventlog.JoinedTopic, Partitions: n},
			kafkalog.TopicSpec{Name: eventlog.AuditTopic, Partitions: n},
			kafkalog.TopicSpec{Name: eventlog.DeadLetterTopic, Partitions: n})
	}
	cancel()
	if err != nil {
		return err
	}
	group := kafkalog.NewGroup(kafkalog.GroupConfig{
		Brokers: brokers, GroupID: cfg.Group, Topic: eventlog.EventsTopic,
		SessionTimeout: cfg.SessionTimeout, RebalanceTimeout: cfg.RebalanceTimeout, HeartbeatInterval: cfg.HeartbeatInterval,
	}, log)
	out := cfg.Kafka.writer(brokers, true)
	ticks := cfg.Kafka.writer(brokers, false)
	j := joiner.New(cfg.Joiner, log, group, out, ticks, time.Now)
	httpAddr := ""
	var reg *prometheus.Registry
	var mux *http.ServeMux
	if cfg.HTTPAddr != "" {
		reg, mux = newRegistry(), http.NewServeMux()
		registerJoiner(reg, j)
	}
	runs := []func(context.Context) error{j.Run}
	if c := startCapacity(capacitySources{role: "joiner", count: func() int64 { return j.Counters().Emitted }, joiner: j},
		brokers, cfg.CapacityInterval, mux, reg, log); c != nil {
		runs = append(runs, c.Run)
	}
	if cfg.HTTPAddr != "" {
		m, err := serveMetrics(cfg.HTTPAddr, reg, mux, httpTimeouts{})
		if err != nil {
			return errors.Join(err, out.Close(), ticks.Close())
		}
		defer m.close()
		httpAddr = fmt.Sprintf(", HTTP %s", m.addr)
	}
	fmt.Fprintf(stdout, "personalizer joiner: group %s, brokers %s%s\n", cfg.Group, strings.Join(brokers, ","), httpAddr)
	g, gctx := errgroup.WithContext(ctx)
	for _, run := range runs {
		g.Go(func() error { return run(gctx) })
	}
	err = g.Wait()
	return errors.Join(err, out.Close(), ticks.Close())
}
