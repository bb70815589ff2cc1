package joiner

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/watch"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// Config configures a [Joiner].
type Config struct {
	Rules
	// TickInterval is how often the joiner writes a tick record into each
	// partition it owns, so that windows close when no traffic comes.
	TickInterval time.Duration
	// CommitInterval is the least time between two offset commits of a
	// partition.
	CommitInterval time.Duration
	// MaxRecordBytes is the largest record the log takes
	// ([eventlog.DefaultMaxRecordBytes] when 0). A joined line over it is
	// written without the outcomes that do not fit (VW ignores "o"); an
	// output that still does not fit, or that the log refuses, goes to
	// the dead-letter topic as a reference to its input record.
	MaxRecordBytes int
	// RankCache is how many bytes of recently fetched rank records (key,
	// value and about 512 bytes of decoding) each partition keeps, so that
	// an event whose window closes soon after its rank need not read the
	// record again. 0 keeps none: every rank is read back from the log
	// when its window closes.
	RankCache int
	// TracerProvider, when set, records a span for every joined event
	// whose rank record carries trace context, a child of the Rank call's
	// span, and the joined line carries that span's context on to the
	// learner. Nil records nothing, but the context still travels.
	TracerProvider trace.TracerProvider
}

// RegisterFlags registers the joiner's flags with prefix p.
func (c *Config) RegisterFlags(fs *flag.FlagSet, p string) {
	fs.DurationVar(&c.RewardWait, p+"reward-wait", 10*time.Minute, "reward wait time of rank records that carry no join rules (older servers): rewards count if they arrive within this long after the rank")
	fs.DurationVar(&c.Backward, p+"backward-window", 2*time.Minute, "how long before its rank a reward may arrive (reordering) and still count")
	fs.DurationVar(&c.Slack, p+"join-slack", 5*time.Second, "how far the watermark runs behind the newest record time, so slightly reordered records are on time")
	fs.DurationVar(&c.MaxSkew, p+"max-clock-skew", time.Minute, "how far ahead of the joiners' clock a record may be stamped and still move the watermark; records further ahead are audited as skewed (0: no bound)")
	fs.Var((*float32Value)(&c.DefaultReward), p+"default-reward", "reward of an event with no reward in its window, for rank records that carry no join rules")
	c.Aggregation = Earliest
	fs.Var((*aggregationValue)(&c.Aggregation), p+"reward-aggregation", "how several rewards combine, for rank records that carry no join rules: earliest, sum, average, median, min or max")
	// Records without join rules logged in another mode than this one
	// are not learned; records with rules learn by the mode they logged.
	LearningModeVar(fs, &c.LearningMode, p+"learning-mode")
	fs.DurationVar(&c.TickInterval, p+"tick-interval", time.Second, "how often each owned partition gets a tick record, so idle windows close")
	fs.DurationVar(&c.CommitInterval, p+"commit-interval", time.Second, "least time between offset commits of a partition")
	fs.IntVar(&c.RankCache, p+"joiner-rank-cache", 32<<20, "bytes of recent rank records each partition keeps for windows that close soon; other ranks are read back from the log when their window closes (0: always read back)")
}

// float32Value is a flag.Value for a float32.
type float32Value float32

func (f *float32Value) String() string { return strconv.FormatFloat(float64(*f), 'g', -1, 32) }
func (f *float32Value) Set(s string) error {
	v, err := strconv.ParseFloat(s, 32)
	*f = float32Value(v)
	return err
}

// aggregationValue is a flag.Value for an [Aggregation]; Validate checks it.
type aggregationValue Aggregation

func (a *aggregationValue) String() string     { return string(*a) }
func (a *aggregationValue) Set(s string) error { *a = aggregationValue(strings.ToLower(s)); return nil }

// modeNames are Personalizer's names of the learning modes.
var modeNames = map[eventsv1.LearningMode]string{
	eventsv1.LearningMode_LEARNING_MODE_ONLINE:       "Online",
	eventsv1.LearningMode_LEARNING_MODE_APPRENTICE:   "Apprentice",
	eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY: "LoggingOnly",
}

// LearningModeVar registers flag name for a learning mode, by
// Personalizer's name (Online, Apprentice, LoggingOnly), defaulting *m to
// online. Servers and joiners take the same flag.
func LearningModeVar(fs *flag.FlagSet, m *eventsv1.LearningMode, name string) {
	*m = eventsv1.LearningMode_LEARNING_MODE_ONLINE
	fs.Var((*modeValue)(m), name, "Online, Apprentice (answer with the baseline, learn to imitate it) or LoggingOnly (answer with the baseline, learn nothing)")
}

