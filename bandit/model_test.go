package bandit

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
)

// event builds an event with n actions of k features each and k shared
// features, labelled with action 1.
func event(e *Event, n, k int) {
	e.Reset()
	sh := e.Shared()
	sh.Namespace("User")
	for j := range k {
		sh.Number(fmt.Sprintf("u%d", j), float64(j+1)/10)
	}
	for a := range n {
		x := e.AddAction()
		x.Namespace("Action")
		x.String("id", fmt.Sprint(a))
		for j := 1; j < k; j++ {
			x.Number(fmt.Sprintf("f%d", j), float64((a*7+j)%11)/5-1)
		}
	}
	e.SetLabel(1, -1, 0.5)
}

func TestNewModelIsUniform(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, DefaultPolicy))
	var e Event
	var p Prediction
	event(&e, 7, 3)
	m.Predict(&e, &p)
	for i, ap := range p.PMF() {
		if ap.Action != i || math.Abs(float64(ap.Prob)-1.0/7) > 1e-6 {
			t.Errorf("PMF()[%d] = %+v, want action %d with 1/7", i, ap, i)
		}
	}
}

// replay learns lines with m, returning the PMFs predicted before each.
func replay(t *testing.T, m *Model, lines [][]byte) [][]ActionProb {
	t.Helper()
	var (
		d    DSJSONParser
		e    Event
		p    Prediction
		pmfs [][]ActionProb
	)
	for _, line := range lines {
		if err := d.Parse(line, &e); err != nil {
			t.Fatal(err)
		}
		m.Learn(&e, &p)
		pmfs = append(pmfs, append([]ActionProb(nil), p.PMF()...))
	}
	return pmfs
}

// TestModelRoundTrip trains half of the data, saves, loads and trains the
// rest: the PMFs must be those of one uninterrupted run, for every cb_type,
// exploration algorithm and update rule (the state each keeps besides the
// weights is saved).
func TestModelRoundTrip(t *testing.T) {
	t.Parallel()
	lines := readLines(t, "../testdata/vw/public_train.dsjson.gz")[:1000]
	for _, args := range []string{
		"--cb_type mtr --initial_t 3",
		"--cb_type ips --initial_t 3",
		"--cb_type dr --initial_t 3",
		"--first 700 --epsilon 0.1",
		"--softmax --lambda 3 --epsilon 0.05",
		"--squarecb --gamma_scale 5",
		"--bag 3 --cb_type dr --random_seed 9",
		"--bag 2 --greedify --first_only",
		"--sgd --l1 1e-5 --l2 1e-4",
		"--normalized --invariant --power_t 0.5 --hash all",
		"--adaptive --cubic ::: --ignore_linear U",
	} {
		t.Run(args, func(t *testing.T) {
			t.Parallel()
			policy := mustPolicy(t, "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 -q :: "+args)
			whole := replay(t, NewModel(policy), lines)

			first := NewModel(policy)
			resumed := replay(t, first, lines[:500])
			var buf bytes.Buffer
			if _, err := first.WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			second, err := ReadModel(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if second.Policy().String() != policy.String() {
				t.Errorf("policy %q, want %q", second.Policy(), policy)
			}
			resumed = append(resumed, replay(t, second, lines[500:])...)
			if !reflect.DeepEqual(resumed, whole) {
				t.Error("PMFs after a save and load differ from an uninterrupted run")
			}
			if c := second.Clone(); !reflect.DeepEqual(c, second) || &c.w[0] == &second.w[0] || (len(c.gd) > 0 && &c.gd[0] == &second.gd[0]) {
				t.Error("Clone is not a deep copy")
			}
		})
	}
}

// TestPredictWhileLearning predicts from a published clone on several
// goroutines while the original learns (run with -race).
func TestPredictWhileLearning(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, DefaultPolicy))
	var e Event
	var p Prediction
	event(&e, 5, 4)
	m.Learn(&e, &p)
	published := m.Clone()
	var want Prediction
	published.Predict(&e, &want)

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var p Prediction
			for range 50 {
				published.Predict(&e, &p)
				if !reflect.DeepEqual(p.PMF(), want.PMF()) {
					t.Error("concurrent predictions differ")
					return
				}
			}
		})
	}
	var own Event
	event(&own, 5, 4)
	for range 50 {
		m.Learn(&own, &p)
	}
	wg.Wait()
}

func TestLearnSkips(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, DefaultPolicy))
	var e Event
	var p Prediction
	tests := []struct {
		name  string
		setup func(e *Event)
	}{
		{"unlabelled", func(e *Event) { e.label = label{} }},
		{"SkipLearn", func(e *Event) { e.SkipLearn = true }},
		{"chosen out of range", func(e *Event) { e.SetLabel(9, -1, 0.5) }},
		{"probability 0", func(e *Event) { e.SetLabel(0, -1, 0) }},
		{"NaN cost", func(e *Event) { e.SetLabel(0, float32(math.NaN()), 0.5) }},
	}
	for _, tt := range tests {
		event(&e, 3, 2)
		tt.setup(&e)
		if loss, learned := m.Learn(&e, &p); learned || loss != 0 || len(p.PMF()) != 3 {
			t.Errorf("%s: Learn = %v, %v with %d probabilities; want 0, false and a prediction", tt.name, loss, learned, len(p.PMF()))
		}
	}
	if m.mtr[0].events != 0 {
		t.Error("the model learned from an event it should skip")
	}
}

