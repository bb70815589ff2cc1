package learner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"golang.org/x/sync/errgroup"

	"github.com/open-personalizer/personalizer/bandit"
)

// Examples is a source of DSJson lines for an [Engine]: a file
// ([FileExamples]) or a time range of personalizer.joined
// ([JoinedExamples]).
type Examples interface {
	// Next returns the next line, or io.EOF after the last one. The
	// line's Data is valid until the next call.
	Next(ctx context.Context) (Example, error)
}

// Rewinder is a source of [Examples] that can be read again from its
// start: an [Engine] needs one for several passes.
type Rewinder interface {
	Examples
	// Rewind makes Next start again from the first line.
	Rewind() error
}

// Example is one line of a source of [Examples].
type Example struct {
	Data []byte // one DSJson line
	At   Where
}

// Where tells where a line comes from, for warnings: a line of a file or
// a record of personalizer.joined.
type Where struct {
	Line      int   // the 1-based line number in a file; 0 for a record
	Partition int   // the record's partition and offset
	Offset    int64 //
}

// Report receives what an [Engine] does, in order, from the goroutine
// that learns: [Train] prints VW's progress table, -p predictions and
// summary from it, a policy change's retrain logs its progress. An error
// it returns ends the run with that error.
type Report interface {
	// Example reports one line: the example the model predicted, and
	// learned unless testing or held out, or, with s.Err set, why the
	// line was skipped. s and what it points to are valid only during
	// the call.
	Example(s *Step) error
	// BestPass reports that the pass that just ended has the best
	// holdout loss so far: VW keeps m as it stands. It is called only
	// with a holdout set (several passes).
	BestPass(m *bandit.Model) error
	// Done reports the summary, once all passes are made. It is not
	// called when the run fails.
	Done(s *Summary) error
}

// Step is one line an [Engine] processed, for a [Report].
type Step struct {
	At   Where
	Pass int // 0-based
	// Err, when set, is why the line was skipped: it wraps
	// bandit.ErrSkip for events VW drops (bandit.ErrSkipLearn for
	// "_skipLearn" ones), else the line is malformed. Only At, Pass and
	// Counts are then set.
	Err     error
	Event   *bandit.Event
	Pred    *bandit.Prediction // the model's prediction for Event
	Loss    float64            // VW's loss for Event, 0 without a label
	Labeled bool               // Event had a valid label
	HeldOut bool               // Event is in the holdout set: not counted in Counts' examples
	Counts  *Counts            // the counts so far, this line included
}

// Counts are the counters of an [Engine] run, VW's shared_data.
type Counts struct {
	Examples         int64   // events predicted and counted (VW's "number of examples"; held-out events excluded)
	Labeled          int64   // of them, those with a label: the model learned them unless testing
	WeightedExamples float64 // their total weight
	WeightedLabeled  float64 // the weight of the labelled ones
	SumLoss          float64 // their total loss (VW's sum_loss)
	TotalFeatures    int64   // VW's "total feature number"
	HoldoutWeighted  float64 // the weight of the held-out labelled events, all passes
	HoldoutSumLoss   float64 // and their total loss
	Dropped          int     // events VW drops (no actions, _skipLearn)
	Malformed        int     // lines skipped because they are not valid DSJson
}

// Engine learns a model from a source of [Examples] as VW does, and
// reports every line and the summary to a [Report]. It is the one
// trainer of the package: [Train] runs it on a file, a policy change on
// the joined log. It does what vw --dsjson [-t] [--passes N
// [--holdout_off]] does.
type Engine struct {
	// Model learns the examples; with Test it only predicts them.
	Model *bandit.Model
	Test  bool
	// Passes is how many passes to make over the examples (0 means 1);
	// more than one needs a [Rewinder]. With several, every tenth
	// example of a pass is held out (learned, its loss counted apart)
	// unless HoldoutOff, and training stops after three passes without
	// a better holdout loss.
	Passes     int
	HoldoutOff bool
	// KeepNames keeps the feature names of the first pass in the
	// events, for bandit.Model.Names (--invert_hash).
	KeepNames bool
}

// VW's multi-pass defaults (parse_args.cc): every tenth event is held out,
// and training stops after three passes without a better holdout loss.
const (
	holdoutPeriod  = 10
	earlyTerminate = 3
)

