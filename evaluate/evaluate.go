// Package evaluate is offline (counterfactual) evaluation of learning
// policies on a log of joined decisions, as Personalizer's evaluations:
// it replays DSJson events in order and estimates, per time bucket and in
// total, the average reward each policy would have had (IPS, SNIPS and
// doubly robust) with Personalizer's Gaussian intervals, and Cressie-Read
// (CR) with an interval that stays valid with heavy importance weights.
//
// Policies are Online (the logged decisions), Baseline (the first action
// of "_multi", the application's default), Random (uniform) and up to
// [MaxCustom] Custom ones, VW argument strings each learned progressively
// by a bandit.Model exactly as the learner's trainer does (the PMF of an
// event is the one before learning it). Results are plain structs whose
// JSON has Personalizer's PolicyResult and PolicyResultSummary names.
package evaluate

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/loop"
)

// Policy sources, Personalizer's policySource.
const (
	Online   = "Online"
	Baseline = "Baseline"
	Random   = "Random"
	Custom   = "Custom"
)

// MaxCustom is Personalizer's limit on custom policies in an evaluation.
const MaxCustom = 10

// RewardModelPolicy is the reward model of the doubly robust estimate: a
// linear regressor on the shared × action features (-q ::) learned online
// with VW's default adaptive, normalized learning rate by the
// importance-weighted squared loss of the chosen action's cost (VW's
// cb_type mtr). Its prediction for an event is made before it learns the
// event; the estimated reward of an action is minus its predicted cost,
// clamped to the reward range.
const RewardModelPolicy = "--cb_explore_adf --cb_type mtr -q ::"

// Policy names a policy to evaluate.
type Policy struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"` // VW arguments (Custom policies)
	Source    string `json:"policySource"`
}

// Config configures an evaluation.
type Config struct {
	// Custom lists the custom policies (their Source is ignored): at most
	// MaxCustom, with unique names; an empty name becomes "Custom N".
	Custom []Policy
	// Bucket is the length of the time buckets of the summaries (by the
	// lines' "Timestamp", truncated to a multiple of Bucket since the
	// Unix epoch); 0 gives only the total.
	Bucket time.Duration
	// RewardMin and RewardMax bound the rewards for the Cressie-Read
	// interval and the reward model; rewards seen outside widen them.
	// Both zero means [0, 1].
	RewardMin, RewardMax float64
	// Workers is how many goroutines learn the custom policies (each
	// policy is learned by one of them); 0 means GOMAXPROCS. Results do
	// not depend on it.
	Workers int
	// Progress, if set, is called every ProgressEvery lines and at the end.
	Progress func(Progress)
	// OnEvent, if set, is called for every evaluated event, in order.
	OnEvent func(*Event)
}

// ProgressEvery is how many lines pass between calls of Config.Progress.
const ProgressEvery = 4096

// Progress is how far an evaluation is.
type Progress struct {
	Lines     int64 // lines read
	Bytes     int64 // their bytes (decompressed), newlines included
	Evaluated int64 // events evaluated
}

// Event is one evaluated event, for Config.OnEvent. Its slices are valid
// only during the call.
type Event struct {
	At     learner.Where
	Time   time.Time // zero without a "Timestamp"
	Chosen int       // the logged action, 0-based index into "_multi"
	Reward float64   // -_label_cost
	Prob   float64   // the logged probability of Chosen (without subsampling)
	Count  float64   // 1/(1-pdrop)
	// PMF is each policy's probabilities (Result.Policies order) before
	// learning the event; RewardEstimates the reward model's per action.
	PMF             [][]bandit.ActionProb
	RewardEstimates []float64
}

// Result is what an evaluation found.
type Result struct {
	Policies []PolicyResult `json:"policyResults"`
	// Estimators of the summaries and how their intervals are computed.
	RewardModel string    `json:"rewardModel"`
	Confidence  float64   `json:"confidence"`
	Start       time.Time `json:"startTime"` // the first and last event times
	End         time.Time `json:"endTime"`
	Counts
	// Models are the custom policies' models (those of Policies[3:], in
	// order) as the run left them, having learned every event it learned:
	// what applying an evaluated policy with its model imports.
	Models []*bandit.Model `json:"-"`
}

