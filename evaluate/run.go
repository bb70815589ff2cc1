package evaluate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

// evaluator is one evaluation's state. The goroutine that runs it owns
// everything but the batches in flight and, during a batch's parallel
// step, the reward model and each custom model (owned by the worker that
// learns it).
type evaluator struct {
	cfg    Config
	pols   []Policy
	custom []*customModel
	reward rewardModel

	counts     Counts
	progress   Progress
	total      []sums // by policy
	buckets    []*bucket
	bucketAt   map[int64]int
	tmin, tmax int64 // event times seen (Unix ns)
	hasTime    bool

	ev     Event                  // for OnEvent
	fixed  [3][]bandit.ActionProb // Online's, Baseline's and Random's PMF of the event being added
	keepPM bool                   // OnEvent wants the PMFs
}

type bucket struct {
	start int64 // Unix ns
	sums  []sums
}

// customModel is a custom policy's model and its PMFs for the batch
// being evaluated.
type customModel struct {
	m    *bandit.Model
	pred bandit.Prediction
	pmfs [][]bandit.ActionProb // by batch item
	// without, if set, is a feature the model learns and scores every
	// event without (feature importance), through a copy of the event.
	without *bandit.FeatureKey
	copy    bandit.Event
}

// rewardModel is the reward model of DR and the range of the rewards it
// has seen.
type rewardModel struct {
	m          *bandit.Model
	pred       bandit.Prediction
	scores     []float32
	rmin, rmax float64
}

// polOut is a policy's terms for one event: its importance weight and DR
// term, and its PMF.
type polOut struct {
	w, d float64
	pmf  []bandit.ActionProb
}

// Items travel from the reader to the evaluator in batches, which come
// back to be refilled.
const (
	batches   = 4
	batchSize = 64
)

type batch struct {
	items []item
	n     int
}

// item is one line: its event and logged decision, or why it was skipped.
type item struct {
	ev    bandit.Event
	at    learner.Where
	err   error
	bytes int
	ids   []int
	probs []float32
	ts    []byte // "Timestamp"
	hasTS bool

	// Set by the evaluator.
	state  int
	chosen int
	r      float64 // reward
	p      float64 // logged probability of chosen, before subsampling
	c      float64 // count, 1/(1-pdrop)
	t      int64   // Unix ns
	hasT   bool
	rhat   []float64 // the reward model's estimate per action
}

// Item states.
const (
	skipped   = iota // not learned, not evaluated
	learnOnly        // learned (as VW does) but not evaluated
	evaluated
)

func newEvaluator(cfg Config) (*evaluator, error) { return newEvaluatorLimit(cfg, MaxCustom) }

// newEvaluatorLimit allows up to limit custom policies (more than
// MaxCustom for a search only).
func newEvaluatorLimit(cfg Config, limit int) (*evaluator, error) {
	if cfg.Bucket < 0 {
		return nil, fmt.Errorf("bucket %v must not be negative", cfg.Bucket)
	}
	if cfg.RewardMin == 0 && cfg.RewardMax == 0 {
		cfg.RewardMin, cfg.RewardMax = 0, 1
	}
	if !(cfg.RewardMin < cfg.RewardMax) {
		return nil, fmt.Errorf("reward range [%v, %v] is empty", cfg.RewardMin, cfg.RewardMax)
	}
	pols, parsed, err := policies(cfg.Custom, limit)
	if err != nil {
		return nil, err
	}
	rp, err := bandit.ParsePolicy(RewardModelPolicy)
	if err != nil {
		return nil, err
	}
	e := &evaluator{
		cfg: cfg, pols: pols, bucketAt: map[int64]int{}, keepPM: cfg.OnEvent != nil,
		reward: rewardModel{m: bandit.NewModel(rp), rmin: cfg.RewardMin, rmax: cfg.RewardMax},
	}
	for _, p := range parsed {
		e.custom = append(e.custom, &customModel{m: bandit.NewModel(p), pmfs: make([][]bandit.ActionProb, batchSize)})
	}
	e.total = e.newSums()
	e.ev.PMF = make([][]bandit.ActionProb, len(pols))
	return e, nil
}

