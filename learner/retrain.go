package learner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/loop"
)

// Retrain retries and progress. A retrain that failed is tried again
// after retrainRetryFirst, then after twice as long each time, up to
// retrainRetryMax. A retrain logs its progress every retrainLogEvery or
// retrainLogExamples examples, whichever comes first.
const (
	retrainRetryFirst  = 5 * time.Second
	retrainRetryMax    = 5 * time.Minute
	retrainLogEvery    = 5 * time.Second
	retrainLogExamples = 10_000
)

// configure follows the loop's current configuration, if the registry
// has one (a deleted loop keeps the configuration last followed).
func (l *Learner) configure(ctx context.Context) {
	if c := l.cfg.Configs.Get(l.cfg.Loop); c != nil {
		l.follow(ctx, c)
	} else if l.conf != nil {
		l.follow(ctx, l.conf)
	}
}

// follow applies configuration c: its export cadence at once, and its
// policy, when the model follows another, by a policy change.
func (l *Learner) follow(ctx context.Context, c *loop.Config) {
	if c != l.conf {
		l.conf = c
		if every := time.Duration(c.Service.ModelExportFrequency); every > 0 && every != l.every {
			l.log.Info("model export frequency changed", "loop", l.cfg.Loop, "from", l.every, "to", every, "config_version", c.Version)
			l.every = every
			l.stats.Update(func(s *Stats) { s.ExportEvery = every })
			// While checkpoints fail, the retry schedule decides; it
			// takes the new cadence into account from its next step.
			if l.streak == 0 {
				l.export.Reset(every)
			}
		}
	}
	args := c.Policy.Arguments
	switch {
	case args == l.configured:
		return
	case args == l.model.Policy().String():
		// The model follows it already: an import brought it.
		l.configured = args
		return
	}
	l.changePolicy(ctx, c)
}

