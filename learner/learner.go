package learner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/watch"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// Config configures a [Learner].
type Config struct {
	Loop   string
	Policy string // VW arguments
	// ExportEvery is how often a new model version is published (only when
	// something was learned since the last one): Personalizer's
	// modelExportFrequency.
	ExportEvery time.Duration
	// Dir holds the checkpoint; the learned model survives restarts.
	Dir string
	// Remember is how many recent event keys are kept to drop repeats.
	Remember int
	// Learned, when set, is called from Run's goroutine with the key and
	// the cost of every event learned, after the model learned it. Tests
	// use it to check exactly what reached the model.
	Learned func(key []byte, cost float32)
	// TracerProvider, when set, records a span for every joined line
	// that carries trace context (its rank was traced), a child of the
	// joiner's span. Nil records nothing.
	TracerProvider trace.TracerProvider
}

// RegisterFlags registers the learner's flags with prefix p.
func (c *Config) RegisterFlags(fs *flag.FlagSet, p string) {
	fs.StringVar(&c.Policy, p+"policy", bandit.DefaultPolicy, "learning policy: Vowpal Wabbit arguments")
	fs.DurationVar(&c.ExportEvery, p+"model-export-frequency", 5*time.Minute, "how often a new model version is published")
	fs.IntVar(&c.Remember, p+"dedupe-window", 1<<20, "how many recent event ids the learner remembers to drop repeated joined events")
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	if _, err := bandit.ParsePolicy(c.Policy); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	switch {
	case c.ExportEvery <= 0:
		return fmt.Errorf("model export frequency must be positive, got %v", c.ExportEvery)
	case c.Remember <= 0:
		return fmt.Errorf("dedupe window must be positive, got %d", c.Remember)
	case c.Dir == "":
		return errors.New("learner needs a directory for its checkpoint")
	}
	return nil
}

// Stats are a learner's counters and the state of its checkpoint.
type Stats struct {
	Version      uint64 // latest published model version
	Learned      int64  // examples learned, all time (survives restarts)
	NotLearnable int64  // joined events marked _skipLearn
	Duplicates   int64  // joined events dropped as repeats
	Malformed    int64  // joined lines that did not parse
	OtherLoops   int64  // records of other loops, skipped

	// CheckpointFailures counts the checkpoint writes that failed since
	// the process started.
	CheckpointFailures int64
	// CheckpointFailing is set while the latest checkpoint write failed:
	// the learner goes on learning in memory and publishes no version
	// until a checkpoint is written again (see [Learner.Run]).
	CheckpointFailing bool
	// CheckpointError is the latest failure and FailingSince the first
	// of the current streak, while CheckpointFailing is set.
	CheckpointError string
	FailingSince    time.Time
	// LastCheckpoint is when a checkpoint was last written: zero before
	// the first, the checkpoint file's modification time after a restart.
	LastCheckpoint time.Time
}

// Checkpoint retries. A checkpoint that could not be written is tried
// again after checkpointRetryFirst (ExportEvery if that is shorter), then
// after twice as long each time, up to ExportEvery but at most
// checkpointRetryMax. A streak of failures is logged at ERROR when it
// starts, then summed up at most every checkpointLogEvery.
const (
	checkpointRetryFirst = time.Second
	checkpointRetryMax   = time.Minute
	checkpointLogEvery   = time.Minute
)

// Learner trains one loop's model online from personalizer.joined and
// publishes versions to a [Store].
type Learner struct {
	cfg   Config
	log   *slog.Logger
	store *Store
	now   func() time.Time
	trace trace.Tracer

	// Owned by the Run goroutine.
	model   *bandit.Model
	parser  bandit.DSJSONParser
	ev      bandit.Event
	pred    bandit.Prediction
	offsets map[int]int64
	seen    *dedupe
	prefix  []byte // loop + "/"
	dirty   bool   // learned since the last export

	// The current streak of checkpoint failures, owned by the Run
	// goroutine: the delay before the next attempt, the failures in the
	// streak, when the streak was last logged and the failures since.
	retry    time.Duration
	streak   int64
	loggedAt time.Time
	unlogged int64

	stats watch.Value[Stats]
}