func (e *evaluator) newSums() []sums {
	s := make([]sums, len(e.pols))
	for i := range s {
		s[i] = newSums(e.cfg.RewardMin, e.cfg.RewardMax)
	}
	return s
}

// run reads src on one goroutine while this one evaluates.
func (e *evaluator) run(ctx context.Context, src learner.Examples) (*Result, error) {
	full, free := make(chan *batch, batches), make(chan *batch, batches)
	for range batches {
		free <- &batch{items: make([]item, batchSize)}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return read(gctx, src, full, free) })
	g.Go(func() error {
		for {
			var b *batch
			var ok bool
			select {
			case b, ok = <-full:
			case <-gctx.Done():
				return gctx.Err()
			}
			if !ok {
				return nil
			}
			if err := gctx.Err(); err != nil { // select picks at random when both are ready
				return err
			}
			e.batch(b)
			free <- b
		}
	})
	if err := g.Wait(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	if e.cfg.Progress != nil {
		e.cfg.Progress(e.progress)
	}
	if e.counts.Evaluated == 0 {
		return nil, fmt.Errorf("no event to evaluate in %d lines (%s)", e.counts.Lines, e.counts.describe())
	}
	return e.finish(), nil
}

// describe says what the lines were.
func (c *Counts) describe() string {
	s := fmt.Sprintf("%d _skipLearn, %d without actions, %d without a label, %d without a logged decision, %d malformed",
		c.SkipLearn, c.Dropped, c.Unlabeled, c.NoDecision, c.Malformed)
	if len(c.Errors) > 0 {
		s += "; first: " + c.Errors[0]
	}
	return s
}

