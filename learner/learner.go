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

// Stats are a learner's counters.
type Stats struct {
	Version      uint64 // latest published model version
	Learned      int64  // examples learned, all time (survives restarts)
	NotLearnable int64  // joined events marked _skipLearn
	Duplicates   int64  // joined events dropped as repeats
	Malformed    int64  // joined lines that did not parse
	OtherLoops   int64  // records of other loops, skipped
}

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
func (l *Learner) Run(ctx context.Context, open Open) error {
	export := time.NewTicker(l.cfg.ExportEvery)
	defer export.Stop()
	backoff := 100 * time.Millisecond
	for {
		err := l.read(ctx, open, export.C)
		var failed exportError
		switch {
		case ctx.Err() != nil:
			return l.export()
		case errors.As(err, &failed):
			return failed.err
		}
		l.log.Warn("reading joined events failed; reopening", "loop", l.cfg.Loop, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return l.export()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// exportError is a failed export, which ends Run.
type exportError struct{ err error }

func (e exportError) Error() string { return e.err.Error() }

// read learns from a reader opened at the learner's offsets until ctx ends
// or reading fails. Records fetched but not learned are dropped with the
// reader: the next one starts after the last record learned.
func (l *Learner) read(ctx context.Context, open Open, export <-chan time.Time) error {
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
		case <-export:
			l.addStats(&batch)
			if err := l.export(); err != nil {
				return exportError{err}
			}
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

// export publishes and checkpoints the model if anything was learned since
// the last export.
func (l *Learner) export() error {
	if !l.dirty {
		return nil
	}
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
	l.stats.Update(func(s *Stats) { s.Version = st.Version })
	l.log.Info("model published", "loop", l.cfg.Loop, "version", v.Info.Version, "examples", v.Info.Examples)
	return nil
}
