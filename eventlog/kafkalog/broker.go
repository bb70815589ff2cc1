package kafkalog

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/open-personalizer/personalizer/eventlog"
)

// BrokerConfig configures the embedded broker.
type BrokerConfig struct {
	// Addr is the host:port the broker listens on and advertises to
	// clients. Default 127.0.0.1:9092; tests use 127.0.0.1:0.
	Addr string
	// DataDir is where the broker keeps topics, records and group offsets.
	// It is required: without it kfake keeps everything in memory.
	DataDir string
	// EventsPartitions is the partition count of [eventlog.EventsTopic]
	// when it is created. Default 4.
	EventsPartitions int
	// JoinedPartitions is the partition count of [eventlog.JoinedTopic],
	// [eventlog.AuditTopic] and [eventlog.DeadLetterTopic] when they are
	// created. Default: EventsPartitions, so that each joined partition
	// holds exactly what the joiner made of one events partition.
	JoinedPartitions int
	// MinSessionTimeout is the least session timeout the broker grants a
	// group member (Kafka's group.min.session.timeout.ms). Default 6s;
	// tests lower it to notice killed members sooner.
	MinSessionTimeout time.Duration
	// MaxMessageBytes, when positive, is the broker's message.max.bytes
	// (default 1048588): the largest record batch it takes. Tests lower it
	// to make the broker refuse records the roles think fit.
	MaxMessageBytes int
	// WrapConn, when set, wraps every connection the broker accepts. Tests
	// use it to inject network faults.
	WrapConn func(net.Conn) net.Conn
}

// Default values of [BrokerConfig].
const (
	DefaultBrokerAddr       = "127.0.0.1:9092"
	DefaultEventsPartitions = 4
)

// RegisterFlags registers the broker flags on fs, each name prefixed with
// prefix. DataDir has no flag here: the command owns --data-dir. Environment
// fallbacks (PERSONALIZER_BROKER_ADDR, ...) are the command's job, because
// libraries never read the environment.
func (c *BrokerConfig) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.Addr, prefix+"broker-addr", DefaultBrokerAddr, "embedded broker listen and advertised address (host:port)")
	fs.IntVar(&c.EventsPartitions, prefix+"events-partitions", DefaultEventsPartitions, "partitions of "+eventlog.EventsTopic+" when the broker creates it")
	fs.IntVar(&c.JoinedPartitions, prefix+"joined-partitions", 0, "partitions of "+eventlog.JoinedTopic+", "+eventlog.AuditTopic+" and "+eventlog.DeadLetterTopic+" when the broker creates them (0: as many as "+eventlog.EventsTopic+")")
	fs.DurationVar(&c.MinSessionTimeout, prefix+"min-session-timeout", 6*time.Second, "least session timeout the broker grants a consumer group member")
}

// Validate reports whether c can start a broker. Zero Addr and partition
// counts are valid and mean the defaults.
func (c *BrokerConfig) Validate() error {
	if c.DataDir == "" {
		return errors.New("broker data dir is required")
	}
	if c.EventsPartitions < 0 || c.JoinedPartitions < 0 {
		return fmt.Errorf("partition counts must not be negative, got events %d, joined %d", c.EventsPartitions, c.JoinedPartitions)
	}
	if c.MinSessionTimeout < 0 {
		return fmt.Errorf("min session timeout must not be negative, got %v", c.MinSessionTimeout)
	}
	if c.Addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("broker addr: %w", err)
	}
	// kfake advertises the listener's own address in metadata, and clients
	// then dial what is advertised: 0.0.0.0 or :: would send them nowhere.
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("broker addr %q: need a concrete host, it is advertised to clients", c.Addr)
	}
	return nil
}

func (c BrokerConfig) withDefaults() BrokerConfig {
	if c.Addr == "" {
		c.Addr = DefaultBrokerAddr
	}
	if c.EventsPartitions == 0 {
		c.EventsPartitions = DefaultEventsPartitions
	}
	if c.JoinedPartitions == 0 {
		c.JoinedPartitions = c.EventsPartitions
	}
	if c.MinSessionTimeout == 0 {
		c.MinSessionTimeout = 6 * time.Second
	}
	return c
}