// modeValue is a flag.Value for a learning mode, by Personalizer's name.
type modeValue eventsv1.LearningMode

func (m *modeValue) String() string { return modeNames[normalMode(eventsv1.LearningMode(*m))] }
func (m *modeValue) Set(s string) error {
	for mode, name := range modeNames {
		if strings.EqualFold(s, name) {
			*m = modeValue(mode)
			return nil
		}
	}
	return fmt.Errorf("learning mode must be Online, Apprentice or LoggingOnly, got %q", s)
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	if err := c.Rules.Validate(); err != nil {
		return err
	}
	if c.TickInterval <= 0 {
		return fmt.Errorf("tick interval must be positive, got %v", c.TickInterval)
	}
	if c.RankCache < 0 {
		return fmt.Errorf("rank cache must not be negative, got %d", c.RankCache)
	}
	return nil
}

// Source is a consumer group over personalizer.events.
type Source interface {
	Consume(ctx context.Context, fn eventlog.ClaimFunc) error
}

// Joiner joins the partitions a consumer group gives it.
type Joiner struct {
	cfg   Config
	log   *slog.Logger
	src   Source
	out   eventlog.Writer // joined lines, audits, dead letters
	ticks eventlog.Writer // personalizer.events
	now   func() time.Time
	trace trace.Tracer

	stats   watch.Value[Stats]
	mu      sync.Mutex
	pending map[int]int  // events in open windows, by claimed partition
	stalled map[int]bool // claimed partitions whose fetch or write is failing
	pos     map[int]Position
	input   Consumed
	// unlearned sums the outcomes audited since the last log line about
	// them, which comes at most every unlearnedLogInterval.
	unlearned     Stats
	unlearnedLast time.Time
}

// unlearnedLogInterval is the least time between two log lines about
// outcomes that were not learned.
const unlearnedLogInterval = 10 * time.Second

// New returns a joiner reading src. It writes joined lines, audit records
// and dead letters to out, which must put each record in its Partition
// (modulo the topic's partition count) whether it has a key or not, and
// tick records to ticks. now stamps ticks and paces commits; the join
// itself uses only the records' times.
func New(cfg Config, log *slog.Logger, src Source, out, ticks eventlog.Writer, now func() time.Time) *Joiner {
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	if cfg.MaxRecordBytes == 0 {
		cfg.MaxRecordBytes = eventlog.DefaultMaxRecordBytes
	}
	return &Joiner{cfg: cfg, log: log, src: src, out: out, ticks: ticks, now: now, pending: map[int]int{}, stalled: map[int]bool{}, pos: map[int]Position{},
		trace: tp.Tracer("github.com/open-personalizer/personalizer/joiner")}
}

// Counters returns the joiner's [Stats] summed over every partition it has
// joined, each counted once the output it describes is acknowledged.
func (j *Joiner) Counters() Stats { return j.stats.Get() }

// Wait blocks until cond holds for the joiner's counters or ctx ends.
func (j *Joiner) Wait(ctx context.Context, cond func(Stats) bool) error {
	return j.stats.Wait(ctx, cond)
}

// Pending returns how many events wait for their reward window to close
// in the partitions the joiner holds, as of their last written batch. Each
// takes about 140 bytes of memory, whatever its rank record's size (see
// [Window]).
func (j *Joiner) Pending() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for _, k := range j.pending {
		n += k
	}
	return n
}

// setPending records partition p's pending events.
func (j *Joiner) setPending(p, n int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pending[p] = n
}

// Position is where a joiner is in a partition it holds.
type Position struct {
	// Next is the offset of the first record not yet joined: the output of
	// every record before it is written (the [Checkpoint.Next] of the last
	// batch written).
	Next int64
	// Committed is the offset of the committed checkpoint, where the
	// partition's next owner replays from: the first record open reward
	// state still needs (an event is kept for its reward wait plus the
	// backward window), so it trails Next by about that span.
	// It is -1 when the group has committed none (replay from the log
	// start).
	Committed int64
}

// Positions returns the joiner's position in each partition it holds.
func (j *Joiner) Positions() map[int]Position {
	j.mu.Lock()
	defer j.mu.Unlock()
	return maps.Clone(j.pos)
}

// Consumed counts the input records a joiner has joined (their output
// written), and their bytes (keys and values), since it started.
type Consumed struct{ Records, Bytes int64 }