// changePolicy retrains a model of c's policy and swaps it in, or, when
// the retrain cannot read, keeps the model and schedules another try.
func (l *Learner) changePolicy(ctx context.Context, c *loop.Config) {
	l.stopRetry()
	args := c.Policy.Arguments
	policy, err := bandit.ParsePolicy(args)
	if err != nil {
		// The loop package validates policies before they are set: a
		// policy this learner cannot parse waits for the next change.
		l.log.Error("configured policy not valid; keeping the current model", "loop", l.cfg.Loop, "config_version", c.Version, "err", err)
		return
	}
	began := l.now()
	from := l.model.Policy().String()
	l.log.Info("policy change: retraining", "loop", l.cfg.Loop, "config_version", c.Version, "from", from, "to", args,
		"window", l.cfg.RetrainWindow, "until_offsets", l.offsets)
	l.stats.Update(func(s *Stats) { s.Retraining, s.RetrainLearned = true, 0 })
	m, n, err := l.retrain(ctx, policy, began)
	took := l.now().Sub(began)
	l.stats.Update(func(s *Stats) {
		s.Retraining, s.RetrainLearned = false, n.Learned
		if err != nil && ctx.Err() == nil {
			s.RetrainFailures++
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			l.log.Info("policy change: retraining stopped", "loop", l.cfg.Loop, "examples", n.Learned, "duration", took)
			return
		}
		l.retrainDelay = min(max(2*l.retrainDelay, retrainRetryFirst), retrainRetryMax)
		l.retrainTimer = time.NewTimer(l.retrainDelay)
		l.retrainC = l.retrainTimer.C
		l.log.Warn("policy change: retraining failed; the current model and policy stay", "loop", l.cfg.Loop,
			"config_version", c.Version, "examples", n.Learned, "duration", took, "retry_in", l.retrainDelay, "err", err)
		return
	}
	l.retrainDelay = 0
	l.swap(m, n.Learned)
	l.configured = args
	l.stats.Update(func(s *Stats) { s.PolicyChanges++ })
	l.log.Info("policy change: retrained", "loop", l.cfg.Loop, "config_version", c.Version, "from", from, "to", args,
		"examples", n.Learned, "duplicates", n.Duplicates, "not_learnable", n.NotLearnable, "malformed", n.Malformed,
		"other_loops", n.OtherLoops, "duration", took)
	if err := l.checkpoint(); err != nil {
		// As for learning: the model stays in memory and is published
		// once a checkpoint is written.
		l.checkpointFailed(err)
		l.export.Reset(l.retry)
	}
}

// stopRetry cancels the scheduled retry of a failed retrain, if any.
func (l *Learner) stopRetry() {
	if l.retrainTimer != nil {
		l.retrainTimer.Stop()
		l.retrainTimer, l.retrainC = nil, nil
	}
}

// retrain trains a new model of policy over the joined records from
// now-RetrainWindow up to the offsets the learner has learned, with a
// dedupe set of its own, and counts what it read. It runs an [Engine] on
// [JoinedExamples], reporting to a [retrainReport].
func (l *Learner) retrain(ctx context.Context, policy *bandit.Policy, now time.Time) (m *bandit.Model, n Stats, err error) {
	m = bandit.NewModel(policy)
	if l.cfg.RetrainWindow <= 0 || l.cfg.OffsetsAt == nil {
		return m, n, nil
	}
	since := now.Add(-l.cfg.RetrainWindow)
	start, err := l.cfg.OffsetsAt(ctx, since)
	if err != nil {
		return nil, n, fmt.Errorf("find the joined events since %v: %w", since, err)
	}
	src, err := OpenJoined(ctx, l.open, l.cfg.Loop, start, l.offsets, l.cfg.Remember)
	if err != nil {
		return nil, n, err
	}
	defer src.Close()
	eng := &Engine{Model: m}
	s, err := eng.Run(ctx, src, &retrainReport{l: l, src: src, began: now, loggedAt: now})
	n = src.Skipped()
	n.Learned, n.Malformed = s.Labeled, int64(s.Malformed)
	n.NotLearnable = int64(s.Dropped) + s.Examples - s.Labeled
	if err != nil {
		return nil, n, err
	}
	return m, n, nil
}

// retrainReport is the [Report] of a retrain: it logs malformed lines,
// and the progress every retrainLogEvery or retrainLogExamples examples,
// and keeps [Stats.RetrainLearned] up to date.
type retrainReport struct {
	l        *Learner
	src      *JoinedExamples
	began    time.Time
	logged   int64 // examples learned when progress was last logged
	loggedAt time.Time
}

func (r *retrainReport) Example(s *Step) error {
	l, c := r.l, s.Counts
	if s.Err != nil && !errors.Is(s.Err, bandit.ErrSkip) {
		l.log.Warn("skipping malformed joined event", "partition", s.At.Partition, "offset", s.At.Offset, "err", s.Err)
	}
	learned := c.Labeled
	if learned-r.logged >= retrainLogExamples || (c.Examples+int64(c.Dropped+c.Malformed))%256 == 0 {
		l.stats.Update(func(s *Stats) { s.RetrainLearned = learned })
		if t := l.now(); learned-r.logged >= retrainLogExamples || t.Sub(r.loggedAt) >= retrainLogEvery {
			l.log.Info("policy change: retraining", "loop", l.cfg.Loop, "examples", learned, "duration", t.Sub(r.began),
				"partitions_left", r.src.PartitionsLeft())
			r.logged, r.loggedAt = learned, t
		}
	}
	return nil
}

func (r *retrainReport) BestPass(*bandit.Model) error { return nil } // one pass: never called
func (r *retrainReport) Done(*Summary) error          { return nil }

// JoinedExamples reads one loop's records of personalizer.joined from
// start offsets up to end offsets, and drops repeats of a key it has
// read: the examples of a policy change's retrain.
type JoinedExamples struct {
	r       eventlog.Reader // nil when there is nothing to read
	end     map[int]int64   // the partitions still to read, and where each ends
	left    atomic.Int64    // len(end), for reports in other goroutines
	prefix  []byte          // loop + "/"
	seen    *dedupe
	skipped Stats // Duplicates and OtherLoops
}

// OpenJoined opens the records of loop in personalizer.joined, by
// partition from start up to end (excluded), with open. A partition
// missing from start or whose end is not after its start has nothing to
// read. The examples remember the last remember keys to drop repeats.
func OpenJoined(ctx context.Context, open Open, loop string, start, end map[int]int64, remember int) (*JoinedExamples, error) {
	j := &JoinedExamples{end: map[int]int64{}, prefix: []byte(loop + "/"), seen: newDedupe(remember)}
	for p, off := range start {
		if e := end[p]; off < e {
			j.end[p] = e
		}
	}
	j.left.Store(int64(len(j.end)))
	if len(j.end) == 0 {
		return j, nil
	}
	r, err := open(ctx, start)
	if err != nil {
		return nil, fmt.Errorf("open joined events: %w", err)
	}
	j.r = r
	return j, nil
}

// Next returns the next record of the loop, not a repeat, before its
// partition's end, or io.EOF once every partition reached its end.
func (j *JoinedExamples) Next(ctx context.Context) (Example, error) {
	for len(j.end) > 0 {
		rec, err := j.r.Fetch(ctx)
		if err != nil {
			return Example{}, fmt.Errorf("read joined events: %w", err)
		}
		e, ok := j.end[rec.Partition]
		switch {
		case !ok: // a partition done, or with nothing to read
			continue
		case rec.Offset >= e:
			j.done(rec.Partition)
			continue
		case rec.Offset+1 == e:
			j.done(rec.Partition)
		}
		if admit(rec, j.prefix, j.seen, &j.skipped) {
			return Example{Data: rec.Value, At: Where{Partition: rec.Partition, Offset: rec.Offset}}, nil
		}
	}
	return Example{}, io.EOF
}

func (j *JoinedExamples) done(partition int) {
	delete(j.end, partition)
	j.left.Store(int64(len(j.end)))
}

// PartitionsLeft returns how many partitions are still to be read. It
// may be called from any goroutine.
func (j *JoinedExamples) PartitionsLeft() int { return int(j.left.Load()) }

// Skipped returns the counts of the records Next skipped: Duplicates and
// OtherLoops. It must not be called while Next runs: after
// [Engine.Run], say.
func (j *JoinedExamples) Skipped() Stats { return j.skipped }

// Close closes the reader.
func (j *JoinedExamples) Close() error {
	if j.r == nil {
		return nil
	}
	return j.r.Close()
}

// admit reports whether rec is a record of the loop whose keys start with
// prefix, and new to seen, which then remembers its key; it counts the
// other records in c. Live learning and retrains share it.
func admit(rec eventlog.Record, prefix []byte, seen *dedupe, c *Stats) bool {
	switch {
	case !bytes.HasPrefix(rec.Key, prefix):
		c.OtherLoops++
		return false
	case !seen.add(rec.Key):
		c.Duplicates++
		return false
	}
	return true
}