// Counts counts the lines of an evaluation.
type Counts struct {
	Lines     int64 `json:"lines"`     // non-blank lines read
	Evaluated int64 `json:"evaluated"` // events evaluated
	SkipLearn int64 `json:"skipLearn"` // "_skipLearn" events: neither evaluated nor learned
	Dropped   int64 `json:"dropped"`   // events VW drops ("a" missing or empty)
	Unlabeled int64 `json:"unlabeled"` // events without a valid label: learned from by no one, not evaluated
	// NoDecision counts labelled events whose "a" and "p" do not give the
	// logged PMF, or whose "Timestamp" is not RFC 3339 (or missing, with
	// buckets): learned (as VW does) but not evaluated.
	NoDecision int64 `json:"noDecision"`
	Malformed  int64 `json:"malformed"` // lines that are not valid DSJson: learned by no one
	// Errors explains the first MaxErrors lines skipped as malformed or
	// without a decision, with their line numbers.
	Errors []string `json:"errors,omitempty"`
}

// MaxErrors is how many skipped lines Counts.Errors explains.
const MaxErrors = 10

// PolicyResult is one policy's estimates, Personalizer's PolicyResult.
type PolicyResult struct {
	Policy
	Summary      []Summary `json:"summary"`
	TotalSummary Summary   `json:"totalSummary"`
}

// Summary is the estimates of a policy over a time bucket or the whole
// run: Personalizer's PolicyResultSummary fields, then the estimates.
type Summary struct {
	TimeStamp time.Time `json:"timeStamp"` // the bucket's start; the first event's for the total
	// IPS = IPSNumerator / IPSDenominator and SNIPS = IPSNumerator /
	// SNIPSDenominator: the numerator is Σ c·w·r, the denominators Σ c
	// (the events, counted 1/(1-pdrop) each) and Σ c·w.
	IPSNumerator       float64       `json:"ipsEstimatorNumerator"`
	IPSDenominator     float64       `json:"ipsEstimatorDenominator"`
	SNIPSDenominator   float64       `json:"snipsEstimatorDenominator"`
	AggregateWindow    loop.Duration `json:"aggregateTimeWindow"`
	NonZeroProbability float64       `json:"nonZeroProbability"` // Σ c over events where the policy could choose the logged action
	SumOfSquares       float64       `json:"sumOfSquares"`       // Σ c·(w·r)²
	ConfidenceInterval float64       `json:"confidenceInterval"` // the Gaussian half-width of IPS (0 if undefined)
	AverageReward      float64       `json:"averageReward"`      // the IPS estimate

	Events    int64      `json:"events"`
	Estimates []Estimate `json:"estimates"` // IPS, SNIPS, DR, CR
}

// Estimate is one estimator's value and interval. Undefined values and
// intervals are nil (JSON null): SNIPS when no event has weight, Gaussian
// intervals with fewer than two events.
type Estimate struct {
	Estimator string    `json:"estimator"` // IPS, SNIPS, DR or CR
	Value     *float64  `json:"value"`
	Gaussian  *Interval `json:"gaussian,omitempty"`    // IPS, SNIPS, DR: value ± z·sd/√n (SNIPS: by the delta method)
	Robust    *Interval `json:"cressieRead,omitempty"` // CR: the Cressie-Read interval
}

// Estimators in the order of Summary.Estimates.
const (
	IPS   = "IPS"
	SNIPS = "SNIPS"
	DR    = "DR"
	CR    = "CR" // Cressie-Read, with the interval valid with heavy weights
)