// Consumed returns what the joiner has joined since it started, over every
// partition.
func (j *Joiner) Consumed() Consumed {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.input
}

// setWritten records that partition p's batch b is written.
func (j *Joiner) setWritten(p int, b *batch) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pending[p] = b.pending
	pos := j.pos[p]
	pos.Next = b.cp.Next
	j.pos[p] = pos
	j.input.Records += b.in.Records
	j.input.Bytes += b.in.Bytes
}

// setPosition records partition p's position.
func (j *Joiner) setPosition(p int, pos Position) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pos[p] = pos
}

// setCommitted records the offset committed for partition p.
func (j *Joiner) setCommitted(p int, off int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	pos := j.pos[p]
	pos.Committed = off
	j.pos[p] = pos
}

// Stalled returns how many of the partitions the joiner holds cannot move
// on right now: their fetch or their output write is failing and being
// retried.
func (j *Joiner) Stalled() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for _, s := range j.stalled {
		if s {
			n++
		}
	}
	return n
}

func (j *Joiner) setStalled(p int, stalled bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.stalled[p] = stalled
}

// logUnlearned sums the outcomes a written batch audited and, at most
// every unlearnedLogInterval, says how many were not learned and why: a
// caller whose rewards come too late sees it in the log, not only in
// metrics.
func (j *Joiner) logUnlearned(st Stats) {
	if st.Late == 0 && st.Dangling == 0 && st.Skewed == 0 {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.unlearned.Late += st.Late
	j.unlearned.Dangling += st.Dangling
	j.unlearned.Skewed += st.Skewed
	if now := j.now(); now.Sub(j.unlearnedLast) >= unlearnedLogInterval {
		u := j.unlearned
		j.log.Info("records not learned: see personalizer.audit",
			"late", u.Late, "dangling", u.Dangling, "skewed", u.Skewed, "default_reward_wait", j.cfg.RewardWait.String(),
			"hint", "late: outcome outside its rank's reward window (the loop's reward wait time when it was ranked; default_reward_wait for ranks logged without it); dangling: its rank never came; skewed: stamped too far ahead of the joiners' clock")
		j.unlearned, j.unlearnedLast = Stats{}, now
	}
}

// Run joins until ctx ends.
func (j *Joiner) Run(ctx context.Context) error {
	err := j.src.Consume(ctx, j.claim)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Sizes of the per-partition pipeline.
const (
	fetchQueue   = 1024    // records fetched ahead of the join
	batchQueue   = 4       // output batches joined ahead of the write
	batchRecords = 1000    // most input records per batch
	batchBytes   = 4 << 20 // most output bytes per batch
	bufChunk     = 1 << 20 // a batch's buffer grows by chunks of this
	flushGrace   = 5 * time.Second
	maxBackoff   = 2 * time.Second
)

// batch is the output of consecutive input records, with the checkpoint to
// commit once it is written. The keys and values of recs are slices of
// buffers the batch allocates a chunk at a time; the last chunk is reused
// once the batch is written.
type batch struct {
	recs    []eventlog.Record
	src     []int64 // src[i] is the offset of the input record recs[i] is about
	buf     []byte  // the chunk being filled
	size    int     // bytes of keys and values in recs
	cp      Checkpoint
	stats   Stats    // the window's, and what rendering counted (see render)
	pending int      // the window's pending events after it
	in      Consumed // the input records joined into it
}

// append adds a record whose key is key and whose value is what value
// appends, which should take at most about size bytes. When buf is full it
// starts a new one rather than grow it: the records already in the batch
// keep pointing into the old one.
func (b *batch) append(src int64, topic string, p int, key string, headers []eventlog.Header, at time.Time, size int, value func([]byte) []byte) {
	if len(b.buf)+len(key)+size > cap(b.buf) {
		b.buf = make([]byte, 0, max(bufChunk, len(key)+size))
	}
	start := len(b.buf)
	b.buf = append(b.buf, key...)
	k := b.buf[start:len(b.buf):len(b.buf)]
	b.buf = value(b.buf)
	v := b.buf[start+len(k) : len(b.buf) : len(b.buf)]
	b.add(src, eventlog.Record{Topic: topic, Partition: p, Key: k, Value: v, Headers: headers, Time: at})
}

// add adds rec, which is about input record src.
func (b *batch) add(src int64, rec eventlog.Record) {
	b.recs = append(b.recs, rec)
	b.src = append(b.src, src)
	b.size += len(rec.Key) + len(rec.Value)
}

// reset empties b for reuse, keeping its last chunk.
func (b *batch) reset() {
	clear(b.recs) // the writer holds no reference to a batch it acknowledged
	b.recs, b.src, b.buf, b.size, b.stats, b.in = b.recs[:0], b.src[:0], b.buf[:0], 0, Stats{}, Consumed{}
}

// claim joins one partition for one group generation, in three goroutines
// it owns: fetch → join (the only one touching the window) → write and
// commit, plus a ticker. A claim starts from the committed checkpoint:
// it replays from the committed offset with the watermark the previous
// owner had there, and suppresses what that owner already wrote, so a
// rebalance repeats nothing and a crash repeats only what was written after
// the last commit (the learner drops those repeats).
func (j *Joiner) claim(ctx context.Context, c eventlog.Claim) error {
	p := c.Partition()
	w := NewWindow(j.cfg.Rules)
	if start, meta := c.Start(); meta != "" {
		cp, err := ParseCheckpoint(meta)
		switch {
		case err != nil:
			j.log.Warn("ignoring commit metadata", "partition", p, "err", err)
		case cp.Offset != start:
			j.log.Warn("ignoring checkpoint of another offset", "partition", p, "committed", start, "checkpoint", cp.Offset)
		default:
			w.Resume(cp)
		}
	}
	start, _ := c.Start()
	j.setPosition(p, Position{Next: max(w.Checkpoint().Next, start), Committed: start})
	records := make(chan eventlog.Record, fetchQueue)
	batches := make(chan batch, batchQueue)
	// Written batches come back to be filled again.
	free := make(chan batch, batchQueue+2)
	// Writes outlive ctx by flushGrace, so that what was joined before a
	// rebalance is written and committed and the next owner need not
	// repeat it.
	wctx, cancelWrites := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWrites()
	g, gctx := errgroup.WithContext(ctx)
	stop := context.AfterFunc(gctx, func() { time.AfterFunc(flushGrace, cancelWrites) })
	defer stop()
	g.Go(func() error { return j.fetch(gctx, c, records) })
	g.Go(func() error { return j.tick(gctx, p) })
	g.Go(func() error {
		defer close(batches)
		rr := &rereader{claim: c}
		defer rr.close()
		return j.join(gctx, p, w, records, batches, free, rr)
	})
	g.Go(func() error { return j.write(wctx, c, batches, free) })
	err := g.Wait()
	j.setPending(p, 0) // the partition's next owner holds them now
	j.setStalled(p, false)
	j.mu.Lock()
	delete(j.pos, p)
	j.mu.Unlock()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// fetch feeds records until ctx ends. Fetch errors are retried: a
// partition must not stop for a broker hiccup.
func (j *Joiner) fetch(ctx context.Context, c eventlog.Claim, records chan<- eventlog.Record) error {
	for {
		var rec eventlog.Record
		if err := j.retry(ctx, c.Partition(), "fetch", func() (err error) { rec, err = c.Fetch(ctx); return err }); err != nil {
			return ctx.Err()
		}
		select {
		case records <- rec:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// tick writes a tick record into partition p every TickInterval.
func (j *Joiner) tick(ctx context.Context, p int) error {
	t := time.NewTicker(j.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		err := j.ticks.Write(ctx, eventlog.Record{
			Topic:     eventlog.EventsTopic,
			Partition: p,
			Headers:   []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeTick)}},
			Time:      j.now(),
		})
		if err != nil && ctx.Err() == nil {
			j.log.Warn("tick write failed", "partition", p, "err", err)
		}
	}
}

// join owns the partition's window: it applies records and hands what
// they produce, with the checkpoint after them, to the writer.
func (j *Joiner) join(ctx context.Context, p int, w *Window, records <-chan eventlog.Record, batches chan<- batch, free <-chan batch, rr *rereader) error {
	var out Output
	var r renderer
	cache := rankCache{budget: j.cfg.RankCache}
	prev := w.Stats()
	for {
		var rec eventlog.Record
		select {
		case <-ctx.Done():
			return ctx.Err()
		case rec = <-records:
		}
		var b batch
		select {
		case b = <-free:
		default:
		}
		// Take what is already fetched, so output is written in batches.
		for n := 1; ; n++ {
			in := decode(rec)
			if in.Kind == Rank {
				cache.put(in, rankBytes(rec.Value, in.Rank))
			}
			w.Add(in, &out)
			if err := j.resolve(ctx, p, w, &out, &b, &cache, rr); err != nil {
				return err
			}
			j.render(&b, p, &out, &rec, &r)
			b.in.Records++
			b.in.Bytes += int64(len(rec.Key) + len(rec.Value))
			out.Reset()
			if n == batchRecords || b.size >= batchBytes || len(records) == 0 {
				break
			}
			rec = <-records
		}
		b.cp, b.pending = w.Checkpoint(), w.Pending()
		st := w.Stats()
		b.stats.Add(st.Sub(prev)) // and what rendering counted
		prev = st
		select {
		case batches <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var (
	joinedHeaders = []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeJoined)}}
	auditHeaders  = []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeAudit)}}
)