// read parses src's lines into batches. It owns the parser and src.
func read(ctx context.Context, src learner.Examples, full chan<- *batch, free <-chan *batch) error {
	defer close(full)
	var parser bandit.DSJSONParser
	var b *batch
	for {
		if b == nil {
			select {
			case b = <-free:
				b.n = 0
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		x, err := src.Next(ctx)
		if err != nil && err != io.EOF {
			return err
		}
		if err == nil {
			it := &b.items[b.n]
			it.at, it.bytes = x.At, len(x.Data)+1
			it.err = parser.Parse(x.Data, &it.ev)
			ids, probs, ts := parser.Logged()
			it.ids, it.probs = append(it.ids[:0], ids...), append(it.probs[:0], probs...)
			it.ts, it.hasTS = append(it.ts[:0], ts...), ts != nil
			b.n++
		}
		if b.n > 0 && (err == io.EOF || b.n == len(b.items)) {
			select {
			case full <- b:
				b = nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// batch evaluates a batch: first the logged decisions, in order, then
// the reward model and the custom models learn in parallel, then the
// policies' terms are added up in order.
func (e *evaluator) batch(b *batch) {
	items := b.items[:b.n]
	for i := range items {
		e.prepare(&items[i])
	}
	e.learn(items)
	for i := range items {
		it := &items[i]
		e.progress.Lines++
		e.progress.Bytes += int64(it.bytes)
		if it.state == evaluated {
			e.add(it, i)
		}
		if e.cfg.Progress != nil && e.progress.Lines%ProgressEvery == 0 {
			e.cfg.Progress(e.progress)
		}
	}
}

// skip counts a line that is not evaluated, explaining malformed ones.
func (e *evaluator) skip(it *item, noDecision bool, why error) {
	c := &e.counts
	switch {
	case noDecision:
		c.NoDecision++
	case errors.Is(why, bandit.ErrSkipLearn):
		c.SkipLearn++
		return
	case errors.Is(why, bandit.ErrSkip):
		c.Dropped++
		return
	default:
		c.Malformed++
	}
	if len(c.Errors) < MaxErrors {
		at := fmt.Sprintf("record %d/%d", it.at.Partition, it.at.Offset)
		if it.at.Line > 0 {
			at = fmt.Sprintf("line %d", it.at.Line)
		}
		c.Errors = append(c.Errors, fmt.Sprintf("%s: %v", at, why))
	}
}

// prepare classifies an item, reads its logged decision and learns the
// reward model from it.
func (e *evaluator) prepare(it *item) {
	e.counts.Lines++
	it.state = skipped
	if it.err != nil {
		e.skip(it, false, it.err)
		return
	}
	it.state = learnOnly
	ev := &it.ev
	chosen, cost, prob, ok := ev.Label()
	if !ok || ev.Validate() != nil {
		e.counts.Unlabeled++
		return
	}
	if err := e.decision(it, chosen); err != nil {
		e.skip(it, true, err)
		return
	}
	it.state, it.chosen = evaluated, chosen
	it.r = 0 - float64(cost) // not -cost: a cost of 0 is a reward of +0
	it.c = float64(ev.Weight())
	it.p = float64(prob) * it.c // _label_probability is p·(1-pdrop)
	e.counts.Evaluated++
}

// decision checks the logged "a" and "p" and reads the "Timestamp".
func (e *evaluator) decision(it *item, chosen int) error {
	n := it.ev.NumActions()
	if len(it.ids) != len(it.probs) {
		return fmt.Errorf(`"a" has %d actions but "p" %d probabilities`, len(it.ids), len(it.probs))
	}
	found := false
	for k, id := range it.ids {
		if id < 1 || id > n {
			return fmt.Errorf(`"a" names action %d of %d`, id, n)
		}
		if p := it.probs[k]; !(p >= 0 && p <= 1) {
			return fmt.Errorf(`"p" has probability %v`, p)
		}
		found = found || id-1 == chosen
	}
	if !found {
		return fmt.Errorf(`the chosen action %d is not in "a"`, chosen+1)
	}
	it.hasT = it.hasTS
	if it.hasT {
		t, err := time.Parse(time.RFC3339Nano, string(it.ts))
		if err != nil {
			return fmt.Errorf(`"Timestamp" %q is not an RFC 3339 time`, it.ts)
		}
		it.t = t.UnixNano()
	} else if e.cfg.Bucket > 0 {
		return errors.New(`no "Timestamp" to bucket the event by`)
	}
	return nil
}

// learn runs the models on the batch: the reward model and each custom
// model, divided among workers.
func (e *evaluator) learn(items []item) {
	jobs := 1 + len(e.custom)
	job := func(j int) {
		if j == 0 {
			e.reward.learn(items)
		} else {
			e.custom[j-1].learn(items)
		}
	}
	workers := e.cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, jobs)
	if workers <= 1 {
		for j := range jobs {
			job(j)
		}
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := w; j < jobs; j += workers {
				job(j)
			}
		}()
	}
	wg.Wait()
}

// learn makes the reward model predict the evaluated events of the
// batch, then learn each.
func (r *rewardModel) learn(items []item) {
	for i := range items {
		it := &items[i]
		if it.state != evaluated {
			continue
		}
		r.m.Process(&it.ev, &r.pred, bandit.ModeLearn) // keeps the scores before learning
		r.scores = r.pred.Scores(r.scores[:0])
		it.rhat = it.rhat[:0]
		for _, s := range r.scores {
			it.rhat = append(it.rhat, clamp(-float64(s), r.rmin, r.rmax))
		}
		r.rmin, r.rmax = min(r.rmin, it.r), max(r.rmax, it.r)
	}
}

// learn is the learner's trainer for one model (bandit.Model.Process in
// VW's learn mode), keeping the PMFs of the evaluated events.
func (cm *customModel) learn(items []item) {
	for i := range items {
		it := &items[i]
		if it.state == skipped {
			continue
		}
		ev := &it.ev
		if cm.without != nil && ev.CopyWithout(&cm.copy, *cm.without) {
			ev = &cm.copy
		}
		cm.m.Process(ev, &cm.pred, bandit.ModeLearn)
		if it.state == evaluated {
			cm.pmfs[i] = append(cm.pmfs[i][:0], cm.pred.PMF()...)
		}
	}
}

// terms returns a policy's importance weight and DR term for an item,
// given its PMF.
func terms(pmf []bandit.ActionProb, it *item) polOut {
	var pi, sum float64
	for _, ap := range pmf {
		if ap.Action == it.chosen {
			pi += float64(ap.Prob)
		}
		sum += float64(ap.Prob) * it.rhat[ap.Action]
	}
	w := pi / it.p
	return polOut{w: w, d: sum + w*(it.r-it.rhat[it.chosen]), pmf: pmf}
}

// add adds an evaluated item, the i-th of its batch, to every policy's
// sums.
func (e *evaluator) add(it *item, i int) {
	var bs []sums
	if it.hasT {
		if !e.hasTime {
			e.tmin, e.tmax, e.hasTime = it.t, it.t, true
		}
		e.tmin, e.tmax = min(e.tmin, it.t), max(e.tmax, it.t)
	}
	if e.cfg.Bucket > 0 {
		size := int64(e.cfg.Bucket)
		start := it.t - it.t%size
		if it.t%size < 0 {
			start -= size
		}
		k, ok := e.bucketAt[start]
		if !ok {
			k = len(e.buckets)
			e.bucketAt[start] = k
			e.buckets = append(e.buckets, &bucket{start: start, sums: e.newSums()})
		}
		bs = e.buckets[k].sums
	}
	for p := range e.pols {
		var o polOut
		if p < len(e.fixed) {
			o = e.fixedPolicy(p, it)
		} else {
			o = terms(e.custom[p-len(e.fixed)].pmfs[i], it)
		}
		e.total[p].add(it.c, o.w, it.r, o.d)
		if bs != nil {
			bs[p].add(it.c, o.w, it.r, o.d)
		}
		if e.keepPM {
			e.ev.PMF[p] = o.pmf
		}
	}
	e.progress.Evaluated++
	if e.cfg.OnEvent != nil {
		ev := &e.ev
		ev.At, ev.Chosen, ev.Reward, ev.Prob, ev.Count, ev.RewardEstimates = it.at, it.chosen, it.r, it.p, it.c, it.rhat
		ev.Time = time.Time{}
		if it.hasT {
			ev.Time = time.Unix(0, it.t).UTC()
		}
		e.cfg.OnEvent(ev)
	}
}

// fixedPolicy computes the terms of Online (p = 0), Baseline (1) or
// Random (2) for an item.
func (e *evaluator) fixedPolicy(p int, it *item) polOut {
	pmf := e.fixed[p][:0]
	switch p {
	case 0: // the logged PMF: "p" aligned with "a"
		for k, id := range it.ids {
			pmf = append(pmf, bandit.ActionProb{Action: id - 1, Prob: it.probs[k]})
		}
	case 1: // the first action of "_multi"
		pmf = append(pmf, bandit.ActionProb{Action: 0, Prob: 1})
	case 2:
		n := it.ev.NumActions()
		for a := range n {
			pmf = append(pmf, bandit.ActionProb{Action: a, Prob: float32(1 / float64(n))})
		}
	}
	e.fixed[p] = pmf
	if p != 2 {
		return terms(pmf, it)
	}
	// Random's probability exactly, not rounded to float32.
	prob := 1 / float64(len(pmf))
	var sum float64
	for _, v := range it.rhat {
		sum += prob * v
	}
	w := prob / it.p
	return polOut{w: w, d: sum + w*(it.r-it.rhat[it.chosen]), pmf: pmf}
}
