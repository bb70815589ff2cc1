package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// Backoff between failed requests of [FollowCompacted].
const (
	followBackoffMin = 100 * time.Millisecond
	followBackoffMax = 5 * time.Second
	// followRequestTimeout bounds one request beyond the fetch's own
	// wait, so that a connection the broker silently dropped is noticed.
	followRequestTimeout = 10 * time.Second
)

// FollowCompacted reads topic, which must have exactly one partition (see
// [ConfigTopicSpec]), and calls apply for every record in offset order:
// first every record from the log start to the end offset the partition has
// when FollowCompacted starts, then ready once, then every later record as
// it arrives, until ctx ends, when it returns nil. value is nil for a
// tombstone; key and value are the caller's to keep. apply and ready run on
// the calling goroutine, one at a time; a slow apply delays the next record
// but loses none. ready may be nil.
//
// Broker failures and an absent topic, before ready as after it, are logged
// and retried with backoff rather than returned: a role must keep serving
// the configuration it has through a broker restart, and a role that starts
// while the broker is down becomes ready once it is back. A caller that
// would rather fail at start waits for ready with its own deadline and
// cancels ctx when it passes. FollowCompacted returns an error only for a
// topic with more than one partition, whose records have no single order.
//
// Records that compaction or [DeleteRecords] removed before they were read
// are skipped: compaction keeps the latest record of every key, so the
// result of applying what remains is the same. If the log start moves past
// the next record to read (records deleted under a slow reader) reading
// continues from the new start, with a warning.
//
// Writers use a [Writer] on the topic: its Write returns only once the
// broker acknowledged the records with acks=all, and a record with a nil
// Value is a tombstone.
func FollowCompacted(ctx context.Context, brokers []string, topic string, log *slog.Logger, apply func(key, value []byte), ready func()) error {
	if len(brokers) == 0 {
		return errors.New("follow compacted topic: no brokers")
	}
	if ready == nil {
		ready = func() {}
	}
	f := &follower{brokers: brokers, topic: topic, log: log}
	f.reset()
	defer func() { f.closeConns() }()

	if err := f.retry(ctx, "partition count", f.checkPartitions); err != nil {
		return ignoreCanceled(ctx, err)
	}
	var start, end int64
	err := f.retry(ctx, "offsets", func(ctx context.Context) (err error) {
		start, end, err = f.bounds(ctx)
		return err
	})
	if err != nil {
		return ignoreCanceled(ctx, err)
	}
	offset, isReady := start, false
	if offset >= end {
		ready()
		isReady = true
	}
	backoff := followBackoffMin
	for {
		next, hwm, err := f.fetch(ctx, offset, func(off int64, key, value []byte) {
			apply(key, value)
			if !isReady && off+1 >= end {
				ready()
				isReady = true
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		// fetch returns offset itself with most errors, and the offset
		// after the records it passed to apply with the others, so
		// that a retry applies nothing twice.
		progressed := next != offset
		offset = next
		switch {
		case errors.Is(err, kafka.OffsetOutOfRange):
			bctx, cancel := context.WithTimeout(ctx, followRequestTimeout)
			start, last, berr := f.bounds(bctx)
			cancel()
			switch {
			case berr != nil:
				err = berr
			case offset < start:
				f.log.Warn("records deleted before they were read, continuing at the log start",
					"topic", topic, "offset", offset, "log_start", start)
				offset, err = start, nil
			case offset > last:
				// The log is shorter than what was read: the topic was
				// recreated or the broker lost records. Read it again.
				f.log.Warn("log ends before the next offset to read, reading it again from the start",
					"topic", topic, "offset", offset, "log_start", start, "log_end", last)
				end = min(end, last)
				offset, err = start, nil
			}
			// Otherwise the log changed back since the fetch: retry.
		case err == nil && !progressed && offset < hwm:
			// Nothing at or after offset below the high watermark:
			// compaction removed the tail of what was there.
			offset = hwm
		}
		if err != nil {
			f.log.Warn("following topic failed, retrying", "topic", topic, "offset", offset, "retry_in", backoff, "err", err)
			f.reset()
			if !sleepCtx(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, followBackoffMax)
			continue
		}
		backoff = followBackoffMin
		if !isReady && offset >= end {
			ready()
			isReady = true
		}
	}
}

// follower holds the connections of one [FollowCompacted] call; it is
// used by that call's goroutine only.
type follower struct {
	brokers    []string
	topic      string
	log        *slog.Logger
	c          *kafka.Client
	closeConns func()
}

// reset replaces the client, so that a failed connection or stale metadata
// is not reused after a broker restart.
func (f *follower) reset() {
	if f.closeConns != nil {
		f.closeConns()
	}
	f.c, f.closeConns = adminClient(f.brokers)
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// retry runs op until it succeeds, ctx ends (returning ctx's error), or op
// returns a [permanentError] (returning what it wraps).
func (f *follower) retry(ctx context.Context, what string, op func(context.Context) error) error {
	backoff := followBackoffMin
	for {
		rctx, cancel := context.WithTimeout(ctx, followRequestTimeout)
		err := op(rctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p, ok := errors.AsType[permanentError](err); ok {
			return p.err
		}
		f.log.Warn("reading "+what+" of topic failed, retrying", "topic", f.topic, "retry_in", backoff, "err", err)
		f.reset()
		if !sleepCtx(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, followBackoffMax)
	}
}

func (f *follower) checkPartitions(ctx context.Context) error {
	n, err := PartitionCount(ctx, f.brokers, f.topic)
	if err != nil {
		return err
	}
	if n != 1 {
		return permanentError{fmt.Errorf("follow compacted topic %s: it has %d partitions, need 1 for a single order", f.topic, n)}
	}
	return nil
}

// bounds returns the log start and end offsets of the topic's partition.
func (f *follower) bounds(ctx context.Context) (start, end int64, err error) {
	starts, err := listPartitionOffsets(ctx, f.c, f.topic, 1, kafka.FirstOffset)
	if err != nil {
		return 0, 0, err
	}
	ends, err := listPartitionOffsets(ctx, f.c, f.topic, 1, kafka.LastOffset)
	if err != nil {
		return 0, 0, err
	}
	return starts[0], ends[0], nil
}

// fetch fetches from offset, waiting up to fetchMaxWait for records, and
// calls fn for each record at or after offset. It returns the offset after
// the last record passed to fn (offset if none), and the high watermark.
func (f *follower) fetch(ctx context.Context, offset int64, fn func(off int64, key, value []byte)) (next, hwm int64, err error) {
	fctx, cancel := context.WithTimeout(ctx, fetchMaxWait+followRequestTimeout)
	defer cancel()
	resp, err := f.c.Fetch(fctx, &kafka.FetchRequest{
		Topic: f.topic, Partition: 0, Offset: offset,
		MinBytes: fetchMinBytes, MaxBytes: fetchMaxBytes, MaxWait: fetchMaxWait,
	})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return offset, 0, fmt.Errorf("fetch %s at %d: %w", f.topic, offset, err)
	}
	next = offset
	for {
		r, err := resp.Records.ReadRecord()
		if err != nil {
			// io.EOF, or the last batch cut short by MaxBytes: the
			// next fetch starts after the last record read. An error
			// before any record means the response is unusable.
			if next == offset && !errors.Is(err, io.EOF) {
				return offset, 0, fmt.Errorf("fetch %s at %d: read records: %w", f.topic, offset, err)
			}
			return next, resp.HighWatermark, nil
		}
		if r.Offset < next {
			continue // earlier records of the first batch
		}
		key, err := kafka.ReadAll(r.Key)
		if err == nil {
			var value []byte
			value, err = kafka.ReadAll(r.Value)
			if err == nil {
				fn(r.Offset, key, value)
				next = r.Offset + 1
				continue
			}
		}
		return next, resp.HighWatermark, fmt.Errorf("fetch %s at %d: read record %d: %w", f.topic, offset, r.Offset, err)
	}
}

// ignoreCanceled returns nil for an error caused by ctx ending.
func ignoreCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// sleepCtx waits for d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