// renderer is the join goroutine's memory for rendering lines.
type renderer struct {
	fc      floatCache
	scratch []byte
}

// render appends out's records to b, all in partition p. rec is the input
// that produced out. Every output fits MaxRecordBytes: a joined line that
// does not is written with as many of its outcomes as fit (VW ignores
// "o"; the reward was aggregated from all of them), and what does not fit
// even so goes to the dead-letter topic as a reference to its input. It
// counts both into b.stats.
func (j *Joiner) render(b *batch, p int, out *Output, rec *eventlog.Record, r *renderer) {
	for i := range out.Joined {
		jd := &out.Joined[i]
		headers := joinedHeaders
		if jd.Trace != nil {
			headers = j.traced(jd, p)
		}
		room := j.cfg.MaxRecordBytes - len(jd.Key) - headersSize(headers)
		line := jd
		if n := len(jd.Outcomes); n > 0 && dsjsonBound(jd) > room && dsjsonSize(jd, &r.fc, &r.scratch) > room {
			// The most outcomes that fit: sizes grow with the count.
			fewer := *jd
			k := sort.Search(n, func(k int) bool {
				fewer.Outcomes = jd.Outcomes[:k+1]
				return dsjsonSize(&fewer, &r.fc, &r.scratch) > room
			})
			fewer.Outcomes = jd.Outcomes[:k]
			line = &fewer
			b.stats.Truncated++
		}
		if dsjsonBound(line) > room {
			if size := dsjsonSize(line, &r.fc, &r.scratch); size > room {
				j.refuse(b, eventlog.Record{Topic: eventlog.JoinedTopic, Partition: p, Offset: jd.Offset, Key: []byte(jd.Key), Headers: headers, Time: jd.Time}, size)
				continue
			}
		}
		size := len(jd.Rank.GetContext()) + 40*len(jd.Rank.GetRanking()) + 60*len(line.Outcomes) + 512
		for _, d := range jd.Rank.GetSlots() {
			size += 100 + 40*len(d.GetRanking()) + 60*len(line.Outcomes)
		}
		b.append(jd.Offset, eventlog.JoinedTopic, p, jd.Key, headers, jd.Time, size, func(buf []byte) []byte { return appendDSJSON(buf, line, &r.fc) })
	}
	for i := range out.Audits {
		a := &out.Audits[i]
		b.append(a.Offset, eventlog.AuditTopic, p, a.Key, auditHeaders, a.Outcome.Time, 512, func(buf []byte) []byte { return AppendAudit(buf, a, p) })
	}
	for _, bad := range out.Bad {
		dl := eventlog.DeadLetter(*rec, bad.Err, true, j.cfg.MaxRecordBytes)
		if dl.Value == nil && rec.Value != nil {
			b.stats.Refused++ // the copy is a reference: it did not fit
		}
		b.add(bad.Offset, dl)
	}
}

