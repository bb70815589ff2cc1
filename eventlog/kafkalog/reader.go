package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/open-personalizer/personalizer/eventlog"
)

// Fetch settings shared by group claims and [TopicReader]. MinBytes 1 answers
// a fetch as soon as anything is there. MaxBytes (per partition) holds about
// two full produce batches; measured against the embedded broker with 5 KB
// records and 4 partitions, 256 KiB to 4 MiB all read ~350-400 MB/s, while
// 16 MiB fell to ~200 MB/s and 64 MiB to ~90 MB/s (bigger responses cost more
// to build and buffer than they save in round trips). MaxWait only bounds an
// idle poll, since the broker answers a waiting fetch as soon as data
// arrives. QueueCapacity is kafka-go's read-ahead in messages; 100 (its
// default) measured slower than 1024.
const (
	fetchMinBytes      = 1
	fetchMaxBytes      = 2 << 20
	fetchMaxWait       = 250 * time.Millisecond
	fetchQueueCapacity = 1024
	// rereadQueueCapacity is the read-ahead of a claim's Reread: the
	// joiner keeps a few such readers per partition, and each holds its
	// read-ahead (about 1.3 MB of 5 KB records) besides a fetch.
	rereadQueueCapacity = 256
)

// errClosed is returned by Fetch after Close.
var errClosed = errors.New("reader closed")

// newPartitionReader returns a kafka-go reader of one partition starting at
// offset (an offset or kafka.FirstOffset), reading ahead up to queue
// records. Without a GroupID the reader never commits anything.
func newPartitionReader(brokers []string, topic string, partition int, offset int64, queue int) (*kafka.Reader, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:       brokers,
		Topic:         topic,
		Partition:     partition,
		MinBytes:      fetchMinBytes,
		MaxBytes:      fetchMaxBytes,
		MaxWait:       fetchMaxWait,
		QueueCapacity: queue,
		// Lag reporting would add a ListOffsets request per minute
		// per partition that nobody reads.
		ReadLagInterval: -1,
	})
	if err := r.SetOffset(offset); err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s/%d at %d: %w", topic, partition, offset, err)
	}
	return r, nil
}

// TopicReader reads every partition of one topic, merged. It implements
// [eventlog.Reader] for the learner. Records of one partition come in offset
// order; partitions interleave in arrival order.
type TopicReader struct {
	recs    chan fetched
	stop    context.CancelFunc
	done    <-chan struct{}
	wg      sync.WaitGroup
	readers []*kafka.Reader
}

type fetched struct {
	rec eventlog.Record
	err error
}

// NewTopicReader starts reading topic at start[p] for each partition p, or at
// the earliest offset where start has no entry. ctx bounds only the metadata
// lookup; the reader runs until Close.
func NewTopicReader(ctx context.Context, brokers []string, topic string, start map[int]int64) (*TopicReader, error) {
	if len(brokers) == 0 {
		return nil, errors.New("topic reader: no brokers")
	}
	n, err := PartitionCount(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	for p := range start {
		if p < 0 || p >= n {
			return nil, fmt.Errorf("topic %s has no partition %d", topic, p)
		}
	}
	runCtx, stop := context.WithCancel(context.Background())
	r := &TopicReader{recs: make(chan fetched, 64), stop: stop, done: runCtx.Done()}
	for p := range n {
		off, ok := start[p]
		if !ok {
			off = kafka.FirstOffset
		}
		pr, err := newPartitionReader(brokers, topic, p, off, fetchQueueCapacity)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.readers = append(r.readers, pr)
	}
	// One goroutine per partition, owned by r: each ends when Close
	// cancels runCtx or its reader fails.
	for _, pr := range r.readers {
		r.wg.Go(func() { r.pump(runCtx, pr) })
	}
	return r, nil
}

func (r *TopicReader) pump(ctx context.Context, pr *kafka.Reader) {
	for {
		m, err := pr.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			err = fmt.Errorf("fetch %s/%d: %w", pr.Config().Topic, pr.Config().Partition, err)
		}
		select {
		case r.recs <- fetched{rec: toRecord(m), err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// Fetch returns the next record of any partition. After an error from a
// partition that partition stops; close the reader and start a new one.
func (r *TopicReader) Fetch(ctx context.Context) (eventlog.Record, error) {
	select {
	case f := <-r.recs:
		return f.rec, f.err
	case <-ctx.Done():
		return eventlog.Record{}, ctx.Err()
	case <-r.done:
		return eventlog.Record{}, errClosed
	}
}

// Close stops the partition goroutines and closes the kafka-go readers.
func (r *TopicReader) Close() error {
	r.stop()
	r.wg.Wait()
	var errs []error
	for _, pr := range r.readers {
		if err := pr.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	r.readers = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close topic reader: %w", err)
	}
	return nil
}
