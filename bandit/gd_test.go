package bandit

import (
	"math"
	"testing"
)

// oneFeature is an event with one action whose only feature is A^x = x
// (policies add --noconstant), labelled cost y with probability 1: mtr then
// learns it with weight 1.
func oneFeature(x float64, y float32) *Event {
	var e Event
	a := e.AddAction()
	a.Namespace("A")
	a.Number("x", x)
	e.SetLabel(0, y, 1)
	return &e
}

func near(got, want float64) bool { return math.Abs(got-want) <= 1e-6*math.Max(1, math.Abs(want)) }

// TestUpdateRules checks one update of every update rule on a single
// feature x = 2 with label -1 from a zero weight, against values derived by
// hand from gd.cc and loss_functions.cc (no VW reference output exists for
// these options): the prediction is 0 and, once the label range widened to
// [-1, 0], stays 0, so y - p = -1 and the squared gradient is 4.
func TestUpdateRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args string
		w    float64 // the weight after the update
		why  string
	}{
		{"--sgd -l 0.1 --power_t 0", -0.4,
			"plain SGD: 2(y-p)*eta = -0.2, times x"},
		{"--sgd -l 0.1", -0.28284271247461906,
			"plain SGD decays eta by t^-0.5 with t = initial_t 1 + this event's weight 1"},
		{"--adaptive -l 0.5", -0.5,
			"G = 4*x^2 = 16, rate 1/sqrt(G) = 0.25; unsafe update 2(y-p)*0.5 = -1, times x*rate"},
		{"--normalized -l 0.5", -0.5,
			"N = 2, rate 1/N^2; t decay 1^-0.5; multiplier t/sum|x/N|^2 = 1; -1 * x * 0.25"},
		{"--invariant -l 0.1", -0.21601464399390397,
			"invariant SGD: ppu = sum x^2 = 4, s = 0.1/sqrt(2), (y-p)(1-exp(-2 s ppu))/ppu, times x"},
		{"-l 0.5", -0.1967346701436833,
			"default: rate = G^-0.5/N = 1/8, ppu = 0.5, update (y-p)(1-exp(-0.5))/0.5, times x*rate"},
		{"-l 0.5 --power_t 0", -0.31606027941427883,
			"Personalizer's power_t 0: rate = (N^2)^-1, ppu = 1, update -(1-exp(-1)), times x*rate"},
	}
	for _, tt := range tests {
		pol := mustPolicy(t, "--cb_explore_adf --noconstant "+tt.args)
		e := oneFeature(2, -1)
		m := NewModel(pol)
		var p Prediction
		if _, learned := m.Learn(e, &p); !learned {
			t.Fatalf("%s: not learned", tt.args)
		}
		slot := Features(e, pol)[0][0].Index
		if got := float64(m.w[4*slot]); !near(got, tt.w) {
			t.Errorf("%s: weight %v, want %v (%s)", tt.args, got, tt.w, tt.why)
		}
	}
}

// TestRegularization checks --l1 and --l2, which VW applies lazily: the
// weight is divided by the accumulated contraction (l2) and predictions
// multiply by it; predictions truncate weights by the accumulated gravity
// (l1). Values derived by hand from gd.cc compute_update: the unregularized
// update is -0.2, eta_bar = 0.2/2 = 0.1.
func TestRegularization(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args                 string
		w, score             float64
		gravity, contraction float64
	}{
		// contraction 1 - 0.1*0.1 = 0.99; w = x * -0.2/0.99; score w*x*0.99.
		{"--l2 0.1", -0.4040404040404041, -0.8, 0, 0.99},
		// gravity 0.1*0.01; score = (w - gravity)*x.
		{"--l1 0.01", -0.4, -0.798, 0.001, 1},
	}
	for _, tt := range tests {
		pol := mustPolicy(t, "--cb_explore_adf --noconstant --sgd -l 0.1 --power_t 0 "+tt.args)
		e := oneFeature(2, -1)
		m := NewModel(pol)
		var p Prediction
		m.Learn(e, &p)
		slot := Features(e, pol)[0][0].Index
		m.prepare(e, &p)
		m.expand(e, 0, &p)
		if w, s := float64(m.w[4*slot]), float64(m.score(&p, 0)); !near(w, tt.w) || !near(s, tt.score) {
			t.Errorf("%s: weight %v score %v, want %v %v", tt.args, w, s, tt.w, tt.score)
		}
		if !near(m.gravity, tt.gravity) || !near(m.contraction, tt.contraction) {
			t.Errorf("%s: gravity %v contraction %v, want %v %v", tt.args, m.gravity, m.contraction, tt.gravity, tt.contraction)
		}
		// Applying the regularization keeps the score and resets the state.
		m.ApplyRegularization()
		if s := float64(m.score(&p, 0)); !near(s, tt.score) || m.gravity != 0 || m.contraction != 1 {
			t.Errorf("%s: after ApplyRegularization score %v gravity %v contraction %v", tt.args, s, m.gravity, m.contraction)
		}
	}
}

// TestTruncWeight is VW's trunc_weight.
func TestTruncWeight(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ w, g, want float32 }{
		{0.5, 0.1, 0.4}, {-0.5, 0.1, -0.4}, {0.05, 0.1, 0}, {-0.05, 0.1, 0}, {0.1, 0.1, 0}, {0.3, 0, 0.3},
	} {
		if got := truncWeight(tt.w, tt.g); got != tt.want {
			t.Errorf("truncWeight(%v, %v) = %v, want %v", tt.w, tt.g, got, tt.want)
		}
	}
}

// TestLabelRange checks VW's scorer: the label range widens with every
// learned label and clamps predictions, and -t (ModeTest) leaves it alone.
func TestLabelRange(t *testing.T) {
	t.Parallel()
	pol := mustPolicy(t, "--cb_explore_adf --noconstant --sgd -l 10 --power_t 0")
	m := NewModel(pol)
	var p Prediction
	m.Process(oneFeature(1, 3), &p, ModeTest)
	if m.minLabel != 0 || m.maxLabel != 0 {
		t.Errorf("test mode widened the range to [%v, %v]", m.minLabel, m.maxLabel)
	}
	m.Learn(oneFeature(1, 3), &p)
	if m.minLabel != 0 || m.maxLabel != 3 {
		t.Errorf("range [%v, %v], want [0, 3]", m.minLabel, m.maxLabel)
	}
	// The weight is now 2*3*10 = 60: the raw score 60 clamps to 3, so
	// learning 3 again changes nothing.
	before := m.Clone()
	m.Learn(oneFeature(1, 3), &p)
	if m.w[4*Features(oneFeature(1, 3), pol)[0][0].Index] != 60 || !equalWeights(before.w, m.w) {
		t.Error("a prediction clamped to its label was learned from")
	}
}

func equalWeights(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