// refuse adds the dead-letter reference of a joined line of size bytes,
// too large to be written, counting it.
func (j *Joiner) refuse(b *batch, line eventlog.Record, size int) {
	why := fmt.Errorf("%w: the joined line has %d bytes, the limit is %d (--max-record-bytes)", eventlog.ErrTooLarge, size, j.cfg.MaxRecordBytes)
	dl := eventlog.DeadLetter(line, why, true, j.cfg.MaxRecordBytes)
	hs := eventlog.HeaderCarrier(dl.Headers) // the size of the line, which line does not hold
	hs.Set(eventlog.DeadLetterSizeHeader, strconv.Itoa(size))
	dl.Headers = hs
	j.log.Error("joined line too large; dead-lettered as a reference to its rank", "key", string(line.Key),
		"partition", line.Partition, "offset", line.Offset, "bytes", size, "limit", j.cfg.MaxRecordBytes)
	b.stats.Refused++
	b.add(line.Offset, dl)
}

// dsjsonBound is at least the length of j's DSJson line, found without
// writing it: the context, and for everything else the longest text it
// can take (ids escaped as control characters, floats at their longest).
// A multi-slot line lists each outcome in the slots it concerns, at most
// every slot.
func dsjsonBound(j *Joined) int {
	id, model := 6*len(j.Rank.GetEventId())+2, 6*len(j.Rank.GetModelVersion())+5
	n := 512 + len(j.Rank.GetContext()) + id + model + 27*len(j.Rank.GetRanking()) + (60+id)*len(j.Outcomes)
	for k, d := range j.Rank.GetSlots() {
		slot := 6*len(slotAt(j, k).ID) + 2
		n += 128 + 2*slot + 27*len(d.GetRanking()) + (70+id+slot)*len(j.Outcomes)
	}
	return n
}