func TestSampleIndex(t *testing.T) {
	t.Parallel()
	pmf := []ActionProb{{2, 0.7}, {0, 0.1}, {1, 0.2}}
	counts := make([]int, len(pmf))
	const n = 20000
	for i := range n {
		id := fmt.Sprintf("event-%d", i)
		k := SampleIndex(id, pmf)
		if k != SampleIndex(id, pmf) {
			t.Fatal("SampleIndex is not deterministic")
		}
		counts[k]++
	}
	for i, ap := range pmf {
		if got := float64(counts[i]) / n; math.Abs(got-float64(ap.Prob)) > 0.02 {
			t.Errorf("entry %d drawn %.3f of the time, want %.1f", i, got, ap.Prob)
		}
	}
	tests := []struct {
		name string
		pmf  []ActionProb
		want int
	}{
		{"empty", nil, -1},
		{"all zero picks the first", []ActionProb{{0, 0}, {1, 0}}, 0},
		{"negatives count as zero", []ActionProb{{0, -5}, {1, 1}}, 1},
		{"a certain action", []ActionProb{{0, 0}, {1, 0}, {2, 1}}, 2},
	}
	for _, tt := range tests {
		if got := SampleIndex("x", tt.pmf); got != tt.want {
			t.Errorf("%s: SampleIndex = %d, want %d", tt.name, got, tt.want)
		}
	}
	// The draw is VW's merand48: 23 bits of one LCG step as a float.
	for seed, want := range map[uint64]float32{0: 63.0 / (1 << 23), 1: 3369775.0 / (1 << 23)} {
		if got := merand48(seed); got != want {
			t.Errorf("merand48(%d) = %v, want %v", seed, got, want)
		}
	}
}

func TestReadModelPolicy(t *testing.T) {
	p, err := ParsePolicy("--cb_explore_adf --epsilon 0.1 -b 12 -q ::")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := NewModel(p).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadModelPolicy(buf.Bytes())
	if err != nil || got.String() != p.String() || got.WeightBytes() != 16<<12 {
		t.Fatalf("ReadModelPolicy = %v, %v; want %q of %d bytes", got, err, p.String(), 16<<12)
	}
	for _, bad := range [][]byte{nil, []byte("not a model at all"), buf.Bytes()[:10]} {
		if _, err := ReadModelPolicy(bad); err == nil {
			t.Errorf("ReadModelPolicy(%q) took it", bad)
		}
	}
}

// TestRankGroups checks that scoring actions several at a time (rank's
// scoreGroup, for actions whose namespaces have the same sizes) gives
// every action bit for bit the score of scoring it alone, and the same
// feature count, prepared or not: for groups of four, of two and single
// actions in one event, with shared-only interactions, the diagonal of a
// namespace with itself, -l2's contraction, and a second weight slot (dr).
func TestRankGroups(t *testing.T) {
	t.Parallel()
	// Action sizes: a group of 4, singles (no twin next), a pair, and three
	// twins at the end, scored as a pair and a single.
	sizes := []int{3, 3, 3, 3, 3, 5, 5, 2, 4, 4, 4}
	event := func(r *rand.Rand) *Event {
		e := new(Event)
		sh := e.Shared()
		sh.Namespace("User")
		for i := range 6 {
			sh.Number(fmt.Sprintf("u%d", i), r.NormFloat64())
		}
		sh.Namespace("")
		sh.String("site", fmt.Sprint(r.IntN(3)))
		for _, n := range sizes {
			x := e.AddAction()
			x.Namespace("Action")
			x.String("id", fmt.Sprint(r.IntN(5)))
			for i := range n {
				x.Number(fmt.Sprintf("f%d", i), r.NormFloat64())
			}
			x.Namespace("")
			x.Number("price", r.Float64())
		}
		e.SetLabel(r.IntN(len(sizes)), -float32(r.IntN(2)), 0.5)
		return e
	}
	for _, args := range []string{DefaultPolicy, DefaultPolicy + " --l2 0.001", "--cb_explore_adf -q :: --cb_type dr"} {
		pol := mustPolicy(t, args)
		m := NewModel(pol)
		r := rand.New(rand.NewPCG(3, 4))
		var p, q Prediction
		for i := range 300 {
			e := event(r)
			if i%2 == 1 {
				e.Prepare(pol)
			}
			for _, base := range []int{0, int(pol.cbWidth()) - 1} {
				m.prepare(e, &p)
				if !m.groupable(&p) {
					t.Fatalf("%s: actions are scored one by one", args)
				}
				p.nfeat = 0
				m.rank(e, &p, base, true)
				m.prepare(e, &q)
				q.shared.epoch++
				want := make([]float32, e.n)
				nfeat := 0
				for a := range e.n {
					nfeat += m.expand(e, a, &q)
					want[a] = m.score(&q, uint64(base)<<2)
				}
				for _, rk := range p.ranked {
					if math.Float32bits(rk.score) != math.Float32bits(want[rk.action]) {
						t.Fatalf("%s, event %d, slot %d: action %d scores %v in a group, %v alone", args, i, base, rk.action, rk.score, want[rk.action])
					}
				}
				if p.nfeat != nfeat {
					t.Fatalf("%s, event %d: %d features, want %d", args, i, p.nfeat, nfeat)
				}
			}
			m.Learn(e, &p)
		}
	}
}