// Broker is the embedded single-node Kafka-protocol broker.
type Broker struct {
	c *kfake.Cluster
}

// StartBroker starts kfake on cfg.Addr with cfg.DataDir and creates the
// events, joined, audit, dead-letter and configuration topics unless they
// exist. Records are kept until a topic's retention ([SetRetention]) or
// [DeleteRecords] removes them. A restart with the same data dir keeps
// topics, records and committed group offsets; the partition counts of
// existing topics are left alone.
func StartBroker(cfg BrokerConfig, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		// kfake always asks for 127.0.0.1:<port>; listening on our own
		// address instead lets a host name or another loopback address
		// work, and kfake advertises whatever the listener reports.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			l, err := net.Listen(network, cfg.Addr)
			if err != nil || cfg.WrapConn == nil {
				return l, err
			}
			return wrappedListener{l, cfg.WrapConn}, nil
		}),
		kfake.DataDir(cfg.DataDir),
		kfake.GroupMinSessionTimeout(cfg.MinSessionTimeout),
		kfake.WithLogger(kfakeLogger{log}),
	}
	// kfake enforces time retention on every topic, with Kafka's 7-day
	// default where a topic sets none, but only once some topic is
	// compacted or sets a retention (its cleaner timer starts then), and
	// [eventlog.ConfigTopic] is compacted. A default of forever keeps
	// what the broker did before: records stay until [SetRetention] or
	// [DeleteRecords] says otherwise.
	bcfg := map[string]string{"log.retention.ms": "-1"}
	if cfg.MaxMessageBytes > 0 {
		bcfg["message.max.bytes"] = strconv.Itoa(cfg.MaxMessageBytes)
	}
	opts = append(opts, kfake.BrokerConfigs(bcfg))
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start broker on %s: %w", cfg.Addr, err)
	}
	b := &Broker{c: c}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Each topic says retention.ms -1 itself as well: kfake's
	// DescribeConfigs reports Kafka's 7-day default for a topic without
	// its own setting, whatever the broker's default is, and [Retention]
	// must tell what the broker does.
	forever := map[string]string{"retention.ms": "-1"}
	err = EnsureTopics(ctx, b.Addrs(),
		TopicSpec{Name: eventlog.EventsTopic, Partitions: cfg.EventsPartitions, Config: forever},
		TopicSpec{Name: eventlog.JoinedTopic, Partitions: cfg.JoinedPartitions, Config: forever},
		TopicSpec{Name: eventlog.AuditTopic, Partitions: cfg.JoinedPartitions, Config: forever},
		TopicSpec{Name: eventlog.DeadLetterTopic, Partitions: cfg.JoinedPartitions, Config: forever},
		ConfigTopicSpec(),
	)
	if err != nil {
		c.Close()
		return nil, err
	}
	log.Info("embedded broker started", "addr", b.Addrs(), "data_dir", cfg.DataDir)
	return b, nil
}

// Addrs returns the addresses the broker listens on and advertises.
func (b *Broker) Addrs() []string { return b.c.ListenAddrs() }

// Cluster returns the kfake cluster, for fault injection in tests.
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker and flushes its state to the data dir. It is safe
// to call more than once.
func (b *Broker) Close() { b.c.Close() }

// wrappedListener wraps the connections a listener accepts.
type wrappedListener struct {
	net.Listener
	wrap func(net.Conn) net.Conn
}

func (l wrappedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.wrap(c), nil
}

// kfakeLogger sends kfake's logs to slog. kfake logs every request at info,
// so its info becomes our debug.
type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	lvl := slog.LevelDebug
	switch level {
	case kfake.LogLevelError:
		lvl = slog.LevelError
	case kfake.LogLevelWarn:
		lvl = slog.LevelWarn
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, lvl) {
		return
	}
	l.log.Log(ctx, lvl, fmt.Sprintf(format, args...), "component", "kfake")
}
