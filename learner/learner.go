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
	"maps"
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
	"github.com/open-personalizer/personalizer/loop"
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
	// History is how many published versions are kept (the latest
	// included), in Dir/history, for audits and rollbacks; 0 means
	// [DefaultHistory].
	History int
	// Learned, when set, is called from Run's goroutine with the key and
	// the cost of every event learned, after the model learned it. Tests
	// use it to check exactly what reached the model.
	Learned func(key []byte, cost float32)
	// Observe, when set, is called from Run's goroutine with every event
	// learned live, after the model learned it, and its line's logged
	// decision and "Timestamp" ([bandit.DSJSONParser.Logged]): the
	// dashboard's reward over time. The arguments are valid only during
	// the call.
	Observe func(ev *bandit.Event, ids []int, probs []float32, ts []byte)
	// TracerProvider, when set, records a span for every joined line
	// that carries trace context (its rank was traced), a child of the
	// joiner's span. Nil records nothing.
	TracerProvider trace.TracerProvider

	// Configs, when set, holds the loop's live configuration, which Run
	// follows: its ModelExportFrequency replaces ExportEvery at once,
	// and a change of its policy's arguments is a policy change (see
	// [Learner.Run]). Policy and ExportEvery stay the configuration
	// while Configs has none for the loop. Nil: they are the only one.
	Configs *loop.Registry
	// RetrainWindow is how much of the joined log a policy change trains
	// the new model on: the records of the last RetrainWindow, up to
	// where the live learner stands (Personalizer's
	// DefaultModelRetrainDays, 2). 0 starts the new model empty.
	RetrainWindow time.Duration
	// OffsetsAt returns, for every partition of personalizer.joined, the
	// offset of the first record at or after t, or the partition's end
	// offset when it has none (kafkalog.OffsetsAt on that topic). A
	// retrain starts there. Nil: RetrainWindow is taken as 0.
	OffsetsAt func(ctx context.Context, t time.Time) (map[int]int64, error)
}

// RegisterFlags registers the learner's flags with prefix p.
func (c *Config) RegisterFlags(fs *flag.FlagSet, p string) {
	fs.StringVar(&c.Policy, p+"policy", bandit.DefaultPolicy, "learning policy: Vowpal Wabbit arguments")
	fs.DurationVar(&c.ExportEvery, p+"model-export-frequency", 5*time.Minute, "how often a new model version is published")
	fs.IntVar(&c.Remember, p+"dedupe-window", 1<<20, "how many recent event ids the learner remembers to drop repeated joined events")
	fs.DurationVar(&c.RetrainWindow, p+"retrain-window", DefaultRetrainWindow, "how much of the joined log a policy change retrains the new model on (0: start it empty)")
	fs.IntVar(&c.History, p+"model-history", DefaultHistory, "published model versions the learner keeps on disk (the latest included), for decision audits and rollbacks")
}

// DefaultRetrainWindow is the default [Config.RetrainWindow]:
// Personalizer's DefaultModelRetrainDays, two days.
const DefaultRetrainWindow = 48 * time.Hour

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
	case c.History < 0:
		return fmt.Errorf("model history must not be negative, got %d", c.History)
	case c.RetrainWindow < 0:
		return fmt.Errorf("retrain window must not be negative, got %v", c.RetrainWindow)
	case c.Dir == "":
		return errors.New("learner needs a directory for its checkpoint")
	}
	return nil
}

