package app

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/loop"
	"github.com/open-personalizer/personalizer/server"
)

// Auto-optimization's settings (Personalizer's where it had them).
const (
	// autoWindow is how far back an auto-optimization run evaluates
	// the loop's joined events: the last 2 weeks.
	autoWindow = 14 * 24 * time.Hour
	// autoMaxRecords bounds a run's reading: at most the last this many
	// records of each partition of personalizer.joined (every loop's).
	autoMaxRecords = 1 << 20
	// autoKeep is how many runs a loop keeps: older ones are deleted.
	autoKeep = 24
	// autoDefaultFrequency is the frequency of a loop whose
	// autoOptimizationFrequency is 0: Personalizer's default, P28D.
	autoDefaultFrequency = 28 * 24 * time.Hour
	// autoRetry is how long a run that could not start waits to be
	// tried again; autoRecheck how long the schedule sleeps at most.
	autoRetry   = time.Minute
	autoRecheck = time.Hour
)

// autoOptimizer runs the auto-optimization of every loop whose
// configuration enables it, in the process that learns the loops (dev,
// or the learner role: one per deployment), so that exactly one process
// runs a loop's runs and applies their results straight to the loop's
// learner. A run is an evaluation of type Auto in the evaluations store
// (personalizer.evaluations, so every server lists it): a policy search
// around the loop's policy over its joined events of the last
// autoWindow, which applies the optimal policy with its model when
// autoApplies, as applyFromEvaluation does.
type autoOptimizer struct {
	reg     *loop.Registry
	evals   *evaluations
	configs *configTopic
	models  server.ModelAdmin // the learners' model imports
	now     func() time.Time  // the schedule's clock
	log     *slog.Logger
	mu      sync.Mutex // one check at a time
}

func newAutoOptimizer(configs *configTopic, evals *evaluations, models server.ModelAdmin, now func() time.Time, log *slog.Logger) *autoOptimizer {
	if now == nil {
		now = time.Now
	}
	o := &autoOptimizer{reg: configs.reg, evals: evals, configs: configs, models: models, now: now, log: log}
	evals.applyAuto = o.apply
	return o
}

