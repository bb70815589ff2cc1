package bandit

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args    string
		epsilon float32
		cbType  string
		bits    uint
		pairs   [][2]byte
		err     string
	}{
		{args: DefaultPolicy, epsilon: 0.2, cbType: "mtr", bits: 18, pairs: [][2]byte{{':', ':'}}},
		{args: "--cb_explore_adf", epsilon: 0.05, cbType: "mtr", bits: 18},
		{args: "--cb_explore_adf --epsilon=0.1 --cb_type ips -qUA --quadratic AB -b20 --dsjson --quiet --learning_rate 0.5 --power_t 0.5 --initial_t 1",
			epsilon: 0.1, cbType: "ips", bits: 20, pairs: [][2]byte{{'U', 'A'}, {'A', 'B'}}},
		{args: "--cb_explore_adf --cb_type dr --json", epsilon: 0.05, cbType: "dr", bits: 18},
		{args: "--epsilon 0.2", err: "--cb_explore_adf is required"},
		{args: "--cb_explore_adf --bag 5", err: "option --bag is not supported"},
		{args: "--cb_explore_adf --cb_type dm", err: `--cb_type "dm" is not supported`},
		{args: "--cb_explore_adf -q ABC", err: "two namespace characters"},
		{args: "--cb_explore_adf --epsilon", err: "needs a value"},
		{args: "--cb_explore_adf --epsilon 2", err: "not in [0, 1]"},
		{args: "--cb_explore_adf -l 0", err: "must be positive"},
		{args: "--cb_explore_adf -l x", err: "not a number"},
		{args: "--cb_explore_adf -b 40", err: "number of bits"},
		{args: "--cb_explore_adf -l 0.1 --learning_rate 0.2", err: "given twice"},
		{args: "--cb_explore_adf --quiet=1", err: "takes no value"},
		{args: "--cb_explore_adf stray", err: "unexpected argument"},
	}
	for _, tt := range tests {
		p, err := ParsePolicy(tt.args)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParsePolicy(%q) = %v, want error containing %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tt.args, err)
			continue
		}
		if p.Epsilon() != tt.epsilon || p.CBType() != tt.cbType || p.bits != tt.bits || !reflect.DeepEqual(p.interactions, tt.pairs) || p.String() != tt.args {
			t.Errorf("ParsePolicy(%q) = %+v", tt.args, p)
		}
	}
}

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

func TestExplore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		scores []float32
		want   []ActionProb
	}{
		{"best first, then by score", []float32{0.3, -1, 2, 0.1},
			[]ActionProb{{1, 0.85}, {3, 0.05}, {0, 0.05}, {2, 0.05}}},
		{"ties within a relative 1e-4 share 1-epsilon", []float32{0.3, -1, -1.00005, 2},
			[]ActionProb{{2, 0.45}, {1, 0.45}, {0, 0.05}, {3, 0.05}}},
		{"equal scores order by action", []float32{1, 0, 0, 0.5},
			[]ActionProb{{1, 0.45}, {2, 0.45}, {3, 0.05}, {0, 0.05}}},
		{"a tie must touch the best", []float32{0, 1, 1.00001},
			[]ActionProb{{0, 0.8 + 0.2/3}, {1, 0.2 / 3}, {2, 0.2 / 3}}},
	}
	m := &Model{policy: mustPolicy(t, "--cb_explore_adf --epsilon 0.2")}
	for _, tt := range tests {
		var p Prediction
		for a, s := range tt.scores {
			p.ranked = append(p.ranked, ranked{score: s, action: a})
		}
		m.explore(&p)
		for i, ap := range p.PMF() {
			if ap.Action != tt.want[i].Action || math.Abs(float64(ap.Prob-tt.want[i].Prob)) > 1e-6 {
				t.Errorf("%s: PMF = %v, want %v", tt.name, p.PMF(), tt.want)
				break
			}
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
// rest: the PMFs must be those of one uninterrupted run, for every cb_type.
func TestModelRoundTrip(t *testing.T) {
	t.Parallel()
	lines := readLines(t, "../testdata/vw/public_train.dsjson.gz")[:1000]
	for _, cbType := range []string{"mtr", "ips", "dr"} {
		t.Run(cbType, func(t *testing.T) {
			t.Parallel()
			policy := mustPolicy(t, "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 -q :: --initial_t 3 --cb_type "+cbType)
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
			if c := second.Clone(); !reflect.DeepEqual(c, second) || &c.w[0] == &second.w[0] {
				t.Error("Clone is not a deep copy")
			}
		})
	}
}

func TestReadModelErrors(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, "--cb_explore_adf -b 8"))
	var e Event
	var p Prediction
	event(&e, 3, 3)
	m.Learn(&e, &p)
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 1
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"corrupted byte", corrupt, ErrChecksum.Error()},
		{"truncated", good[:len(good)-9], ErrChecksum.Error()},
		{"empty", nil, "not a bandit model"},
		{"other file", []byte("PK\x03\x04 some zip"), "not a bandit model"},
		{"future version", append([]byte(modelMagic), 9, 0, 0, 0, 0, 0, 0, 0), "unsupported format version 9"},
	}
	for _, tt := range tests {
		if _, err := ReadModel(bytes.NewReader(tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ReadModel = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := ReadModel(bytes.NewReader(corrupt)); !errors.Is(err, ErrChecksum) {
		t.Errorf("ReadModel(corrupt) = %v, want ErrChecksum", err)
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
	if m.eventSum != 0 {
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
