package learner

import (
	"context"
	"fmt"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
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
// dedupe set of its own, counting into n.
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
	// end holds the partitions still to read and where each ends: the
	// records the live learner learned. A partition it learned nothing
	// of has nothing to retrain.
	end := map[int]int64{}
	for p, off := range start {
		if e := l.offsets[p]; off < e {
			end[p] = e
		}
	}
	if len(end) == 0 {
		return m, n, nil
	}
	r, err := l.open(ctx, start)
	if err != nil {
		return nil, n, fmt.Errorf("open joined events: %w", err)
	}
	defer r.Close()
	seen := newDedupe(l.cfg.Remember)
	logged, loggedAt := int64(0), now
	for len(end) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, n, err
		}
		rec, err := r.Fetch(ctx)
		if err != nil {
			return nil, n, fmt.Errorf("read joined events: %w", err)
		}
		e, ok := end[rec.Partition]
		switch {
		case !ok: // a partition done, or with nothing to retrain
			continue
		case rec.Offset >= e:
			delete(end, rec.Partition)
			continue
		case rec.Offset+1 == e:
			delete(end, rec.Partition)
		}
		l.learnInto(m, seen, rec, &n)
		if n.Learned-logged >= retrainLogExamples || (n.Learned+n.Duplicates+n.NotLearnable+n.Malformed+n.OtherLoops)%256 == 0 {
			l.stats.Update(func(s *Stats) { s.RetrainLearned = n.Learned })
			if t := l.now(); n.Learned-logged >= retrainLogExamples || t.Sub(loggedAt) >= retrainLogEvery {
				l.log.Info("policy change: retraining", "loop", l.cfg.Loop, "examples", n.Learned, "duration", t.Sub(now), "partitions_left", len(end))
				logged, loggedAt = n.Learned, t
			}
		}
	}
	return m, n, nil
}
