package server

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
)

// errBufferFull is returned when the event buffer cannot take a record.
var errBufferFull = errors.New("event buffer is full")

// Publisher appends records to a log in the background through a bounded
// buffer, so that answering a request never waits for the broker. Records
// the buffer accepted are retried until written or until shutdown flushing
// gives up; a record the buffer cannot take is refused, counted, and logged
// in a summary at most every 10 s.
type Publisher struct {
	w        eventlog.Writer
	log      *slog.Logger
	ch       chan eventlog.Record
	maxBatch int

	written atomic.Int64
	refused atomic.Int64
	lost    atomic.Int64
	// loggedAt is when an overflow was last logged (Unix nanoseconds) and
	// loggedRefused the refused count then.
	loggedAt      atomic.Int64
	loggedRefused atomic.Int64
}

// overflowLogInterval is the least time between two warnings about
// records refused because the buffer was full.
const overflowLogInterval = 10 * time.Second

// PublisherStats are a [Publisher]'s counters.
type PublisherStats struct {
	Written  int64 // acknowledged by the log
	Buffered int   // waiting in the buffer
	Capacity int   // the buffer's size
	Refused  int64 // not taken because the buffer was full
	Lost     int64 // taken, then not written before shutdown gave up
}

// NewPublisher returns a publisher with a buffer of capacity records.
func NewPublisher(w eventlog.Writer, capacity int, log *slog.Logger) *Publisher {
	return &Publisher{w: w, log: log, ch: make(chan eventlog.Record, capacity), maxBatch: 1000}
}

// Publish queues rec without blocking. It returns errBufferFull when the
// buffer is full.
func (p *Publisher) Publish(rec eventlog.Record) error {
	select {
	case p.ch <- rec:
		return nil
	default:
	}
	refused := p.refused.Add(1)
	// One goroutine in an interval wins the swap and logs; the others
	// only count. The clock here paces a log line, it decides nothing.
	now, last := time.Now().UnixNano(), p.loggedAt.Load()
	if now-last >= int64(overflowLogInterval) && p.loggedAt.CompareAndSwap(last, now) {
		p.log.Warn("event buffer full; records refused and not learned",
			"capacity", cap(p.ch), "refused", refused-p.loggedRefused.Swap(refused), "refused_total", refused)
	}
	return errBufferFull
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{Written: p.written.Load(), Buffered: len(p.ch), Capacity: cap(p.ch), Refused: p.refused.Load(), Lost: p.lost.Load()}
}

// Run writes queued records in batches until ctx ends, then flushes what is
// left, giving up after flushTimeout. Callers must stop calling Publish
// before ctx ends, or those records may be left unwritten and counted lost.
func (p *Publisher) Run(ctx context.Context, flushTimeout time.Duration) error {
	batch := make([]eventlog.Record, 0, p.maxBatch)
	for {
		select {
		case <-ctx.Done():
			return p.flush(context.WithoutCancel(ctx), flushTimeout, batch)
		case rec := <-p.ch:
			batch = p.fill(append(batch[:0], rec))
		}
		if err := p.write(ctx, batch); err != nil {
			return p.flush(context.WithoutCancel(ctx), flushTimeout, batch)
		}
		clear(batch) // drop references to written records
		batch = batch[:0]
	}
}

// fill adds whatever is already queued, up to maxBatch.
func (p *Publisher) fill(batch []eventlog.Record) []eventlog.Record {
	for len(batch) < p.maxBatch {
		select {
		case rec := <-p.ch:
			batch = append(batch, rec)
		default:
			return batch
		}
	}
	return batch
}

// write retries batch with backoff until it is written or ctx ends.
func (p *Publisher) write(ctx context.Context, batch []eventlog.Record) error {
	backoff := 50 * time.Millisecond
	for {
		err := p.w.Write(ctx, batch...)
		if err == nil {
			p.written.Add(int64(len(batch)))
			if backoff > 50*time.Millisecond {
				p.log.Info("event log writes recovered", "buffered", len(p.ch), "refused_total", p.refused.Load())
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.log.Warn("event log write failed; retrying", "records", len(batch), "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// flush writes pending (a batch that was in flight, possibly empty) and
// the buffer's rest.
func (p *Publisher) flush(ctx context.Context, timeout time.Duration, pending []eventlog.Record) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for batch := p.fill(pending); ; batch = p.fill(batch[:0]) {
		if len(batch) == 0 {
			return nil
		}
		if err := p.write(ctx, batch); err != nil {
			lost := int64(len(batch) + len(p.ch))
			p.lost.Add(lost)
			p.log.Error("event log flush gave up; records lost", "records", lost, "err", err)
			return nil
		}
	}
}