// Summary is what an [Engine] run counted, as VW's final summary.
type Summary struct {
	Counts
	AverageLoss float64 // VW's progressive "average loss"; NaN if nothing was labelled
	HoldoutLoss float64 // the best pass's holdout loss with several passes; NaN without a holdout set
	Passes      int     // passes made (fewer than asked if the holdout loss stopped improving)
	// Stopped is set when the holdout loss stopped improving: the model
	// to keep is the one reported by [Report.BestPass], not Model.
	Stopped bool
	Model   *bandit.Model
}

func (e *Engine) passes() int { return max(e.Passes, 1) }

// holdout reports whether the run has a holdout set.
func (e *Engine) holdout() bool { return e.passes() > 1 && !e.HoldoutOff }

// Run processes src with e.Model, reporting to rep, and returns the
// summary it also gave rep.Done. One goroutine reads and parses while
// another learns, which gives the same results as doing both in turn.
// An error of src, of rep or of ctx ends the run; the summary then
// counts what was done before it.
func (e *Engine) Run(ctx context.Context, src Examples, rep Report) (Summary, error) {
	if e.Passes < 0 {
		return Summary{}, fmt.Errorf("--passes %d must be at least 1", e.Passes)
	}
	if e.passes() > 1 && e.Model.Policy().CCB() {
		return Summary{}, errors.New("--passes: multi-slot (--ccb_explore_adf) training makes one pass")
	}
	if _, ok := src.(Rewinder); e.passes() > 1 && !ok {
		return Summary{}, fmt.Errorf("%d passes over examples that cannot be read again", e.passes())
	}
	r := &trainer{e: e, rep: rep, holdout: e.holdout(), bestLoss: math.MaxFloat32}
	full, free := make(chan *batch, batches), make(chan *batch, batches)
	for range batches {
		free <- &batch{items: make([]item, batchSize)}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return e.read(gctx, src, full, free) })
	g.Go(func() error {
		err := r.run(gctx, full, free)
		if err == nil {
			err = errDone // stops the reader if learning ended early
		}
		return err
	})
	err := g.Wait()
	s := r.summary()
	if err != nil && !errors.Is(err, errDone) {
		if cerr := ctx.Err(); cerr != nil {
			return s, cerr
		}
		return s, err
	}
	return s, rep.Done(&s)
}

var errDone = errors.New("training done")

// Work travels from the reader to the learner in batches of events, and the
// batches come back to be refilled: in steady state nothing is allocated.
// Few small batches keep the events' memory hot in the caches the two
// goroutines share: with 512 events in flight parsing took 40% more time.
// (A second parsing goroutine helps only when learning is the lighter
// part, as with -t: otherwise it takes CPU time from the learner.)
const (
	batches   = 3
	batchSize = 16
)

type batch struct {
	items   []item
	n       int
	endPass bool // the last batch of a pass
}

// item is one line: a parsed event or why it was skipped.
type item struct {
	ev  bandit.Event
	at  Where
	err error // wraps bandit.ErrSkip for events VW drops
}

