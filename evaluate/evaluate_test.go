package evaluate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

// tiny.dsjson (written for these tests) has five evaluated events with two
// actions each ("_multi" = x, y), a "_skipLearn" event (line 2) and a
// malformed line (line 4):
//
//	event  time   a      p              chosen  P      reward
//	e1     10:00  [2,1]  [0.75,0.25]    y (1)   0.75   1
//	e2     10:30  [1,2]  [0.5,0.5]      x (0)   0.5    0
//	e3     11:10  [1,2]  [0.25,0.75]    x (0)   0.25   1
//	e4     11:20  [2,1]  [0.5,0.5]      y (1)   0.5    1
//	e5     12:05  [1,2]  [0.875,0.125]  x (0)   0.875  1
//
// Importance weights w = π(chosen)/P:
//
//	Online   (π = logged p):  1, 1, 1, 1, 1
//	Baseline (π(x) = 1):      0, 2, 4, 0, 8/7
//	Random   (π = 1/2):       2/3, 1, 2, 1, 4/7
const tinyData = "testdata/tiny.dsjson"

// The probabilities are binary fractions, so every sum below is exact.
var tinyWeights = map[string][]float64{
	Online:   {1, 1, 1, 1, 1},
	Baseline: {0, 2, 4, 0, 8.0 / 7},
	Random:   {2.0 / 3, 1, 2, 1, 4.0 / 7},
}

var tinyRewards = []float64{1, 0, 1, 1, 1}

// tinyWant are the expected estimates over events [lo, hi) of the tiny
// file. The Cressie-Read estimates and bounds were computed by an independent Python
// program following VW's estimators package (bandits/cressieread.py) with
// the Student t quantile from mpmath: e.g. for Online in total, n = 5,
// Σw = 5 ≥ n so the fake point is w = 0: a = b = 5/6, g = 6·(1/6)²/(5/6 -
// 25/36) = 1.2, t(0.975, 5) = 2.5705818356363155, φ = (-g - t²)/12.
type tinyWant struct {
	lo, hi           int
	gaussIPS         float64 // z·sd/√n of the w·r terms; NaN: undefined (one event)
	crLower, crUpper float64
	snipsHalf        float64 // NaN: undefined
	cr               float64 // the Cressie-Read estimate
}

var tinyExpect = map[string][]tinyWant{
	// IPS = mean(w·r); Gaussian half-width z·sqrt(((Σx² - (Σx)²/n)/(n-1))/n).
	// Online total: x = 1,0,1,1,1: Σx = 4, Σx² = 4, var = (4 - 16/5)/4 = 0.2,
	// half = z·sqrt(0.2/5) = 0.2z.
	Online: {
		{0, 5, 0.2 * zGaussian, 0.4168002849194003, 1, 0.39199279690801087, 0.8000000000000002},
		{0, 2, 0.979981992270027, 0, 1, 0.979981992270027, 0.5000000000000001}, // x = 1, 0: var 0.5, half = z·0.5
		{2, 4, 0, 0.9999999985857865, 1, 0, 1.0000000000000002},                // x = 1, 1: var 0
		{4, 5, math.NaN(), 0.9999999985857865, 1, math.NaN(), 1.0},
	},
	// Baseline total: x = 0,0,4,0,8/7: IPS = (36/7)/5 = 36/35, SNIPS = (36/7)/(50/7) = 0.72.
	Baseline: {
		{0, 5, 1.5192139997933347, 0, 1, 0.5682029903946949, 0.6907545164718384},
		{0, 2, 0, 0, 1, 0, 0.0},
		{2, 4, 3.919927969080108, 0, 1, 0, 1.0}, // x = 4, 0: var 8, half = z·2
		{4, 5, math.NaN(), 0.9999999985857865, 1, math.NaN(), 1.0},
	},
	// Random total: Σw·r = 2/3+2+1+4/7 = 89/21, Σw = 110/21: IPS = 89/105, SNIPS = 89/110.
	Random: {
		{0, 5, 0.6468897885400089, 0.26173229179191193, 1, 0.3890696794325518, 0.8259972489683634},
		{0, 2, 0.653321328180018, 0, 1, 0.9407827125792261, 0.41666666666666663},
		{2, 4, 0.979981992270027, 0.5278083032875176, 1, 0, 1.0},
		{4, 5, math.NaN(), 0.5714285700143579, 1, math.NaN(), 1.0},
	},
}

