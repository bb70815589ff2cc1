package app

import (
	"flag"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

// writerConfig is how a role writes records to Kafka; every role that
// writes takes the same flags.
type writerConfig struct {
	Compression    string
	MaxRecordBytes int
}

func (c *writerConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Compression, "kafka-compression", "none", "compression of the records written to Kafka: none, gzip, snappy, lz4 or zstd")
	fs.IntVar(&c.MaxRecordBytes, "max-record-bytes", eventlog.DefaultMaxRecordBytes,
		"largest record written to Kafka (key, value and headers), below the topics' max.message.bytes: Rank refuses requests whose events would not fit")
}

func (c writerConfig) validate() error { return c.config(nil, false).Validate() }

func (c writerConfig) config(brokers []string, byPartition bool) kafkalog.WriterConfig {
	return kafkalog.WriterConfig{Brokers: brokers, ByPartition: byPartition, Compression: c.Compression, MaxRecordBytes: c.MaxRecordBytes}
}

// writer returns a writer of records that name their topics; with
// byPartition each goes to its Partition, else a keyed one to where its
// key hashes.
func (c writerConfig) writer(brokers []string, byPartition bool) *kafkalog.Writer {
	return kafkalog.NewWriter(c.config(brokers, byPartition))
}

// The flags several roles take, each defined here once.

func logLevelVar(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "log-level", "info", "debug, info, warn or error")
}

func brokersVar(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "kafka-brokers", "127.0.0.1:9092", "Kafka bootstrap addresses, comma-separated")
}

// loopVar is the process's own loop: the one a call that names none is for.
func loopVar(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "loop", "default", "the process's own learning loop: the one a call that names no loop is for; other loops come from personalizer.config")
}