// New returns a learner that resumes from the checkpoint in cfg.Dir if
// there is one and publishes that model to store at once.
func New(cfg Config, log *slog.Logger, store *Store, now func() time.Time) (*Learner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	policy, _ := bandit.ParsePolicy(cfg.Policy)
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	l := &Learner{
		cfg: cfg, log: log, store: store, now: now,
		model:   bandit.NewModel(policy),
		offsets: map[int]int64{},
		seen:    newDedupe(cfg.Remember),
		prefix:  []byte(cfg.Loop + "/"),
		trace:   tp.Tracer("github.com/open-personalizer/personalizer/learner"),
	}
	data, err := os.ReadFile(l.checkpointPath())
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	if err := l.restore(data); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", l.checkpointPath(), err)
	}
	if fi, err := os.Stat(l.checkpointPath()); err == nil {
		l.stats.Update(func(s *Stats) { s.LastCheckpoint = fi.ModTime() })
	}
	return l, nil
}

func (l *Learner) checkpointPath() string { return filepath.Join(l.cfg.Dir, "checkpoint") }

func (l *Learner) restore(data []byte) error {
	c, err := unmarshalCheckpoint(data)
	if err != nil {
		return err
	}
	m, err := bandit.ReadModel(bytes.NewReader(c.model))
	if err != nil {
		return err
	}
	if got := m.Policy().String(); got != l.model.Policy().String() {
		return fmt.Errorf("trained with policy %q, configured %q: use that policy or remove the checkpoint", got, l.model.Policy().String())
	}
	l.model, l.offsets = m, c.offsets
	for _, k := range c.seen {
		l.seen.addHash(k)
	}
	st := Stats{Version: c.version, Learned: int64(c.examples)}
	l.stats.Update(func(s *Stats) { *s = st })
	l.store.Publish(l.version(c.model, st))
	l.log.Info("learner resumed", "loop", l.cfg.Loop, "version", c.version, "examples", c.examples, "offsets", c.offsets)
	return nil
}

// version wraps model bytes as version st.Version, of st.Learned examples.
func (l *Learner) version(model []byte, st Stats) *eventsv1.GetModelResponse {
	sum := sha256.Sum256(model)
	return &eventsv1.GetModelResponse{
		Info: &eventsv1.ModelInfo{
			Loop:     l.cfg.Loop,
			Version:  st.Version,
			Sha256:   sum[:],
			Created:  timestamppb.New(l.now()),
			Examples: uint64(st.Learned),
		},
		Data: model,
	}
}

// Stats returns the learner's counters.
func (l *Learner) Stats() Stats { return l.stats.Get() }

// Wait blocks until cond holds for the learner's stats or ctx ends.
func (l *Learner) Wait(ctx context.Context, cond func(Stats) bool) error {
	return l.stats.Wait(ctx, cond)
}

// Open opens a reader of personalizer.joined at the given next offsets.
type Open func(ctx context.Context, start map[int]int64) (eventlog.Reader, error)