func near(a, b float64) bool { return a == b || math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

func TestTinyEstimates(t *testing.T) {
	var events []Event
	var rhat [][]float64
	res, err := File(context.Background(), Config{Bucket: time.Hour, OnEvent: func(e *Event) {
		c := *e
		c.PMF = nil
		for _, pmf := range e.PMF {
			c.PMF = append(c.PMF, slices.Clone(pmf))
		}
		events = append(events, c)
		rhat = append(rhat, slices.Clone(e.RewardEstimates))
	}}, tinyData)
	if err != nil {
		t.Fatal(err)
	}
	want := Counts{Lines: 7, Evaluated: 5, SkipLearn: 1, Malformed: 1, Errors: []string{"line 4: offset 38: expected a number"}}
	if !slices.Equal(res.Errors, want.Errors) {
		t.Errorf("errors %q, want %q", res.Errors, want.Errors)
	}
	res.Counts.Errors, want.Errors = nil, nil
	if !reflect.DeepEqual(res.Counts, want) {
		t.Errorf("counts %+v, want %+v", res.Counts, want)
	}
	if got := res.Start.Format(time.RFC3339) + " " + res.End.Format(time.RFC3339); got != "2024-05-01T10:00:00Z 2024-05-01T12:05:00Z" {
		t.Errorf("time range %s", got)
	}
	// The reward model knows nothing before the first event.
	if !slices.Equal(rhat[0], []float64{0, 0}) {
		t.Errorf("first reward estimates %v, want [0 0]", rhat[0])
	}
	if len(res.Policies) != 3 {
		t.Fatalf("%d policies", len(res.Policies))
	}
	starts := []string{"10:00", "11:00", "12:00"}
	for _, p := range res.Policies {
		w := tinyWeights[p.Name]
		if len(p.Summary) != 3 {
			t.Fatalf("%s: %d buckets, want 3", p.Name, len(p.Summary))
		}
		for k, exp := range tinyExpect[p.Name] {
			s := p.TotalSummary
			if k > 0 {
				s = p.Summary[k-1]
				if got := s.TimeStamp.Format("15:04"); got != starts[k-1] || s.AggregateWindow.String() != "PT1H" {
					t.Errorf("%s bucket %d starts %s, window %s", p.Name, k, got, s.AggregateWindow)
				}
			}
			checkSummary(t, p.Name, k, s, w[exp.lo:exp.hi], tinyRewards[exp.lo:exp.hi], events[exp.lo:exp.hi], rhat[exp.lo:exp.hi], exp)
		}
	}
}

// checkSummary checks a summary against the sums written out over the
// bucket's events: IPS = Σ w·r / n, SNIPS = Σ w·r / Σ w, DR = Σ d / n with
// d = Σ_a π(a)·r̂(a) + w·(r - r̂(chosen)), r̂ the reward model's estimates
// reported for the event.
func checkSummary(t *testing.T, name string, k int, s Summary, w, r []float64, evs []Event, rhat [][]float64, exp tinyWant) {
	t.Helper()
	n := float64(len(w))
	var swr, sw, sq, nonZero, sd, sd2 float64
	for i := range w {
		swr += w[i] * r[i]
		sw += w[i]
		sq += w[i] * r[i] * w[i] * r[i]
		if w[i] > 0 {
			nonZero++
		}
		pol := map[string]int{Online: 0, Baseline: 1, Random: 2}[name]
		var d float64
		for _, ap := range evs[i].PMF[pol] {
			prob := float64(ap.Prob)
			if name == Random {
				prob = 0.5
			}
			d += prob * rhat[i][ap.Action]
		}
		d += w[i] * (r[i] - rhat[i][evs[i].Chosen])
		sd += d
		sd2 += d * d
	}
	if s.IPSNumerator != swr || s.IPSDenominator != n || s.SNIPSDenominator != sw || s.SumOfSquares != sq ||
		s.NonZeroProbability != nonZero || s.Events != int64(len(w)) {
		t.Errorf("%s %d: sums %+v, want Σwr %v n %v Σw %v Σ(wr)² %v nonzero %v", name, k, s, swr, n, sw, sq, nonZero)
	}
	est := map[string]Estimate{}
	for _, e := range s.Estimates {
		est[e.Estimator] = e
	}
	ips, snips, dr, cr := est[IPS], est[SNIPS], est[DR], est[CR]
	if *ips.Value != swr/n || s.AverageReward != swr/n {
		t.Errorf("%s %d: IPS %v, want %v", name, k, *ips.Value, swr/n)
	}
	if math.IsNaN(exp.gaussIPS) {
		if ips.Gaussian != nil || s.ConfidenceInterval != 0 || dr.Gaussian != nil || snips.Gaussian != nil {
			t.Errorf("%s %d: one event has Gaussian intervals %v %v %v", name, k, ips.Gaussian, dr.Gaussian, snips.Gaussian)
		}
	} else {
		if !near(s.ConfidenceInterval, exp.gaussIPS) || !near(ips.Gaussian.Lower, swr/n-exp.gaussIPS) || !near(ips.Gaussian.Upper, swr/n+exp.gaussIPS) {
			t.Errorf("%s %d: IPS interval %v ± %v, want ± %v", name, k, *ips.Gaussian, s.ConfidenceInterval, exp.gaussIPS)
		}
		v := (sd2 - sd*sd/n) / (n - 1)
		half := zGaussian * math.Sqrt(max(v, 0)/n)
		if !near(dr.Gaussian.Upper-*dr.Value, half) {
			t.Errorf("%s %d: DR interval %v, want ± %v", name, k, *dr.Gaussian, half)
		}
		if !near(snips.Gaussian.Upper-*snips.Value, exp.snipsHalf) {
			t.Errorf("%s %d: SNIPS interval %v around %v, want ± %v", name, k, *snips.Gaussian, *snips.Value, exp.snipsHalf)
		}
	}
	if !near(*dr.Value, sd/n) {
		t.Errorf("%s %d: DR %v, want %v", name, k, *dr.Value, sd/n)
	}
	if sw == 0 {
		if snips.Value != nil {
			t.Errorf("%s %d: SNIPS %v without weight", name, k, *snips.Value)
		}
	} else if *snips.Value != swr/sw {
		t.Errorf("%s %d: SNIPS %v, want %v", name, k, *snips.Value, swr/sw)
	}
	if iv := cr.Robust; iv == nil || !near(iv.Lower, exp.crLower) || !near(iv.Upper, exp.crUpper) {
		t.Errorf("%s %d: Cressie-Read interval %v, want [%v, %v]", name, k, iv, exp.crLower, exp.crUpper)
	}
	if cr.Value == nil || !near(*cr.Value, exp.cr) || cr.Gaussian != nil || ips.Robust != nil {
		t.Errorf("%s %d: Cressie-Read %+v, want %v (and no Gaussian interval)", name, k, cr, exp.cr)
	}
}

// TestTQuantile checks Student's t quantiles against mpmath's.
func TestTQuantile(t *testing.T) {
	for _, c := range []struct{ df, want float64 }{
		{1, 12.706204736174705}, {4, 2.7764451051977943}, {10, 2.228138851986275},
		{30, 2.042272456301238}, {1000, 1.9623390808264085}, {1e6, 1.959966356814107},
	} {
		if got := tQuantile(0.975, c.df); math.Abs(got-c.want) > 1e-9*c.want {
			t.Errorf("t(0.975, %v) = %v, want %v", c.df, got, c.want)
		}
	}
}

// TestGaussianWithSubsampling checks that subsampled events count
// 1/(1-pdrop) times: an event logged with p = 0.5 and pdrop = 0.5 has
// _label_probability 0.25 and count 2, the same as two such events.
func TestGaussianWithSubsampling(t *testing.T) {
	line := func(pdrop bool, cost string) string {
		prob, extra := "0.5", ""
		if pdrop {
			prob, extra = "0.25", `,"pdrop":0.5`
		}
		return `{"_label_cost":` + cost + `,"_label_probability":` + prob + `,"_labelIndex":0,"a":[1,2],"c":{"_multi":[{"i":{"x":1}},{"i":{"y":1}}]},"p":[0.5,0.5]` + extra + `}` + "\n"
	}
	one, err := Reader(context.Background(), Config{}, "sub", strings.NewReader(line(true, "-1")+line(false, "0")))
	if err != nil {
		t.Fatal(err)
	}
	two, err := Reader(context.Background(), Config{}, "full", strings.NewReader(line(false, "-1")+line(false, "-1")+line(false, "0")))
	if err != nil {
		t.Fatal(err)
	}
	for i := range one.Policies {
		a, b := one.Policies[i].TotalSummary, two.Policies[i].TotalSummary
		a.Events, b.Events = 0, 0
		if *a.Estimates[0].Value != *b.Estimates[0].Value || a.IPSNumerator != b.IPSNumerator || a.IPSDenominator != 3 ||
			a.SNIPSDenominator != b.SNIPSDenominator || a.SumOfSquares != b.SumOfSquares || a.ConfidenceInterval != b.ConfidenceInterval {
			t.Errorf("%s: subsampled %+v, unsampled %+v", one.Policies[i].Name, a, b)
		}
	}
	// Online's weights are 1: its IPS is the mean reward, 2/3.
	if got := *one.Policies[0].TotalSummary.Estimates[0].Value; got != 2.0/3 {
		t.Errorf("Online IPS %v, want 2/3", got)
	}
}

const vwData = "../testdata/vw/public_train.dsjson.gz"

// vwRuns are the runs of testdata/vw/README.md: VW's progressive average
// loss is minus the IPS estimate of the policy it learned.
var vwRuns = []struct{ cbType, lr, loss string }{
	{"mtr", "0.001", "-0.428200"}, {"mtr", "0.1", "-0.580200"},
	{"ips", "0.001", "-0.454200"}, {"ips", "0.1", "-0.522200"},
	{"dr", "0.001", "-0.460200"}, {"dr", "0.1", "-0.482200"},
}

func vwPolicy(cbType, lr string) string {
	return "--cb_explore_adf --epsilon 0.2 --power_t 0 -l " + lr + " --cb_type " + cbType + " -q :: --dsjson"
}

// pmfRecorder is a learner.Report keeping every PMF the trainer predicted.
type pmfRecorder struct{ pmfs [][]bandit.ActionProb }

func (r *pmfRecorder) Example(s *learner.Step) error {
	if s.Err == nil {
		r.pmfs = append(r.pmfs, slices.Clone(s.Pred.PMF()))
	}
	return nil
}
func (r *pmfRecorder) BestPass(*bandit.Model) error { return nil }
func (r *pmfRecorder) Done(*learner.Summary) error  { return nil }

// TestCustomPoliciesAreTheLearners evaluates the six policies of the VW
// reference runs at once: each one's PMFs are the learner's trainer's,
// bit for bit, and VW's -p output once printed; its IPS estimate is
// minus VW's average loss; Online's IPS is the mean logged reward.
func TestCustomPoliciesAreTheLearners(t *testing.T) {
	t.Parallel()
	var custom []Policy
	for _, r := range vwRuns {
		custom = append(custom, Policy{Name: r.cbType + " " + r.lr, Arguments: vwPolicy(r.cbType, r.lr)})
	}
	var got [][][]bandit.ActionProb // by policy, by event
	got = make([][][]bandit.ActionProb, 3+len(custom))
	var rewards []float64
	res, err := File(context.Background(), Config{Custom: custom, Workers: 2, OnEvent: func(e *Event) {
		for i, pmf := range e.PMF {
			got[i] = append(got[i], slices.Clone(pmf))
		}
		rewards = append(rewards, e.Reward)
	}}, vwData)
	if err != nil {
		t.Fatal(err)
	}
	if res.Evaluated != 4000 || res.Lines != 4000 {
		t.Fatalf("counts %+v", res.Counts)
	}
	var sum float64
	for _, r := range rewards {
		sum += r
	}
	// Uniform logging: every Online weight is exactly 1.
	if on := res.Policies[0].TotalSummary; on.SNIPSDenominator != 4000 || *on.Estimates[0].Value != sum/4000 {
		t.Errorf("Online: Σw %v, IPS %v; want 4000 and the mean reward %v", on.SNIPSDenominator, *on.Estimates[0].Value, sum/4000)
	}
	for i, r := range vwRuns {
		p := res.Policies[3+i]
		if ips := strconv.FormatFloat(-*p.TotalSummary.Estimates[0].Value, 'f', 6, 64); ips != r.loss {
			t.Errorf("%s: -IPS %s, VW's average loss %s", p.Name, ips, r.loss)
		}
		pol, err := bandit.ParsePolicy(p.Arguments)
		if err != nil {
			t.Fatal(err)
		}
		src, err := learner.OpenExamples(vwData)
		if err != nil {
			t.Fatal(err)
		}
		rec := &pmfRecorder{}
		_, err = (&learner.Engine{Model: bandit.NewModel(pol)}).Run(context.Background(), src, rec)
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.pmfs) != len(got[3+i]) {
			t.Fatalf("%s: %d PMFs, the trainer's %d", p.Name, len(got[3+i]), len(rec.pmfs))
		}
		for j := range rec.pmfs {
			if !slices.Equal(got[3+i][j], rec.pmfs[j]) {
				t.Fatalf("%s event %d: PMF %v, the trainer's %v", p.Name, j, got[3+i][j], rec.pmfs[j])
			}
		}
		var b bytes.Buffer
		for _, pmf := range got[3+i] {
			for k, ap := range pmf {
				if k > 0 {
					b.WriteByte(',')
				}
				f := strconv.FormatFloat(float64(ap.Prob), 'f', 6, 32)
				f = strings.TrimRight(strings.TrimRight(f, "0"), ".")
				b.WriteString(strconv.Itoa(ap.Action) + ":" + f)
			}
			b.WriteString("\n\n")
		}
		if want := gunzip(t, "../testdata/vw/pmf_"+r.cbType+"_lr"+r.lr+".pred.gz"); !bytes.Equal(b.Bytes(), want) {
			t.Errorf("%s: PMFs differ from VW's -p output", p.Name)
		}
	}
}

func gunzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWorkersGiveTheSameResult: one worker or four, the same JSON.
func TestWorkersGiveTheSameResult(t *testing.T) {
	t.Parallel()
	custom := []Policy{{Arguments: vwPolicy("mtr", "0.1")}, {Arguments: vwPolicy("ips", "0.1")}, {Arguments: vwPolicy("dr", "0.001")}}
	var results []*Result
	for _, w := range []int{1, 4} {
		res, err := File(context.Background(), Config{Custom: custom, Workers: w, Bucket: time.Minute}, vwData)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	a, b := results[0], results[1]
	for i := range a.Policies {
		if a.Policies[i].TotalSummary.IPSNumerator != b.Policies[i].TotalSummary.IPSNumerator ||
			a.Policies[i].TotalSummary.Estimates[2].Value == nil || *a.Policies[i].TotalSummary.Estimates[2].Value != *b.Policies[i].TotalSummary.Estimates[2].Value {
			t.Errorf("%s differs with 4 workers", a.Policies[i].Name)
		}
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	many := make([]Policy, 11)
	for i := range many {
		many[i].Arguments = "--cb_explore_adf"
	}
	lines := func(s ...string) io.Reader { return strings.NewReader(strings.Join(s, "\n")) }
	skip := `{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1,2],"c":{"_multi":[{"x":1},{"y":1}]},"p":[0.5,0.5],"_skipLearn":true}`
	good := `{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1,2],"c":{"_multi":[{"x":1},{"y":1}]},"p":[0.5,0.5]}`
	for _, c := range []struct {
		cfg  Config
		in   io.Reader
		want string
	}{
		{Config{Custom: many}, lines(good), "a maximum of 10 custom policies are allowed, got 11"},
		{Config{Custom: []Policy{{Name: "a", Arguments: "--cb_explore_adf"}, {Name: "a", Arguments: "--cb_explore_adf -l 1"}}}, lines(good), `custom policy names should be unique: "a" appears twice`},
		{Config{Custom: []Policy{{Name: "bad", Arguments: "--cb_explore_adf --bogus"}}}, lines(good), `custom policy "bad": policy "--cb_explore_adf --bogus": option --bogus is not supported`},
		{Config{Bucket: -time.Second}, lines(good), "bucket -1s must not be negative"},
		{Config{RewardMin: 1, RewardMax: 1}, lines(good), "reward range [1, 1] is empty"},
		{Config{}, lines(skip, skip, "{", ""), `no event to evaluate in 3 lines (2 _skipLearn, 0 without actions, 0 without a label, 0 without a logged decision, 1 malformed; first: line 3: offset 1: `},
		{Config{Bucket: time.Hour}, lines(good), `no event to evaluate in 1 lines (0 _skipLearn, 0 without actions, 0 without a label, 1 without a logged decision, 0 malformed; first: line 1: no "Timestamp" to bucket the event by)`},
		{Config{}, lines(strings.Replace(good, `"p":[0.5,0.5]`, `"p":[1]`, 1)), `"a" has 2 actions but "p" 1 probabilities`},
		{Config{}, lines(strings.Replace(good, `"a":[1,2]`, `"a":[2,3]`, 1)), `"a" names action 3 of 2`},
		{Config{}, lines(strings.Replace(good, `"a":[1,2]`, `"a":[2]`, 1)), `"a" has 1 actions but "p" 2 probabilities`},
		{Config{}, lines(strings.Replace(strings.Replace(good, `"a":[1,2]`, `"a":[2]`, 1), `"p":[0.5,0.5]`, `"p":[1]`, 1)), `the chosen action 1 is not in "a"`},
		{Config{}, lines(strings.Replace(good, `"c":`, `"Timestamp":"yesterday","c":`, 1)), `"Timestamp" "yesterday" is not an RFC 3339 time`},
	} {
		_, err := Reader(ctx, c.cfg, "input", c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
	if _, err := File(ctx, Config{}, "testdata/missing.dsjson"); err == nil || !strings.Contains(err.Error(), "open data: open testdata/missing.dsjson") {
		t.Errorf("missing file: %v", err)
	}
}

// endless is an io.Reader of the same DSJson line forever.
type endless struct {
	line []byte
	off  int
}

func (r *endless) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.line[r.off:])
		n += c
		r.off = (r.off + c) % len(r.line)
	}
	return n, nil
}

// TestCancel cancels an evaluation of an endless log from its event hook:
// it ends with the context's error, having evaluated at most what was
// already in flight (the batch in hand and those queued).
func TestCancel(t *testing.T) {
	t.Parallel()
	line := []byte(`{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1,2],"c":{"_multi":[{"x":1},{"y":1}]},"p":[0.5,0.5]}` + "\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen int
	_, err := Reader(ctx, Config{Custom: []Policy{{Arguments: bandit.DefaultPolicy}}, OnEvent: func(*Event) {
		seen++
		if seen == 1000 {
			cancel()
		}
	}}, "endless", bufio.NewReader(&endless{line: line}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if seen < 1000 || seen > 1000+batchSize {
		t.Errorf("%d events evaluated; cancelled at 1000, batches of %d", seen, batchSize)
	}
}

// TestProgress reports lines, bytes and events.
func TestProgress(t *testing.T) {
	t.Parallel()
	var last Progress
	calls := 0
	_, err := File(context.Background(), Config{Progress: func(p Progress) { last = p; calls++ }}, vwData)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(gunzip(t, vwData)))
	if last != (Progress{Lines: 4000, Bytes: size, Evaluated: 4000}) || calls != 1 {
		t.Errorf("last progress %+v after %d calls, want 4000 lines of %d bytes in 1 call", last, calls, size)
	}
}

// TestSkipLearnIsNotLearned inserts a "_skipLearn" copy (with another
// reward) after every tenth event of the reference data: the estimates,
// custom policies' included, are those without the copies, which are
// counted.
func TestSkipLearnIsNotLearned(t *testing.T) {
	t.Parallel()
	lines := strings.SplitAfter(string(gunzip(t, vwData)), "\n")[:500]
	var with strings.Builder
	for i, l := range lines {
		with.WriteString(l)
		if i%10 == 0 {
			with.WriteString(strings.Replace(strings.Replace(l, `"_label_cost":`, `"_label_cost":-5,"_x":`, 1), `"Version"`, `"_skipLearn":true,"Version"`, 1))
		}
	}
	cfg := Config{Custom: []Policy{{Arguments: vwPolicy("dr", "0.1")}}, Bucket: time.Hour}
	a, err := Reader(context.Background(), cfg, "with", strings.NewReader(with.String()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Reader(context.Background(), cfg, "without", strings.NewReader(strings.Join(lines, "")))
	if err != nil {
		t.Fatal(err)
	}
	if a.SkipLearn != 50 || a.Evaluated != 500 || a.Lines != 550 || b.SkipLearn != 0 || b.Lines != 500 {
		t.Fatalf("counts %+v and %+v", a.Counts, b.Counts)
	}
	if !reflect.DeepEqual(a.Policies, b.Policies) {
		t.Errorf("_skipLearn events changed the results")
	}
}