// dsjsonSize is the length of j's DSJson line; scratch is reused memory.
func dsjsonSize(j *Joined, fc *floatCache, scratch *[]byte) int {
	*scratch = appendDSJSON((*scratch)[:0], j, fc)
	return len(*scratch)
}

func headersSize(hs []eventlog.Header) int {
	n := 0
	for _, h := range hs {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// traced records the joiner's span for a joined event whose rank was
// traced, as a child of the rank's span, and returns the joined line's
// headers, which carry the span's context to the learner.
func (j *Joiner) traced(jd *Joined, p int) []eventlog.Header {
	rank := eventlog.HeaderCarrier{{Key: eventlog.TraceparentHeader, Value: jd.Trace}}
	ctx, span := j.trace.Start(traceContext.Extract(context.Background(), &rank), "personalizer.joiner.join",
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("personalizer.event_key", jd.Key),
			attribute.Int("personalizer.partition", p),
			attribute.Int("personalizer.outcomes", len(jd.Outcomes)),
			attribute.Float64("personalizer.reward", float64(jd.Reward)),
			attribute.Bool("personalizer.learnable", jd.Learnable)))
	defer span.End()
	hs := eventlog.HeaderCarrier{joinedHeaders[0]}
	traceContext.Inject(ctx, &hs)
	return hs
}

// traceContext reads and writes W3C traceparent headers.
var traceContext propagation.TraceContext

// write writes batches in order and commits their checkpoints, at most
// every CommitInterval, and once more when the claim ends. Its ctx ends
// flushGrace after the claim's.
func (j *Joiner) write(ctx context.Context, c eventlog.Claim, batches <-chan batch, free chan<- batch) error {
	var acked, committed Checkpoint
	lastCommit := j.now()
	commit := func(ctx context.Context) {
		if acked == committed {
			return
		}
		if err := c.Commit(ctx, acked.Offset, acked.String()); err != nil {
			// The next commit covers this one; a lost generation
			// ends the claim through its context.
			j.log.Warn("commit failed", "partition", c.Partition(), "offset", acked.Offset, "err", err)
			return
		}
		committed = acked
		j.setCommitted(c.Partition(), acked.Offset)
	}
	for b := range batches {
		if len(b.recs) > 0 {
			if err := j.writeAll(ctx, c.Partition(), &b); err != nil {
				return err
			}
		}
		acked = b.cp
		j.setWritten(c.Partition(), &b)
		j.stats.Update(func(s *Stats) { s.Add(b.stats) })
		j.logUnlearned(b.stats)
		b.reset()
		select {
		case free <- b:
		default:
		}
		if now := j.now(); now.Sub(lastCommit) >= j.cfg.CommitInterval {
			commit(ctx)
			lastCommit = now
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushGrace)
	defer cancel()
	commit(cctx)
	return nil
}

// writeAll retries until b's records are acknowledged or ctx ends: the
// partition must not move past output that is not stored. The records the
// log refuses for good go to the dead-letter topic as references to their
// inputs; those it refuses even so are dropped. Neither holds up the
// partition. Both are counted into b.stats.
func (j *Joiner) writeAll(ctx context.Context, p int, b *batch) error {
	var rej *eventlog.RejectedError
	if err := j.write1(ctx, p, b.recs, &rej); err != nil || rej == nil {
		return err
	}
	letters := make([]eventlog.Record, len(rej.Rejected))
	for i, r := range rej.Rejected {
		rec := b.recs[r.Index]
		rec.Offset = b.src[r.Index]
		letters[i] = eventlog.DeadLetter(rec, r.Err, true, j.cfg.MaxRecordBytes)
		j.log.Error("joiner output refused by the log; dead-lettered as a reference", "topic", rec.Topic, "key", string(rec.Key),
			"partition", p, "offset", rec.Offset, "bytes", rec.Size(), "err", r.Err)
	}
	b.stats.Refused += int64(len(letters))
	var lrej *eventlog.RejectedError
	if err := j.write1(ctx, p, letters, &lrej); err != nil || lrej == nil {
		return err
	}
	for _, r := range lrej.Rejected {
		j.log.Error("dead letter refused by the log; joiner output dropped", "key", string(letters[r.Index].Key), "partition", p, "err", r.Err)
	}
	b.stats.Refused -= int64(len(lrej.Rejected))
	b.stats.Dropped += int64(len(lrej.Rejected))
	return nil
}

// write1 writes recs, retrying until they are acknowledged, refused for
// good (*rej is set) or ctx ends.
func (j *Joiner) write1(ctx context.Context, p int, recs []eventlog.Record, rej **eventlog.RejectedError) error {
	return j.retry(ctx, p, "joiner output write", func() error {
		err := j.out.Write(ctx, recs...)
		if errors.As(err, rej) {
			return nil
		}
		return err
	}, "records", len(recs))
}

// retry calls f until it succeeds or ctx ends, logging each failure (with
// args) and backing off up to maxBackoff between attempts; meanwhile
// partition p counts as stalled. It returns f's last error, non-nil only
// once ctx has ended.
func (j *Joiner) retry(ctx context.Context, p int, what string, f func() error, args ...any) error {
	backoff := 50 * time.Millisecond
	failed := false
	defer func() {
		if failed {
			j.setStalled(p, false)
		}
	}()
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !failed {
			failed = true
			j.setStalled(p, true)
		}
		j.stats.Update(func(s *Stats) { s.Errors++ })
		j.log.Warn(what+" failed; retrying", append(args, "partition", p, "err", err)...)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// decode turns an events record into an [Input]; a record that does not
// decode, or decodes to something the join cannot use, is [Bad].
func decode(rec eventlog.Record) Input {
	in := Input{Key: string(rec.Key), Time: rec.Time, Offset: rec.Offset}
	var err error
	switch typ := rec.Type(); typ {
	case eventlog.TypeTick:
		in.Kind = Tick
		return in
	case eventlog.TypeRank:
		var ev *eventsv1.RankEvent
		if ev, err = unmarshalRank(rec.Value); err == nil {
			if in.Slots, err = renderRequest(ev); err == nil {
				err = checkRank(ev)
			}
		}
		in.Kind, in.Rank, in.Trace = Rank, ev, rec.Header(eventlog.TraceparentHeader)
	case eventlog.TypeReward:
		var ev eventsv1.RewardEvent
		if err = proto.Unmarshal(rec.Value, &ev); err == nil && !finite(ev.GetValue()) {
			err = fmt.Errorf("reward value %v", ev.GetValue())
		}
		in.Kind, in.Value, in.ID, in.Slot = Reward, ev.GetValue(), ev.GetId(), SlotHash(ev.GetSlotId())
	case eventlog.TypeActivate:
		var ev eventsv1.ActivateEvent
		err = proto.Unmarshal(rec.Value, &ev)
		in.Kind, in.ID = Activate, ev.GetId()
	default:
		err = fmt.Errorf("unknown record type %q", typ)
	}
	if err == nil && in.Key == "" {
		err = errors.New("no key")
	}
	if err != nil {
		return Input{Kind: Bad, Time: rec.Time, Offset: rec.Offset, Err: fmt.Errorf("%s record: %w", rec.Type(), err)}
	}
	return in
}

// unmarshalRank decodes a RankEvent as proto.Unmarshal does, except that
// Context and Request are not copied but point into b: the context is most of a rank
// record's bytes, and the joiner keeps it until the window closes anyway,
// so the record's buffer is kept instead of a copy of it. b must not
// change afterwards.
func unmarshalRank(b []byte) (*eventsv1.RankEvent, error) {
	ev := new(eventsv1.RankEvent)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		if !num.IsValid() {
			return nil, fmt.Errorf("invalid field number %d", num)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch {
		case typ == protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case typ == protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case typ == protowire.Fixed32Type:
			var f uint32
			f, n = protowire.ConsumeFixed32(b)
			x = uint64(f)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			num = 0 // skip
		}
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		var err error
		switch {
		case num == 1 && typ == protowire.BytesType:
			ev.Loop, err = utf8String(v)
		case num == 2 && typ == protowire.BytesType:
			ev.EventId, err = utf8String(v)
		case num == 3 && typ == protowire.BytesType:
			ev.Context = v[:len(v):len(v)]
		case num == 11 && typ == protowire.BytesType:
			ev.Request = v[:len(v):len(v)]
		case num == 12 && typ == protowire.BytesType:
			ev.MultiSlotRequest = v[:len(v):len(v)]
		case num == 13 && typ == protowire.BytesType:
			d := new(eventsv1.SlotDecision)
			if err = proto.Unmarshal(v, d); err == nil {
				ev.Slots = append(ev.Slots, d)
			}
		case num == 4 && typ == protowire.VarintType:
			ev.Ranking = append(ev.Ranking, uint32(x))
		case num == 4 && typ == protowire.BytesType: // packed
			ev.Ranking = slices.Grow(ev.Ranking, countVarints(v))
			for len(v) > 0 {
				x, n := protowire.ConsumeVarint(v)
				if n < 0 {
					return nil, protowire.ParseError(n)
				}
				ev.Ranking, v = append(ev.Ranking, uint32(x)), v[n:]
			}
		case num == 5 && typ == protowire.Fixed32Type:
			ev.Probabilities = append(ev.Probabilities, math.Float32frombits(uint32(x)))
		case num == 5 && typ == protowire.BytesType: // packed
			if len(v)%4 != 0 {
				return nil, errors.New("probabilities: truncated")
			}
			ev.Probabilities = slices.Grow(ev.Probabilities, len(v)/4)
			for ; len(v) > 0; v = v[4:] {
				ev.Probabilities = append(ev.Probabilities, math.Float32frombits(binary.LittleEndian.Uint32(v)))
			}
		case num == 6 && typ == protowire.VarintType:
			ev.Deferred = x != 0
		case num == 7 && typ == protowire.BytesType:
			ev.ModelVersion, err = utf8String(v)
		case num == 8 && typ == protowire.VarintType:
			ev.LearningMode = eventsv1.LearningMode(int32(x))
		case num == 9 && typ == protowire.Fixed32Type:
			ev.Pdrop = math.Float32frombits(uint32(x))
		case num == 10 && typ == protowire.BytesType:
			// Small and rare enough for protobuf's decoder. Repeated
			// occurrences merge, as protobuf merges embedded messages.
			if ev.Rules == nil {
				ev.Rules = new(eventsv1.JoinRules)
			}
			err = proto.UnmarshalOptions{Merge: true}.Unmarshal(v, ev.Rules)
		case num >= 1 && num <= 13:
			return nil, fmt.Errorf("field %d has wire type %d", num, typ)
		}
		if err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// countVarints counts the varints in b by their last bytes.
func countVarints(b []byte) int {
	n := 0
	for _, c := range b {
		if c < 0x80 {
			n++
		}
	}
	return n
}

func utf8String(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", errors.New("string field is not UTF-8")
	}
	return string(b), nil
}

// checkRank rejects a rank the DSJson line could not be written from. (A
// multi-slot rank's decisions are checked against its request as it is
// rendered, see [renderSlots].)
func checkRank(ev *eventsv1.RankEvent) error {
	ranking, probs := ev.GetRanking(), ev.GetProbabilities()
	n := len(ranking)
	multi := len(ev.GetSlots()) > 0
	switch ctx := ev.GetContext(); {
	case !multi && (n == 0 || len(probs) != n):
		return fmt.Errorf("%d ranked actions, %d probabilities", n, len(probs))
	case len(ctx) < 2 || ctx[0] != '{' || ctx[len(ctx)-1] != '}':
		return errors.New("context is not a JSON object")
	case !multi && !(probs[0] > 0 && probs[0] <= 1):
		return fmt.Errorf("chosen action has probability %v", probs[0])
	case !(ev.GetPdrop() >= 0 && ev.GetPdrop() < 1):
		return fmt.Errorf("pdrop %v is not in [0, 1)", ev.GetPdrop())
	}
	seen := make([]bool, n)
	for i, a := range ranking {
		if int(a) >= n || seen[a] {
			return fmt.Errorf("ranking names action %d of %d twice or out of range", a, n)
		}
		seen[a] = true
		if !finite(probs[i]) || probs[i] < 0 || probs[i] > 1 {
			return fmt.Errorf("probability %v", probs[i])
		}
	}
	return nil
}

func finite(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }
