package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
)

// errBufferFull is returned when the event buffer cannot take a record.
var errBufferFull = errors.New("event buffer is full")

// BufferLimits bound a [Publisher]'s buffer: a record is refused when
// either limit would be passed.
type BufferLimits struct {
	Records int   // records waiting for the log
	Bytes   int64 // their bytes ([eventlog.Record.Size]), the batch being written included
}

// DefaultBufferLimits are 100,000 records and 256 MiB.
var DefaultBufferLimits = BufferLimits{Records: 100_000, Bytes: 256 << 20}

// RegisterFlags registers the buffer's flags, with [DefaultBufferLimits]
// as defaults.
func (l *BufferLimits) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.IntVar(&l.Records, prefix+"event-buffer", DefaultBufferLimits.Records, "records the server buffers while the broker is slow or away")
	fs.Int64Var(&l.Bytes, prefix+"event-buffer-bytes", DefaultBufferLimits.Bytes, "bytes of records the server buffers while the broker is slow or away")
}

// Validate checks that both limits are positive.
func (l BufferLimits) Validate() error {
	if l.Records < 1 || l.Bytes < 1 {
		return fmt.Errorf("--event-buffer and --event-buffer-bytes must be positive, got %d and %d", l.Records, l.Bytes)
	}
	return nil
}

// Publisher appends records to a log in the background through a bounded
// buffer, so that answering a request never waits for the broker. Records
// the buffer accepted are retried until written or until shutdown flushing
// gives up; a record the buffer cannot take is refused, counted, and logged
// in a summary at most every 10 s. A record the log refuses for good (too
// large for the broker, invalid) does not hold up the records behind it:
// it is copied to [eventlog.DeadLetterTopic] (by reference when the copy
// would not fit either), or, when even that is refused, counted as dropped,
// each logged at ERROR.
type Publisher struct {
	w        eventlog.Writer
	log      *slog.Logger
	ch       chan eventlog.Record
	limits   BufferLimits
	maxBatch int
	maxBytes int // largest dead letter to write

	bytes        atomic.Int64 // of the records buffered or being written
	written      atomic.Int64
	refused      atomic.Int64
	lost         atomic.Int64
	deadLettered atomic.Int64
	dropped      atomic.Int64
	writeErrors  atomic.Int64
	failing      atomic.Bool
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
	Written       int64 // acknowledged by the log
	Buffered      int   // waiting in the buffer
	BufferedBytes int64 // their bytes, the batch being written included
	Limits        BufferLimits
	Refused       int64 // not taken because the buffer was full
	Lost          int64 // taken, then not written before shutdown gave up
	DeadLettered  int64 // refused by the log for good, copied to the dead-letter topic
	Dropped       int64 // refused by the log for good, and their dead letters too
	WriteErrors   int64 // failed write attempts (each retried)
	Failing       bool  // the batch in hand has failed and is being retried
}

// NewPublisher returns a publisher whose buffer has the given limits.
// maxRecordBytes is the log's record size limit, which dead letters must
// fit ([eventlog.DefaultMaxRecordBytes] when 0).
func NewPublisher(w eventlog.Writer, limits BufferLimits, maxRecordBytes int, log *slog.Logger) *Publisher {
	if maxRecordBytes == 0 {
		maxRecordBytes = eventlog.DefaultMaxRecordBytes
	}
	return &Publisher{w: w, log: log, ch: make(chan eventlog.Record, limits.Records), limits: limits, maxBatch: 1000, maxBytes: maxRecordBytes}
}

// Publish queues rec without blocking. It returns errBufferFull when the
// buffer is full, by records or by bytes.
func (p *Publisher) Publish(rec eventlog.Record) error {
	n := int64(rec.Size())
	if p.bytes.Add(n) <= p.limits.Bytes {
		select {
		case p.ch <- rec:
			return nil
		default:
		}
	}
	p.bytes.Add(-n)
	refused := p.refused.Add(1)
	// One goroutine in an interval wins the swap and logs; the others
	// only count. The clock here paces a log line, it decides nothing.
	now, last := time.Now().UnixNano(), p.loggedAt.Load()
	if now-last >= int64(overflowLogInterval) && p.loggedAt.CompareAndSwap(last, now) {
		p.log.Warn("event buffer full; records refused and not learned",
			"capacity", p.limits.Records, "capacity_bytes", p.limits.Bytes,
			"refused", refused-p.loggedRefused.Swap(refused), "refused_total", refused)
	}
	return errBufferFull
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{
		Written: p.written.Load(), Buffered: len(p.ch), BufferedBytes: p.bytes.Load(), Limits: p.limits,
		Refused: p.refused.Load(), Lost: p.lost.Load(), DeadLettered: p.deadLettered.Load(), Dropped: p.dropped.Load(),
		WriteErrors: p.writeErrors.Load(), Failing: p.failing.Load(),
	}
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

// write retries batch with backoff until it is written or ctx ends. The
// records the log refuses for good are dead-lettered.
func (p *Publisher) write(ctx context.Context, batch []eventlog.Record) error {
	rej, err := p.retry(ctx, batch)
	if err != nil {
		return err
	}
	n := len(batch)
	if rej != nil {
		n -= len(rej.Rejected)
		letters := make([]eventlog.Record, len(rej.Rejected))
		for i, r := range rej.Rejected {
			rec := batch[r.Index]
			letters[i] = eventlog.DeadLetter(rec, r.Err, false, p.maxBytes)
			p.log.Error("event record refused by the log; dead-lettered", "key", string(rec.Key), "type", rec.Type(), "bytes", rec.Size(), "err", r.Err)
		}
		lrej, err := p.retry(ctx, letters)
		if err != nil {
			return err
		}
		dropped := 0
		if lrej != nil {
			dropped = len(lrej.Rejected)
			for _, r := range lrej.Rejected {
				p.log.Error("dead letter refused by the log; event record dropped", "key", string(letters[r.Index].Key), "err", r.Err)
			}
		}
		p.deadLettered.Add(int64(len(letters) - dropped))
		p.dropped.Add(int64(dropped))
	}
	p.written.Add(int64(n))
	p.release(batch)
	return nil
}

// release returns the bytes of records no longer held to the buffer.
func (p *Publisher) release(recs []eventlog.Record) {
	var n int64
	for i := range recs {
		n += int64(recs[i].Size())
	}
	p.bytes.Add(-n)
}

// retry writes recs until the log acknowledges them (returning the records
// it refused for good, if any) or ctx ends.
func (p *Publisher) retry(ctx context.Context, recs []eventlog.Record) (*eventlog.RejectedError, error) {
	backoff := 50 * time.Millisecond
	defer p.failing.Store(false)
	for {
		err := p.w.Write(ctx, recs...)
		var rej *eventlog.RejectedError
		if err == nil || errors.As(err, &rej) {
			if p.failing.Load() {
				p.log.Info("event log writes recovered", "buffered", len(p.ch), "refused_total", p.refused.Load())
			}
			return rej, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		p.writeErrors.Add(1)
		p.failing.Store(true)
		p.log.Warn("event log write failed; retrying", "records", len(recs), "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
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
			p.release(batch)
			for range len(p.ch) {
				rec := <-p.ch
				p.release([]eventlog.Record{rec})
			}
			p.log.Error("event log flush gave up; records lost", "records", lost, "err", err)
			return nil
		}
	}
}
