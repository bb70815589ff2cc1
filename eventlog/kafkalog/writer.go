package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/open-personalizer/personalizer/eventlog"
)

// WriterConfig configures a [Writer].
type WriterConfig struct {
	// Brokers are the bootstrap addresses.
	Brokers []string
	// Topic, when set, is the topic of every record; records must then
	// leave Topic empty or name the same topic. When empty, each record
	// names its own topic.
	Topic string
	// BatchTimeout is how long a partly filled batch waits for more
	// records. Default 2ms: Write is synchronous, so the last batch of
	// every call waits this long (kafka-go's own default is 1s).
	BatchTimeout time.Duration
	// BatchSize is the most records in one produce batch. Default 1000:
	// with 5 KB records BatchBytes is the limit that binds, and kafka-go
	// allocates room for BatchSize messages (about 200 bytes each) in
	// every batch it starts, so a larger value costs memory and time
	// (10000 made the joiner allocate 2 MB per 1 MB batch).
	BatchSize int
	// BatchBytes is the most bytes in one produce batch. Default 1 MiB,
	// just under the broker's default message.max.bytes (1048588).
	BatchBytes int64
	// Compression compresses produce batches: "", "none", "gzip",
	// "snappy", "lz4" or "zstd". Consumers decompress on their own.
	Compression string
	// ByPartition sends every record, keyed or not, to its Partition
	// modulo the topic's partition count. The joiner writes this way so
	// that each output partition holds what one input partition produced,
	// in order. Without it a keyed record goes where its key hashes.
	ByPartition bool
}

// Default values of [WriterConfig].
const (
	DefaultBatchTimeout = 2 * time.Millisecond
	DefaultBatchSize    = 1000
	DefaultBatchBytes   = 1 << 20
)

// Writer appends records to Kafka. It implements [eventlog.Writer] and is
// safe for concurrent use.
type Writer struct {
	w     *kafka.Writer
	tr    *kafka.Transport
	topic string
}

// compressions are the values [WriterConfig.Compression] takes.
var compressions = map[string]kafka.Compression{
	"": 0, "none": 0, "gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4, "zstd": kafka.Zstd,
}

// Validate reports a configuration NewWriter cannot use.
func (cfg WriterConfig) Validate() error {
	if _, ok := compressions[cfg.Compression]; !ok {
		return fmt.Errorf("compression must be none, gzip, snappy, lz4 or zstd, got %q", cfg.Compression)
	}
	return nil
}

// NewWriter returns a writer; it connects on the first Write. An unknown
// Compression means none (see [WriterConfig.Validate]).
func NewWriter(cfg WriterConfig) *Writer {
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = DefaultBatchTimeout
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	tr := &kafka.Transport{}
	return &Writer{
		tr:    tr,
		topic: cfg.Topic,
		w: &kafka.Writer{
			Addr:         kafka.TCP(cfg.Brokers...),
			Topic:        cfg.Topic,
			Balancer:     &balancer{byPartition: cfg.ByPartition},
			BatchTimeout: cfg.BatchTimeout,
			BatchSize:    cfg.BatchSize,
			BatchBytes:   cfg.BatchBytes,
			// A zero Writer acknowledges nothing (RequireNone); Write
			// promises every record is stored.
			RequiredAcks: kafka.RequireAll,
			Compression:  compressions[cfg.Compression],
			Transport:    tr,
		},
	}
}

// Write appends recs and returns once the broker acknowledged all of them
// (acks=all). A keyed record goes to the partition its key hashes to, a
// keyless one to rec.Partition (see also [WriterConfig.ByPartition]). A zero Time is sent as the current time;
// times are stored with millisecond precision. On error any of recs may or
// may not be stored.
func (w *Writer) Write(ctx context.Context, recs ...eventlog.Record) error {
	if len(recs) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(recs))
	for i := range recs {
		r := &recs[i]
		if len(r.Key) == 0 && r.Partition < 0 {
			return fmt.Errorf("keyless record with partition %d", r.Partition)
		}
		topic := r.Topic
		if w.topic != "" {
			if topic != "" && topic != w.topic {
				return fmt.Errorf("record for topic %s on a writer of %s", topic, w.topic)
			}
			// kafka-go rejects a topic set on both Writer and Message.
			topic = ""
		}
		msgs[i] = kafka.Message{
			Topic:     topic,
			Partition: r.Partition,
			Key:       r.Key,
			Value:     r.Value,
			Headers:   toKafkaHeaders(r.Headers),
			Time:      r.Time,
		}
	}
	if err := w.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("write %d records: %w", len(recs), firstError(err))
	}
	return nil
}

// Close flushes pending batches and closes the connections.
func (w *Writer) Close() error {
	err := w.w.Close()
	w.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("close writer: %w", err)
	}
	return nil
}

// firstError reduces kafka.WriteErrors, one entry per message whose text
// repeats every failure, to a count and the first failure.
func firstError(err error) error {
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) {
		for _, e := range werrs {
			if e != nil {
				return fmt.Errorf("%d of %d failed, first: %w", werrs.Count(), len(werrs), e)
			}
		}
	}
	return err
}

// balancer routes keyed messages like kafka.Hash and keyless messages to the
// partition the record asked for. kafka-go hands Balance the whole Message,
// Partition field included, and writes to the partition Balance returns;
// kafka.Hash alone would spread keyless messages round-robin.
type balancer struct {
	// hash keeps no state for keyed messages (it pools its hashers), so
	// one value serves every topic and goroutine.
	hash        kafka.Hash
	byPartition bool
}

func (b *balancer) Balance(msg kafka.Message, partitions ...int) int {
	if b.byPartition {
		// kafka-go passes every partition of the topic, in order.
		return partitions[msg.Partition%len(partitions)]
	}
	if len(msg.Key) > 0 {
		return b.hash.Balance(msg, partitions...)
	}
	// A partition the topic does not have is sent anyway and fails at
	// the broker with UnknownTopicOrPartition after kafka-go's retries.
	return msg.Partition
}

func toKafkaHeaders(hs []eventlog.Header) []kafka.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]kafka.Header, len(hs))
	for i, h := range hs {
		out[i] = kafka.Header(h)
	}
	return out
}

func toRecord(m kafka.Message) eventlog.Record {
	var hs []eventlog.Header
	if len(m.Headers) > 0 {
		hs = make([]eventlog.Header, len(m.Headers))
		for i, h := range m.Headers {
			hs[i] = eventlog.Header(h)
		}
	}
	return eventlog.Record{
		Topic:     m.Topic,
		Partition: m.Partition,
		Offset:    m.Offset,
		Key:       m.Key,
		Value:     m.Value,
		Headers:   hs,
		Time:      m.Time,
	}
}