// Run learns until ctx ends, publishing a version every ExportEvery, and
// a last one on the way out. When reading fails (a broker restart, say)
// it reopens the reader where it stands and goes on.
//
// A version is published only once its checkpoint is written. When the
// checkpoint cannot be written (a full or broken disk), Run logs it,
// counts it in [Stats], goes on learning in memory and tries again with
// backoff; servers keep the last checkpointed version meanwhile, and the
// version number is not used up. Publishing versions that no checkpoint
// holds would break what a restart, which resumes from the checkpoint,
// relies on: the restarted learner would publish other models under
// numbers servers already hold (servers only take a higher number, so
// they would keep serving a model no learner has), and the model servers
// answered with would be one nobody can rebuild. Only the last
// checkpoint, on the way out, ends Run with an error when it fails: a
// restart then resumes from the previous checkpoint and learns again,
// once, what came after it.
func (l *Learner) Run(ctx context.Context, open Open) error {
	export := time.NewTimer(l.cfg.ExportEvery)
	defer export.Stop()
	backoff := 100 * time.Millisecond
	for {
		err := l.read(ctx, open, export)
		if ctx.Err() != nil {
			return l.exportLast()
		}
		l.log.Warn("reading joined events failed; reopening", "loop", l.cfg.Loop, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return l.exportLast()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// read learns from a reader opened at the learner's offsets until ctx ends
// or reading fails. Records fetched but not learned are dropped with the
// reader: the next one starts after the last record learned.
func (l *Learner) read(ctx context.Context, open Open, export *time.Timer) error {
	r, err := open(ctx, l.offsets)
	if err != nil {
		return fmt.Errorf("open joined events: %w", err)
	}
	defer r.Close()
	recs := make(chan eventlog.Record, 4096)
	fetchCtx, stop := context.WithCancel(ctx)
	fetchErr := make(chan error, 1)
	go func() { // ends when fetchCtx does
		for {
			rec, err := r.Fetch(fetchCtx)
			if err != nil {
				fetchErr <- err
				return
			}
			select {
			case recs <- rec:
			case <-fetchCtx.Done():
				fetchErr <- fetchCtx.Err()
				return
			}
		}
	}()
	defer func() { stop(); <-fetchErr }()

	var batch Stats
	defer l.addStats(&batch)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-fetchErr:
			fetchErr <- err // for the deferred wait
			return fmt.Errorf("read joined events: %w", err)
		case <-export.C:
			l.addStats(&batch)
			export.Reset(l.export())
		case rec := <-recs:
			l.learn(rec, &batch)
			if len(recs) == 0 || batch.Learned+batch.Duplicates+batch.NotLearnable >= 1024 {
				l.addStats(&batch)
			}
		}
	}
}

// learn learns one joined record, counting into batch.
func (l *Learner) learn(rec eventlog.Record, batch *Stats) {
	l.offsets[rec.Partition] = rec.Offset + 1
	if rec.Header(eventlog.TraceparentHeader) != nil {
		before := *batch
		_, span := l.trace.Start(traceContext.Extract(context.Background(), (*eventlog.HeaderCarrier)(&rec.Headers)), "personalizer.learner.learn",
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("personalizer.event_key", string(rec.Key))))
		defer func() {
			span.SetAttributes(attribute.Bool("personalizer.learned", batch.Learned > before.Learned),
				attribute.Bool("personalizer.duplicate", batch.Duplicates > before.Duplicates))
			span.End()
		}()
	}
	switch {
	case !bytes.HasPrefix(rec.Key, l.prefix):
		batch.OtherLoops++
		return
	case !l.seen.add(rec.Key):
		batch.Duplicates++
		return
	}
	l.ev.Reset()
	if err := l.parser.Parse(rec.Value, &l.ev); err != nil {
		if errors.Is(err, bandit.ErrSkip) {
			batch.NotLearnable++
			return
		}
		batch.Malformed++
		l.log.Warn("skipping malformed joined event", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return
	}
	if _, learned := l.model.Learn(&l.ev, &l.pred); !learned {
		batch.NotLearnable++
		return
	}
	batch.Learned++
	l.dirty = true
	if l.cfg.Learned != nil {
		_, cost, _, _ := l.ev.Label()
		l.cfg.Learned(rec.Key, cost)
	}
}

// traceContext reads W3C traceparent headers.
var traceContext propagation.TraceContext

// addStats folds batch into the shared stats and wakes waiters.
func (l *Learner) addStats(batch *Stats) {
	l.stats.Update(func(s *Stats) {
		s.Learned += batch.Learned
		s.NotLearnable += batch.NotLearnable
		s.Duplicates += batch.Duplicates
		s.Malformed += batch.Malformed
		s.OtherLoops += batch.OtherLoops
	})
	*batch = Stats{}
}

// export publishes a new version if anything was learned since the last
// one, and returns when to export next: after ExportEvery, or sooner when
// the checkpoint could not be written.
func (l *Learner) export() time.Duration {
	if !l.dirty {
		return l.cfg.ExportEvery
	}
	if err := l.checkpoint(); err != nil {
		l.checkpointFailed(err)
		return l.retry
	}
	return l.cfg.ExportEvery
}

// exportLast is the export on the way out: when its checkpoint cannot be
// written, what was learned since the last one is lost to this process,
// and the error says so.
func (l *Learner) exportLast() error {
	if !l.dirty {
		return nil
	}
	err := l.checkpoint()
	if err == nil {
		return nil
	}
	l.countFailure(err)
	st := l.stats.Get()
	from := "the start"
	if st.Version > 0 {
		from = fmt.Sprintf("version %d", st.Version)
	}
	return fmt.Errorf("learner: the last checkpoint could not be written; %d examples learned since %s are not in it (a restart resumes from %s and learns them again): %w",
		st.Learned-int64(l.store.Latest().GetInfo().GetExamples()), from, from, err)
}

// checkpoint writes the model, the offsets it has learned up to and the
// keys it remembers as the checkpoint of the next version, then publishes
// that version.
func (l *Learner) checkpoint() error {
	var buf bytes.Buffer
	if _, err := l.model.WriteTo(&buf); err != nil {
		return fmt.Errorf("encode model: %w", err)
	}
	// Only this goroutine changes Version; waiters see it once published.
	st := l.stats.Get()
	st.Version++
	v := l.version(buf.Bytes(), st)
	c := checkpoint{version: v.Info.Version, examples: v.Info.Examples, offsets: l.offsets, seen: l.seen.keys(), model: v.Data}
	if err := writeFileAtomic(l.checkpointPath(), c.marshal()); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	l.store.Publish(v)
	l.dirty = false
	now := l.now()
	l.stats.Update(func(s *Stats) {
		s.Version, s.LastCheckpoint = st.Version, now
		s.CheckpointFailing, s.CheckpointError, s.FailingSince = false, "", time.Time{}
	})
	if l.streak > 0 {
		l.log.Info("checkpoint written again; publishing model versions again", "loop", l.cfg.Loop,
			"failures", l.streak, "failing_for", now.Sub(st.FailingSince), "version", v.Info.Version)
		l.streak = 0
	}
	l.log.Info("model published", "loop", l.cfg.Loop, "version", v.Info.Version, "examples", v.Info.Examples)
	return nil
}

// checkpointFailed counts a failed checkpoint, sets the delay before the
// next attempt and logs the first failure of a streak, then a summary at
// most every checkpointLogEvery.
func (l *Learner) checkpointFailed(err error) {
	now := l.countFailure(err)
	l.streak++
	if l.streak == 1 {
		l.retry = min(checkpointRetryFirst, l.cfg.ExportEvery)
		l.loggedAt, l.unlogged = now, 0
		l.log.Error("checkpoint not written; learning goes on in memory, servers keep the last checkpointed version",
			"loop", l.cfg.Loop, "version", l.stats.Get().Version, "retry_in", l.retry, "err", err)
		return
	}
	l.retry = min(2*l.retry, l.cfg.ExportEvery, checkpointRetryMax)
	l.unlogged++
	if now.Sub(l.loggedAt) >= checkpointLogEvery {
		st := l.stats.Get()
		l.log.Error("checkpoints still failing", "loop", l.cfg.Loop, "failures", l.unlogged, "failures_in_streak", l.streak,
			"failing_since", st.FailingSince, "version", st.Version, "retry_in", l.retry, "err", err)
		l.loggedAt, l.unlogged = now, 0
	}
}

// countFailure counts a failed checkpoint in the stats and returns when
// it failed.
func (l *Learner) countFailure(err error) time.Time {
	now := l.now()
	l.stats.Update(func(s *Stats) {
		s.CheckpointFailures++
		if !s.CheckpointFailing {
			s.CheckpointFailing, s.FailingSince = true, now
		}
		s.CheckpointError = err.Error()
	})
	return now
}