// summary turns sums into a Summary.
func (s *sums) summary(start time.Time, window time.Duration) Summary {
	out := Summary{
		TimeStamp: start, IPSNumerator: s.swr, IPSDenominator: s.n, SNIPSDenominator: s.sw,
		AggregateWindow: loop.Duration(window), NonZeroProbability: s.nonZero, SumOfSquares: s.sw2r2,
		Events: s.events,
	}
	if s.n > 0 {
		out.AverageReward = s.ips()
	}
	val := func(v float64) *float64 { return &v }
	around := func(v, half float64, ok bool) *Interval {
		if !ok {
			return nil
		}
		return &Interval{v - half, v + half}
	}
	ips := Estimate{Estimator: IPS}
	snips := Estimate{Estimator: SNIPS}
	dr := Estimate{Estimator: DR}
	cr := Estimate{Estimator: CR}
	if s.n > 0 {
		v := s.ips()
		half, ok := gaussian(s.n, s.swr, s.sw2r2)
		ips.Value, ips.Gaussian = val(v), around(v, half, ok)
		if ok {
			out.ConfidenceInterval = half
		}
		if v, ok := s.cressieReadValue(); ok {
			cr.Value = val(v)
		}
		if iv, ok := s.cressieRead(); ok {
			cr.Robust = &iv
		}
		d := s.dr()
		half, ok = gaussian(s.n, s.sd, s.sd2)
		dr.Value, dr.Gaussian = val(d), around(d, half, ok)
	}
	if v, ok := s.snips(); ok {
		half, hok := s.snipsHalf()
		snips.Value, snips.Gaussian = val(v), around(v, half, hok)
	}
	out.Estimates = []Estimate{ips, snips, dr, cr}
	return out
}

// Run evaluates the Online, Baseline, Random and cfg's custom
// policies on the DSJson lines of src, in order.
func Run(ctx context.Context, cfg Config, src learner.Examples) (*Result, error) {
	e, err := newEvaluator(cfg)
	if err != nil {
		return nil, err
	}
	return e.run(ctx, src)
}

// File evaluates on a DSJson file, gzip-compressed or not.
func File(ctx context.Context, cfg Config, path string) (*Result, error) {
	e, err := newEvaluator(cfg) // bad policies before a bad file
	if err != nil {
		return nil, err
	}
	src, err := learner.OpenExamples(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	res, err := e.run(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", path, err)
	}
	return res, nil
}

// Reader evaluates on the DSJson lines of r (joined events, not
// compressed); name names r in errors.
func Reader(ctx context.Context, cfg Config, name string, r io.Reader) (*Result, error) {
	return Run(ctx, cfg, learner.ReadExamples(name, r))
}

// policies returns the evaluation's policies, checked, and the parsed
// custom ones.
func policies(custom []Policy, limit int) ([]Policy, []*bandit.Policy, error) {
	if len(custom) > limit {
		return nil, nil, fmt.Errorf("a maximum of %d custom policies are allowed, got %d", limit, len(custom))
	}
	out := []Policy{{Name: Online, Source: Online}, {Name: Baseline, Source: Baseline}, {Name: Random, Source: Random}}
	seen := map[string]bool{}
	var parsed []*bandit.Policy
	for i, p := range custom {
		if p.Name == "" {
			p.Name = fmt.Sprintf("Custom %d", i+1)
		}
		if seen[p.Name] {
			return nil, nil, fmt.Errorf("custom policy names should be unique: %q appears twice", p.Name)
		}
		seen[p.Name] = true
		pol, err := bandit.ParsePolicy(p.Arguments)
		if err != nil {
			return nil, nil, fmt.Errorf("custom policy %q: %w", p.Name, err)
		}
		p.Source = Custom
		out = append(out, p)
		parsed = append(parsed, pol)
	}
	return out, parsed, nil
}

// finish sorts the buckets and builds the result.
func (e *evaluator) finish() *Result {
	res := &Result{RewardModel: RewardModelPolicy, Confidence: Confidence, Counts: e.counts}
	if e.hasTime {
		res.Start, res.End = time.Unix(0, e.tmin).UTC(), time.Unix(0, e.tmax).UTC()
	}
	sort.Slice(e.buckets, func(i, j int) bool { return e.buckets[i].start < e.buckets[j].start })
	for i, p := range e.pols {
		pr := PolicyResult{Policy: p, Summary: []Summary{}}
		for _, b := range e.buckets {
			pr.Summary = append(pr.Summary, b.sums[i].summary(time.Unix(0, b.start).UTC(), e.cfg.Bucket))
		}
		window := time.Duration(0)
		if res.End.After(res.Start) {
			window = res.End.Sub(res.Start)
		}
		pr.TotalSummary = e.total[i].summary(res.Start, window)
		res.Policies = append(res.Policies, pr)
	}
	for _, cm := range e.custom {
		res.Models = append(res.Models, cm.m)
	}
	return res
}

// clamp keeps v in [lo, hi].
func clamp(v, lo, hi float64) float64 { return math.Min(hi, math.Max(lo, v)) }