// read parses src's lines, e.passes() times, into batches of events
// prepared for the model's policy. It owns the parser and src.
func (e *Engine) read(ctx context.Context, src Examples, full chan<- *batch, free <-chan *batch) error {
	policy := e.Model.Policy()
	parser := bandit.DSJSONParser{CCB: policy.CCB()}
	for pass := range e.passes() {
		if pass > 0 {
			if err := src.(Rewinder).Rewind(); err != nil {
				return err
			}
		}
		// VW records feature names in the first pass only.
		parser.KeepNames = e.KeepNames && pass == 0
		var b *batch
		for {
			if b == nil {
				select {
				case b = <-free:
					b.n, b.endPass = 0, false
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
				it.at = x.At
				if it.err = parser.Parse(x.Data, &it.ev); it.err == nil {
					it.ev.Prepare(policy)
				}
				b.n++
			}
			if err == io.EOF || b.n == len(b.items) {
				b.endPass = err == io.EOF
				select {
				case full <- b:
					b = nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if err == io.EOF {
				break
			}
		}
	}
	close(full)
	return nil
}

// trainer learns the events in order and keeps the counts, the pass and the
// holdout state. It belongs to the goroutine that learns.
type trainer struct {
	e       *Engine
	rep     Report
	holdout bool
	pred    bandit.Prediction
	step    Step
	c       Counts

	pass, inPass int // current pass and events seen in it

	// The holdout set (several passes): every holdoutPeriod-th event.
	hoWeightedPass, hoLossPass float64
	bestLoss                   float32
	noWin                      int
	stopped                    bool // early termination
}

func (r *trainer) run(ctx context.Context, full <-chan *batch, free chan<- *batch) error {
	for {
		var b *batch
		var ok bool
		select {
		case b, ok = <-full:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return nil
		}
		if err := ctx.Err(); err != nil { // select picks at random when both are ready
			return err
		}
		for i := range b.items[:b.n] {
			if err := r.event(&b.items[i]); err != nil {
				return err
			}
		}
		end := b.endPass
		free <- b
		if end {
			if stop, err := r.endPass(); err != nil || stop {
				return err
			}
		}
	}
}

// event learns (or tests) one parsed line, counts it and reports it.
func (r *trainer) event(it *item) error {
	r.step = Step{At: it.at, Pass: r.pass, Err: it.err, Counts: &r.c}
	if it.err != nil {
		if errors.Is(it.err, bandit.ErrSkip) {
			r.c.Dropped++
		} else {
			r.c.Malformed++
		}
		return r.rep.Example(&r.step)
	}
	ev := &it.ev
	// VW holds out the tenth event of every ten in each pass (its
	// in_pass_counter counts events).
	heldOut := r.holdout && r.inPass%holdoutPeriod == holdoutPeriod-1
	r.inPass++
	mode := bandit.ModeLearn
	switch {
	case r.e.Test:
		mode = bandit.ModeTest
	case heldOut:
		mode = bandit.ModeHoldout
	}
	loss, labeled := r.e.Model.Process(ev, &r.pred, mode)
	r.count(ev, loss, labeled, heldOut)
	s := &r.step
	s.Event, s.Pred, s.Loss, s.Labeled, s.HeldOut = ev, &r.pred, loss, labeled, heldOut
	return r.rep.Example(s)
}

// count counts one predicted event, as VW's shared_data::update.
func (r *trainer) count(ev *bandit.Event, loss float64, labeled, heldOut bool) {
	w := float64(ev.Weight())
	c := &r.c
	if labeled && heldOut {
		c.HoldoutWeighted += w
		c.HoldoutSumLoss += loss
		r.hoWeightedPass += w
		r.hoLossPass += loss
		return
	}
	if labeled {
		c.WeightedLabeled += w
		c.Labeled++
	}
	c.WeightedExamples += w
	c.SumLoss += loss
	c.TotalFeatures += int64(r.pred.NumFeatures())
	c.Examples++
}

// endPass is VW's end of a pass: with a holdout set, keep the model of the
// best pass and stop after three passes without improvement.
func (r *trainer) endPass() (stop bool, err error) {
	r.pass++
	r.inPass = 0
	if !r.holdout {
		return false, nil
	}
	loss := float32(math.MaxFloat32 * 0.5)
	if r.hoWeightedPass > 0 {
		loss = float32(r.hoLossPass / r.hoWeightedPass)
	}
	r.hoWeightedPass, r.hoLossPass = 0, 0
	if loss < r.bestLoss {
		r.bestLoss, r.noWin = loss, 0
		return false, r.rep.BestPass(r.e.Model)
	}
	r.noWin++
	if r.noWin == earlyTerminate {
		// VW stops and keeps the model it saved at the best pass.
		r.stopped = true
		return true, nil
	}
	return false, nil
}

func (r *trainer) summary() Summary {
	s := Summary{
		Counts:      r.c,
		AverageLoss: r.c.SumLoss / r.c.WeightedLabeled,
		HoldoutLoss: math.NaN(),
		Passes:      max(r.pass, 1),
		Stopped:     r.stopped,
		Model:       r.e.Model,
	}
	if r.holdout && r.bestLoss != math.MaxFloat32 && r.bestLoss != math.MaxFloat32*0.5 {
		s.HoldoutLoss = float64(r.bestLoss)
	}
	return s
}
