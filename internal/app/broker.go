package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

// brokerConfig is what `personalizer broker` runs: the embedded broker
// alone, for running the roles as separate processes without Kafka.
type brokerConfig struct {
	DataDir  string
	LogLevel string
	Broker   kafkalog.BrokerConfig
}

func (c *brokerConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", "./data", "where the broker keeps its data (in <data-dir>/broker, as dev)")
	logLevelVar(fs, &c.LogLevel)
	c.Broker.RegisterFlags(fs, "")
}

func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg brokerConfig
	cfg.registerFlags(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	cfg.Broker.DataDir = filepath.Join(cfg.DataDir, "broker")
	if err := cfg.Broker.Validate(); err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.LogLevel)
	if err != nil {
		return err
	}
	b, err := kafkalog.StartBroker(cfg.Broker, log)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(stdout, "personalizer broker: Kafka %s, data %s\n", b.Addrs()[0], cfg.DataDir)
	<-ctx.Done()
	return nil
}