// Stats are a learner's counters, the state of its model and of its
// checkpoint. The counters of joined events count live learning only: a
// retrain counts in RetrainLearned.
type Stats struct {
	Version      uint64 // latest published model version
	Learned      int64  // examples learned live, all time (survives restarts)
	NotLearnable int64  // joined events marked _skipLearn
	Duplicates   int64  // joined events dropped as repeats
	Malformed    int64  // joined lines that did not parse
	OtherLoops   int64  // records of other loops, skipped
	// Offsets is the next offset to read of each personalizer.joined
	// partition, as of the last counters update: every record before it
	// is learned or skipped. A partition it does not have is read from
	// its log start. Never modified: each update brings a new map.
	Offsets map[int]int64

	// Examples is how many examples the current model learned since it
	// was created, at ModelCreated: the ModelInfo.examples of the next
	// version. A reset or an import starts it at 0, a policy change at
	// the examples its retrain learned.
	Examples     int64
	ModelCreated time.Time
	// Policy is the current model's policy (VW arguments).
	Policy string
	// ExportEvery is the current export cadence.
	ExportEvery time.Duration
	// Resets, Imports and Rollbacks count the resets, imports and
	// rollbacks published since the process started.
	Resets, Imports, Rollbacks int64

	// Retraining is set while a policy change retrains a new model;
	// RetrainLearned is how many examples that retrain (or the last one)
	// has learned. PolicyChanges counts the retrained models swapped in
	// and RetrainFailures the retrains that failed (the current model
	// and policy stayed), since the process started.
	Retraining      bool
	RetrainLearned  int64
	PolicyChanges   int64
	RetrainFailures int64

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
// again after checkpointRetryFirst (the export cadence if that is
// shorter), then after twice as long each time, up to the cadence but at
// most checkpointRetryMax. A streak of failures is logged at ERROR when it
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
	cmds  chan command // Reset, Import and Rollback, to the Run goroutine
	// history keeps the published versions; Run's goroutine adds.
	history *History

	// Owned by the Run goroutine.
	model   *bandit.Model
	created time.Time // when model was created: first model, reset, import or policy change
	// configured is the policy (VW arguments) of the configuration the
	// model follows: the model's own, except after an import of a model
	// of another policy, which stays until the configured policy changes.
	configured  string
	parser      bandit.DSJSONParser
	ev          bandit.Event
	pred        bandit.Prediction
	offsets     map[int]int64
	seen        *dedupe
	prefix      []byte // loop + "/"
	dirty       bool   // learned since the last export
	lastLearned int64  // Stats.Learned at the last checkpoint
	// rollbackOf is the version the next checkpoint publishes a rollback
	// to, 0 when it is none.
	rollbackOf uint64

	// Set up by Run, owned by its goroutine: the reader opener, the
	// export timer and cadence, the configuration followed (nil before
	// the registry has one) and its change signal (nil without a
	// registry), and the scheduled retry of a failed retrain.
	open         Open
	every        time.Duration
	export       *time.Timer
	conf         *loop.Config
	confChanged  <-chan struct{}
	retrainTimer *time.Timer
	retrainC     <-chan time.Time
	retrainDelay time.Duration

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
//
// Without cfg.Configs the checkpoint must follow cfg.Policy. With it, the
// checkpoint's model is taken whatever its policy: Run retrains it if the
// configuration's policy differs. A new model (no checkpoint) is of the
// configuration's policy if the registry already has one, else of
// cfg.Policy.
func New(cfg Config, log *slog.Logger, store *Store, now func() time.Time) (*Learner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	policy, _ := bandit.ParsePolicy(cfg.Policy)
	if cfg.Configs != nil {
		if c := cfg.Configs.Get(cfg.Loop); c != nil {
			if p, err := bandit.ParsePolicy(c.Policy.Arguments); err == nil {
				policy = p
			}
		}
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	l := &Learner{
		cfg: cfg, log: log, store: store, now: now,
		cmds:       make(chan command),
		model:      bandit.NewModel(policy),
		created:    now(),
		configured: policy.String(),
		every:      cfg.ExportEvery,
		offsets:    map[int]int64{},
		seen:       newDedupe(cfg.Remember),
		prefix:     []byte(cfg.Loop + "/"),
		trace:      tp.Tracer("github.com/open-personalizer/personalizer/learner"),
	}
	data, err := os.ReadFile(l.checkpointPath())
	if errors.Is(err, fs.ErrNotExist) {
		l.stats.Update(func(s *Stats) { l.setModelStats(s, 0) })
		return l, l.openHistory(0)
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	var written time.Time
	if fi, err := os.Stat(l.checkpointPath()); err == nil {
		written = fi.ModTime()
	}
	if err := l.restore(data, written); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", l.checkpointPath(), err)
	}
	return l, l.openHistory(l.stats.Get().Version)
}

// openHistory opens the model history of a learner whose checkpoint is
// of version latest (0: none) and serves it through the store.
func (l *Learner) openHistory(latest uint64) error {
	keep := l.cfg.History
	if keep == 0 {
		keep = DefaultHistory
	}
	h, err := OpenHistory(filepath.Join(l.cfg.Dir, "history"), keep, latest)
	if err != nil {
		return err
	}
	l.history = h
	l.store.setHistory(h)
	return nil
}

func (l *Learner) checkpointPath() string { return filepath.Join(l.cfg.Dir, "checkpoint") }

// restore resumes from a checkpoint written at written (its file's
// modification time; zero if unknown) and publishes its version.
func (l *Learner) restore(data []byte, written time.Time) error {
	c, err := unmarshalCheckpoint(data)
	if err != nil {
		return err
	}
	m, err := bandit.ReadModel(bytes.NewReader(c.model))
	if err != nil {
		return err
	}
	configured := c.configured
	if configured == "" { // format 01: the flags were the configuration
		configured = m.Policy().String()
	}
	if l.cfg.Configs == nil && configured != l.cfg.Policy {
		return fmt.Errorf("trained with policy %q, configured %q: use that policy or remove the checkpoint", configured, l.cfg.Policy)
	}
	l.model, l.offsets, l.configured = m, c.offsets, configured
	// A format 01 checkpoint does not say when its model was created:
	// the checkpoint's time is the best known.
	switch {
	case !c.created.IsZero():
		l.created = c.created
	case !written.IsZero():
		l.created = written
	}
	for _, k := range c.seen {
		l.seen.addHash(k)
	}
	l.lastLearned = int64(c.learned)
	st := Stats{Version: c.version, Learned: int64(c.learned), LastCheckpoint: written, Offsets: maps.Clone(c.offsets)}
	l.setModelStats(&st, int64(c.examples))
	l.stats.Update(func(s *Stats) { *s = st })
	l.store.Publish(l.version(c.model, st))
	l.log.Info("learner resumed", "loop", l.cfg.Loop, "version", c.version, "examples", c.examples,
		"model_created", l.created, "policy", m.Policy().String(), "offsets", c.offsets)
	return nil
}

// setModelStats sets what s says of the current model, which has learned
// examples since it was created.
func (l *Learner) setModelStats(s *Stats, examples int64) {
	s.Examples, s.ModelCreated, s.Policy, s.ExportEvery = examples, l.created, l.model.Policy().String(), l.every
}

// version wraps model bytes as version st.Version, of st.Examples
// examples since the model's creation, learned up to the learner's
// offsets.
func (l *Learner) version(model []byte, st Stats) *eventsv1.GetModelResponse {
	sum := sha256.Sum256(model)
	offsets := make(map[int32]int64, len(l.offsets))
	for p, off := range l.offsets {
		offsets[int32(p)] = off
	}
	return &eventsv1.GetModelResponse{
		Info: &eventsv1.ModelInfo{
			Loop:          l.cfg.Loop,
			Version:       st.Version,
			Sha256:        sum[:],
			Created:       timestamppb.New(l.now()),
			Examples:      uint64(st.Examples),
			ModelCreated:  timestamppb.New(l.created),
			JoinedOffsets: offsets,
			RollbackOf:    l.rollbackOf,
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
//
// Run's goroutine alone touches the model: it also carries out
// [Learner.Reset] and [Learner.Import], and, with [Config.Configs],
// follows the loop's configuration. A new ModelExportFrequency restarts
// the export timer with it. A policy change (the configuration's policy
// arguments differ from those the model follows) retrains: Run trains a
// new model of the new policy over the joined records of the last
// [Config.RetrainWindow] up to the offsets it has learned, then swaps it
// in, checkpoints and publishes it. Live learning pauses meanwhile (new
// records wait in the log and the new model learns them after the swap)
// and servers keep the old model. A retrain that cannot read keeps the
// old model and policy and is tried again later, after 5s, then twice as
// long each time up to 5 minutes.
func (l *Learner) Run(ctx context.Context, open Open) error {
	l.open = open
	l.export = time.NewTimer(l.every)
	defer l.export.Stop()
	defer l.stopRetry()
	if reg := l.cfg.Configs; reg != nil {
		changed := make(chan struct{}, 1)
		cur := reg.Get(l.cfg.Loop)
		watchCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { // ends with watchCtx, which ends before Run returns
			defer close(done)
			for c := cur; ; {
				var err error
				if c, err = reg.Next(watchCtx, l.cfg.Loop, c); err != nil {
					return
				}
				select { // a signal already pending covers this change too
				case changed <- struct{}{}:
				default:
				}
			}
		}()
		defer func() { stop(); <-done }()
		l.confChanged = changed
		if cur != nil {
			l.follow(ctx, cur)
		}
	}
	backoff := 100 * time.Millisecond
	for {
		err := l.read(ctx)
		if ctx.Err() != nil {
			return l.exportLast()
		}
		l.log.Warn("reading joined events failed; reopening", "loop", l.cfg.Loop, "backoff", backoff, "err", err)
		if !l.idle(ctx, backoff) {
			return l.exportLast()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// idle waits for d, carrying out what comes meanwhile but reading
// nothing, and reports whether ctx is still live.
func (l *Learner) idle(ctx context.Context, d time.Duration) bool {
	wait := time.NewTimer(d)
	defer wait.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-wait.C:
			return true
		case <-l.export.C:
			l.export.Reset(l.exportNow())
		case c := <-l.cmds:
			l.command(c)
		case <-l.confChanged:
			l.configure(ctx)
		case <-l.retrainC:
			l.retrainC = nil
			l.configure(ctx)
		}
	}
}

// read learns from a reader opened at the learner's offsets until ctx ends
// or reading fails. Records fetched but not learned are dropped with the
// reader: the next one starts after the last record learned. Records
// fetched while a command or a retrain runs wait in recs and are learned
// by the model in place after it.
func (l *Learner) read(ctx context.Context) error {
	r, err := l.open(ctx, l.offsets)
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
		case <-l.export.C:
			l.addStats(&batch)
			l.export.Reset(l.exportNow())
		case c := <-l.cmds:
			l.addStats(&batch)
			l.command(c)
		case <-l.confChanged:
			l.addStats(&batch)
			l.configure(ctx)
		case <-l.retrainC:
			l.retrainC = nil
			l.addStats(&batch)
			l.configure(ctx)
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
	if !l.learnRecord(rec, batch) {
		return
	}
	batch.Examples++
	l.dirty = true
	if l.cfg.Learned != nil {
		_, cost, _, _ := l.ev.Label()
		l.cfg.Learned(rec.Key, cost)
	}
	if l.cfg.Observe != nil {
		ids, probs, ts := l.parser.Logged()
		l.cfg.Observe(&l.ev, ids, probs, ts)
	}
}

// learnRecord learns rec unless it belongs to another loop, was learned
// already or is not learnable, counting into c, and reports whether the
// model learned it. (A retrain reads [JoinedExamples] instead, which
// shares admit.)
func (l *Learner) learnRecord(rec eventlog.Record, c *Stats) bool {
	if !admit(rec, l.prefix, l.seen, c) {
		return false
	}
	l.ev.Reset()
	l.parser.CCB = l.model.Policy().CCB() // a multi-slot model reads multi-slot lines
	if err := l.parser.Parse(rec.Value, &l.ev); err != nil {
		if errors.Is(err, bandit.ErrSkip) {
			c.NotLearnable++
			return false
		}
		c.Malformed++
		l.log.Warn("skipping malformed joined event", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return false
	}
	if _, learned := l.model.Learn(&l.ev, &l.pred); !learned {
		c.NotLearnable++
		return false
	}
	c.Learned++
	return true
}

// traceContext reads W3C traceparent headers.
var traceContext propagation.TraceContext

// addStats folds batch into the shared stats and wakes waiters.
func (l *Learner) addStats(batch *Stats) {
	read := batch.Learned + batch.NotLearnable + batch.Duplicates + batch.Malformed + batch.OtherLoops
	l.stats.Update(func(s *Stats) {
		if read > 0 {
			s.Offsets = maps.Clone(l.offsets)
		}
		s.Learned += batch.Learned
		s.Examples += batch.Examples
		s.NotLearnable += batch.NotLearnable
		s.Duplicates += batch.Duplicates
		s.Malformed += batch.Malformed
		s.OtherLoops += batch.OtherLoops
	})
	*batch = Stats{}
}

// exportNow publishes a new version if anything was learned since the
// last one, and returns when to export next: after the export cadence,
// or sooner when the checkpoint could not be written.
func (l *Learner) exportNow() time.Duration {
	if !l.dirty {
		return l.every
	}
	if err := l.checkpoint(); err != nil {
		l.checkpointFailed(err)
		return l.retry
	}
	return l.every
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
		st.Learned-l.lastLearned, from, from, err)
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
	c := checkpoint{
		version: v.Info.Version, examples: v.Info.Examples, learned: uint64(st.Learned),
		created: l.created, configured: l.configured,
		offsets: l.offsets, seen: l.seen.keys(), model: v.Data,
	}
	if err := writeFileAtomic(l.checkpointPath(), c.marshal()); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	// Kept before it is published, so that whoever sees the version can
	// get it again. A version that cannot be kept is still published (its
	// checkpoint holds it): audits and rollbacks just cannot have it.
	if err := l.history.Add(v); err != nil {
		l.log.Warn("model version not kept in the history", "loop", l.cfg.Loop, "version", v.Info.Version, "err", err)
	}
	l.store.Publish(v)
	l.dirty = false
	l.lastLearned = st.Learned
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
		l.retry = min(checkpointRetryFirst, l.every)
		l.loggedAt, l.unlogged = now, 0
		l.log.Error("checkpoint not written; learning goes on in memory, servers keep the last checkpointed version",
			"loop", l.cfg.Loop, "version", l.stats.Get().Version, "retry_in", l.retry, "err", err)
		return
	}
	l.retry = min(2*l.retry, l.every, checkpointRetryMax)
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