// Run checks the schedule when it starts, when a loop's configuration
// changes and when the next run is due, until ctx ends. It starts once
// the evaluations store is read: the runs stored there are the schedule.
func (o *autoOptimizer) Run(ctx context.Context) error {
	select {
	case <-o.evals.ready:
	case <-ctx.Done():
		return nil
	}
	for {
		changed := o.reg.Changed()
		next := o.check(ctx)
		wait := autoRecheck
		if !next.IsZero() {
			wait = min(max(next.Sub(o.now()), 0), autoRecheck)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// check runs the due run of every loop with auto-optimization enabled,
// one after the other, and returns when the next is due (zero: none).
func (o *autoOptimizer) check(ctx context.Context) (next time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	cs := o.reg.Loops()
	slices.SortFunc(cs, func(a, b *loop.Config) int { return strings.Compare(a.Loop, b.Loop) })
	for _, c := range cs {
		svc := c.Service
		if !svc.IsAutoOptimizationEnabled || ctx.Err() != nil {
			continue
		}
		every := time.Duration(svc.AutoOptimizationFrequency)
		last := o.evals.lastAutoPeriod(c.Loop)
		period, due, n := autoSchedule(svc.AutoOptimizationStartDate, every, last, o.now())
		if due {
			if err := o.runOnce(ctx, c, period); err != nil {
				if ctx.Err() == nil {
					o.log.Warn("auto-optimization not run; trying again later", "loop", c.Loop, "period", period, "retry_in", autoRetry, "err", err)
				}
				n = o.now().Add(autoRetry)
			} else if _, again, after := autoSchedule(svc.AutoOptimizationStartDate, every, period, o.now()); again {
				n = o.now() // a period began while it ran
			} else {
				n = after
			}
		}
		if !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next
}

// autoSchedule returns whether a run is due at now, and for which
// period, or else when the next is due. The periods are start, start +
// every, start + 2·every, ... (every 0: autoDefaultFrequency); the one due
// is the latest period not after now, if it is after last, the period of
// the loop's last run (zero: none). Periods missed while no process ran
// are not caught up: only the latest runs. Without a start the periods
// start at the last run, or now when there is none.
func autoSchedule(start time.Time, every time.Duration, last, now time.Time) (period time.Time, due bool, next time.Time) {
	if every <= 0 {
		every = autoDefaultFrequency
	}
	if start.IsZero() {
		if last.IsZero() {
			return now, true, time.Time{}
		}
		start = last
	}
	if now.Before(start) {
		return time.Time{}, false, start
	}
	p := start.Add(now.Sub(start) / every * every)
	if p.After(last) {
		return p, true, time.Time{}
	}
	return time.Time{}, false, p.Add(every)
}

// runOnce runs loop c's auto-optimization of period and waits for its
// end, then deletes the loop's runs beyond the newest autoKeep.
func (o *autoOptimizer) runOnce(ctx context.Context, c *loop.Config, period time.Time) error {
	e := o.evals
	e.mu.Lock()
	runCtx := e.runCtx
	e.mu.Unlock()
	if runCtx == nil {
		return fmt.Errorf("evaluations are not followed yet")
	}
	now := o.now().UTC()
	from := now.Add(-autoWindow)
	start, err := kafkalog.OffsetsAt(ctx, e.brokers, eventlog.JoinedTopic, from)
	if err != nil {
		return fmt.Errorf("find the joined events since %v: %w", from, err)
	}
	end, err := kafkalog.EndOffsets(ctx, e.brokers, eventlog.JoinedTopic)
	if err != nil {
		return fmt.Errorf("find the end of the joined events: %w", err)
	}
	for p, off := range start {
		start[p] = max(off, end[p]-autoMaxRecords)
	}
	contract := server.EvaluationContract{Name: "Auto-optimization " + period.UTC().Format(time.RFC3339), StartTime: from, EndTime: now,
		EnableOfflineExperimentation: true, Current: c.Policy.Arguments}
	r, err := newEvalRecord(c.Loop, contract, c.Policy.Arguments, server.EvaluationAuto, now)
	if err != nil {
		return err
	}
	r.Period = period.UTC()
	if err := autoFits(r); err != nil {
		// Recorded as failed, so that the period is not tried again.
		r.Status, r.Error = server.EvaluationFailed, err.Error()
		if err := e.write(ctx, r); err != nil {
			return fmt.Errorf("store auto-optimization: %w", err)
		}
		return e.await(ctx, evalKey(r.Loop, r.ID), func(cur *evalRecord) bool { return cur != nil })
	}
	done, err := e.launch(ctx, runCtx, r, start, end)
	if err != nil {
		return err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return o.prune(ctx, c.Loop)
}

// autoFits refuses a run whose searched policies' models would take
// together more than the largest model a process takes (the limit of a
// manual search).
func autoFits(r *evalRecord) error {
	var total int64
	for _, p := range r.PolicyResults[3:] {
		pol, err := bandit.ParsePolicy(p.Arguments)
		if err != nil {
			return err
		}
		total += pol.WeightBytes()
	}
	if total > server.DefaultMaxModelBytes {
		return fmt.Errorf("the %d searched policies' models take %d bytes together, over the limit of %d bytes: use fewer bits (-b)",
			len(r.PolicyResults)-3, total, server.DefaultMaxModelBytes)
	}
	return nil
}

// prune deletes loop's auto-optimization runs but the newest autoKeep.
func (o *autoOptimizer) prune(ctx context.Context, name string) error {
	runs := o.evals.autoRuns(name)
	for _, r := range runs[:max(len(runs)-autoKeep, 0)] {
		if err := o.evals.Delete(ctx, name, r.ID); err != nil {
			return fmt.Errorf("delete auto-optimization %s: %w", r.ID, err)
		}
	}
	return nil
}

// apply applies p with its model to loop name as applyFromEvaluation
// does: the model imported first, then the policy set, so that the
// learner continues from the model instead of retraining.
func (o *autoOptimizer) apply(ctx context.Context, name string, p loop.Policy, model []byte) error {
	if _, err := o.models.ImportModel(ctx, name, model); err != nil {
		return fmt.Errorf("import the model: %w", err)
	}
	cur := o.reg.Get(name)
	if cur == nil {
		return fmt.Errorf("loop %q: %w", name, loop.ErrNotFound)
	}
	next, err := cur.SetPolicy(p, o.now())
	if err != nil {
		return err
	}
	if err := o.configs.Put(ctx, next); err != nil {
		return fmt.Errorf("store configuration version %d: %w", next.Version, err)
	}
	return nil
}

// autoApplies is auto-optimization's rule, Personalizer's: apply the
// optimal policy only if its estimated reward is higher than Online's
// and the lower end of its 95% interval is above Online's. The estimate
// and interval are those the search picks by: Cressie-Read's (see
// evaluate.SearchBound), valid with heavy importance weights.
func autoApplies(online, best evaluate.Summary) bool {
	om, ol, ok1 := crEstimate(online)
	bm, bl, ok2 := crEstimate(best)
	return ok1 && ok2 && bm > om && bl > ol
}

// crEstimate returns the Cressie-Read estimate of s and the lower end of
// its interval, if defined.
func crEstimate(s evaluate.Summary) (value, lower float64, ok bool) {
	if e := evaluate.CREstimate(s); e != nil && e.Value != nil && e.Robust != nil {
		return *e.Value, e.Robust.Lower, true
	}
	return 0, 0, false
}

// finishAuto decides the outcome of final, an auto-optimization run
// whose search found res, and applies its optimal policy when the rule
// says so.
func (e *evaluations) finishAuto(ctx context.Context, final *evalRecord, res *evaluate.SearchResult) {
	final.Status = server.EvaluationOnlinePolicyRetained
	if res.Best < 0 || !autoApplies(res.Policies[0].TotalSummary, res.Policies[res.Best].TotalSummary) {
		return
	}
	best := res.Policies[res.Best]
	if e.applyAuto == nil {
		final.Status, final.Error = server.EvaluationFailed, "no learner in this process to apply the optimal policy to"
		return
	}
	if err := e.applyAuto(ctx, final.Loop, loop.Policy{Name: best.Name, Arguments: best.Arguments}, modelFile(res.Models[res.Best-3])); err != nil {
		final.Status, final.Error = server.EvaluationFailed, "apply the optimal policy: "+err.Error()
		return
	}
	final.Status = server.EvaluationOptimalPolicyApplied
}

// autoRuns returns loop's auto-optimization runs, by period.
func (e *evaluations) autoRuns(name string) []*evalRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*evalRecord
	for _, r := range e.all {
		if r.Loop == name && r.EvaluationType == server.EvaluationAuto {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *evalRecord) int {
		if c := a.Period.Compare(b.Period); c != 0 {
			return c
		}
		return a.CreationTime.Compare(b.CreationTime)
	})
	return out
}

// lastAutoPeriod returns the period of loop's last auto-optimization
// run, zero if none.
func (e *evaluations) lastAutoPeriod(name string) time.Time {
	runs := e.autoRuns(name)
	if len(runs) == 0 {
		return time.Time{}
	}
	return runs[len(runs)-1].Period
}
