package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// BatchBytes is the most bytes in one produce batch, as kafka-go
	// counts them. Default 1 MiB less 4 KiB: a broker measures a batch
	// with its 61-byte header against message.max.bytes (by default
	// 1048588), and a batch kafka-go filled to 1 MiB exactly could be
	// refused by a few bytes, with every record in it.
	BatchBytes int64
	// MaxRecordBytes is the largest record ([eventlog.Record.Size]) Write
	// sends; a larger one is rejected without being sent. Default
	// [eventlog.DefaultMaxRecordBytes]; it must leave room for framing
	// within BatchBytes.
	MaxRecordBytes int
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
	DefaultBatchBytes   = 1<<20 - 4<<10
)

// Writer appends records to Kafka. It implements [eventlog.Writer] and is
// safe for concurrent use.
type Writer struct {
	w        *kafka.Writer
	tr       *kafka.Transport
	topic    string
	maxBytes int
}

// recordSlack is what kafka-go counts for a message beyond
// [eventlog.Record.Size] (length prefixes, attributes, timestamp) with room
// to spare, so that a record within MaxRecordBytes is never refused by
// kafka-go's own check against BatchBytes.
const recordSlack = 4096

// compressions are the values [WriterConfig.Compression] takes.
var compressions = map[string]kafka.Compression{
	"": 0, "none": 0, "gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4, "zstd": kafka.Zstd,
}

// Validate reports a configuration NewWriter cannot use.
func (cfg WriterConfig) Validate() error {
	if _, ok := compressions[cfg.Compression]; !ok {
		return fmt.Errorf("compression must be none, gzip, snappy, lz4 or zstd, got %q", cfg.Compression)
	}
	cfg = cfg.withDefaults()
	if cfg.MaxRecordBytes < 1024 || int64(cfg.MaxRecordBytes)+recordSlack > cfg.BatchBytes {
		return fmt.Errorf("max record bytes must be at least 1024 and at most %d (the batch size less %d), got %d",
			cfg.BatchBytes-recordSlack, recordSlack, cfg.MaxRecordBytes)
	}
	return nil
}

func (cfg WriterConfig) withDefaults() WriterConfig {
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = DefaultBatchTimeout
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = eventlog.DefaultMaxRecordBytes
	}
	return cfg
}

// NewWriter returns a writer; it connects on the first Write. An unknown
// Compression means none (see [WriterConfig.Validate]).
func NewWriter(cfg WriterConfig) *Writer {
	cfg = cfg.withDefaults()
	tr := &kafka.Transport{}
	return &Writer{
		tr:       tr,
		topic:    cfg.Topic,
		maxBytes: cfg.MaxRecordBytes,
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
// keyless one to rec.Partition (see also [WriterConfig.ByPartition]). A
// zero Time is sent as the current time; times are stored with millisecond
// precision. Records over MaxRecordBytes, and records the broker refuses for
// good (too large for its limit, invalid), are reported in a
// [*eventlog.RejectedError] once every other record is stored. On any other
// error any of recs may or may not be stored.
func (w *Writer) Write(ctx context.Context, recs ...eventlog.Record) error {
	if len(recs) == 0 {
		return nil
	}
	var rejected []eventlog.Rejected
	msgs := make([]kafka.Message, 0, len(recs))
	index := make([]int, 0, len(recs)) // msgs[i] is recs[index[i]]
	for i := range recs {
		r := &recs[i]
		if n := r.Size(); n > w.maxBytes {
			rejected = append(rejected, eventlog.Rejected{Index: i, Err: fmt.Errorf("%w: %d bytes, the limit is %d", eventlog.ErrTooLarge, n, w.maxBytes)})
			continue
		}
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
		msgs = append(msgs, kafka.Message{
			Topic:     topic,
			Partition: r.Partition,
			Key:       r.Key,
			Value:     r.Value,
			Headers:   toKafkaHeaders(r.Headers),
			Time:      r.Time,
		})
		index = append(index, i)
	}
	refused, err := w.isolate(ctx, msgs)
	if err != nil {
		return fmt.Errorf("write %d records: %w", len(recs), firstError(err))
	}
	for _, r := range refused {
		rejected = append(rejected, eventlog.Rejected{Index: index[r.Index], Err: r.Err})
	}
	if rejected == nil {
		return nil
	}
	slices.SortFunc(rejected, func(a, b eventlog.Rejected) int { return a.Index - b.Index })
	return &eventlog.RejectedError{Rejected: rejected}
}

// isolate writes msgs and finds those the broker refuses for good. A
// broker refuses a whole partition's batch for one bad record in it, so
// the records of a refused batch are written again in halves until each
// refused one stands alone: a few more round trips for the rare bad
// record, and the records that share its batch are stored, after the
// records of the partition's other batches. (Only a broker whose limits
// are lower than MaxRecordBytes, or that finds a record invalid, refuses
// a batch, and the join takes records out of order.) It returns the
// refused records (indices into msgs), or an error if anything failed for
// another reason.
func (w *Writer) isolate(ctx context.Context, msgs []kafka.Message) ([]eventlog.Rejected, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	err := w.w.WriteMessages(ctx, msgs...)
	if err == nil {
		return nil, nil
	}
	var failed []int
	var werrs kafka.WriteErrors
	switch {
	case errors.As(err, &werrs) && len(werrs) == len(msgs):
		for i, e := range werrs {
			if e == nil {
				continue
			}
			if !refusedForGood(e) {
				return nil, err
			}
			failed = append(failed, i)
		}
		if len(msgs) == 1 {
			return []eventlog.Rejected{{Index: 0, Err: refusal(werrs[0])}}, nil
		}
	case refusedForGood(err): // kafka-go's own size check fails the whole call
		if len(msgs) == 1 {
			return []eventlog.Rejected{{Index: 0, Err: refusal(err)}}, nil
		}
		for i := range msgs {
			failed = append(failed, i)
		}
	default:
		return nil, err
	}
	var refused []eventlog.Rejected
	for _, half := range [][]int{failed[:(len(failed)+1)/2], failed[(len(failed)+1)/2:]} {
		sub := make([]kafka.Message, len(half))
		for i, k := range half {
			sub[i] = msgs[k]
		}
		r, err := w.isolate(ctx, sub)
		if err != nil {
			return nil, err
		}
		for _, x := range r {
			refused = append(refused, eventlog.Rejected{Index: half[x.Index], Err: x.Err})
		}
	}
	return refused, nil
}

// refusal is why a broker refused a record for good; a refusal for its size
// is also [eventlog.ErrTooLarge].
func refusal(err error) error {
	if errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) {
		return fmt.Errorf("%w: %w", eventlog.ErrTooLarge, err)
	}
	return err
}

// refusedForGood reports whether a broker error refuses a batch for what is
// in it, so that sending it again cannot succeed.
func refusedForGood(err error) bool {
	return errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) ||
		errors.Is(err, kafka.InvalidRecord) || errors.Is(err, kafka.InvalidTimestamp)
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
