package bandit

import (
	"math"
	"slices"
	"testing"
)

func samePMF(got, want []ActionProb) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		if got[i].Action != want[i].Action || math.Abs(float64(got[i].Prob-want[i].Prob)) > 1e-6 {
			return false
		}
	}
	return true
}

// rankScores fills p.ranked as Model.rank does: sorted by score, then action.
func rankScores(p *Prediction, scores []float32) {
	p.ranked = p.ranked[:0]
	for a, s := range scores {
		p.ranked = append(p.ranked, ranked{score: s, action: a})
	}
	slices.SortStableFunc(p.ranked, func(a, b ranked) int {
		switch {
		case a.score < b.score:
			return -1
		case a.score > b.score:
			return 1
		}
		return 0
	})
}

// TestExplore checks each exploration algorithm's PMF and layout (the best
// action first, then by score) against values computed by hand from
// cb_explore_adf_*.cc and explore_internal.h.
func TestExplore(t *testing.T) {
	t.Parallel()
	third := float32(1) / 3
	tests := []struct {
		name    string
		args    string
		tau     uint64 // --first: events left to explore
		counter uint64 // --squarecb: events learned
		scores  []float32
		want    []ActionProb
	}{
		{"greedy: best first, then by score", "--epsilon 0.2", 0, 0, []float32{0.3, -1, 2, 0.1},
			[]ActionProb{{1, 0.85}, {3, 0.05}, {0, 0.05}, {2, 0.05}}},
		{"greedy: ties within a relative 1e-4 share 1-epsilon", "--epsilon 0.2", 0, 0, []float32{0.3, -1, -1.00005, 2},
			[]ActionProb{{2, 0.45}, {1, 0.45}, {0, 0.05}, {3, 0.05}}},
		{"greedy: equal scores order by action", "--epsilon 0.2", 0, 0, []float32{1, 0, 0, 0.5},
			[]ActionProb{{1, 0.45}, {2, 0.45}, {3, 0.05}, {0, 0.05}}},
		{"greedy: a tie must touch the best", "--epsilon 0.2", 0, 0, []float32{0, 1, 1.00001},
			[]ActionProb{{0, 0.8 + 0.2/3}, {1, 0.2 / 3}, {2, 0.2 / 3}}},
		{"greedy --first_only: ties do not share", "--epsilon 0.2 --first_only", 0, 0, []float32{1, 0, 0, 0.5},
			[]ActionProb{{1, 0.85}, {2, 0.05}, {3, 0.05}, {0, 0.05}}},
		{"first: uniform while exploring", "--first 2", 2, 0, []float32{1, 0, 2},
			[]ActionProb{{1, third}, {0, third}, {2, third}}},
		// enforce_minimum_probability(0.3) on (1, 0, 0): tau = 0.2, floor 0.1.
		{"first: then greedy with the epsilon floor", "--first 2 --epsilon 0.3", 0, 0, []float32{1, 0, 2},
			[]ActionProb{{1, 0.8}, {0, 0.1}, {2, 0.1}}},
		// exp(-(s - min)): 1, 1/2, 1/4 over 7/4.
		{"softmax", "--softmax", 0, 0, []float32{float32(math.Ln2), 0, 2 * float32(math.Ln2)},
			[]ActionProb{{1, 4.0 / 7}, {0, 2.0 / 7}, {2, 1.0 / 7}}},
		// lambda 2 squares the ratios: 1, 1/4, 1/16 over 21/16.
		{"softmax --lambda 2", "--softmax --lambda 2", 0, 0, []float32{float32(math.Ln2), 0, 2 * float32(math.Ln2)},
			[]ActionProb{{1, 16.0 / 21}, {0, 4.0 / 21}, {2, 1.0 / 21}}},
		{"squarecb before any learning: gamma 0, uniform", "--squarecb", 0, 0, []float32{2, 0, 1},
			[]ActionProb{{1, third}, {2, third}, {0, third}}},
		// gamma = 10*sqrt(4) = 20: others get 1/(3+20*gap).
		{"squarecb", "--squarecb", 0, 4, []float32{2, 0, 1},
			[]ActionProb{{1, 1 - 1.0/23 - 1.0/43}, {2, 1.0 / 23}, {0, 1.0 / 43}}},
		{"squarecb --gamma_exponent 1", "--squarecb --gamma_scale 1 --gamma_exponent 1", 0, 3, []float32{0, 1},
			[]ActionProb{{0, 0.8}, {1, 0.2}}},
	}
	for _, tt := range tests {
		m := &Model{policy: mustPolicy(t, "--cb_explore_adf "+tt.args), tau: tt.tau, counter: tt.counter}
		var p Prediction
		rankScores(&p, tt.scores)
		m.explore(&p, len(tt.scores), m.policy.epsilon)
		if !samePMF(p.PMF(), tt.want) {
			t.Errorf("%s: PMF = %v, want %v", tt.name, p.PMF(), tt.want)
		}
	}
}

// TestEnforceMinimumProbability is VW's enforce_minimum_probability with
// zero entries considered, computed by hand.
func TestEnforceMinimumProbability(t *testing.T) {
	t.Parallel()
	tests := []struct {
		eps      float32
		in, want []float32
	}{
		{0.3, []float32{0.9, 0.1, 0}, []float32{0.8, 0.1, 0.1}},
		{0.3, []float32{0.5, 0.5, 0}, []float32{0.45, 0.45, 0.1}},
		{0.3, []float32{0.4, 0.3, 0.3}, []float32{0.4, 0.3, 0.3}}, // already above the floor
		{1, []float32{0.9, 0.1, 0}, []float32{1.0 / 3, 1.0 / 3, 1.0 / 3}},
		{0, []float32{0.9, 0.1, 0}, []float32{0.9, 0.1, 0}},
	}
	for _, tt := range tests {
		pmf := make([]ActionProb, len(tt.in))
		for i, v := range tt.in {
			pmf[i] = ActionProb{i, v}
		}
		var scratch []float32
		enforceMinimumProbability(tt.eps, pmf, &scratch)
		for i, w := range tt.want {
			if math.Abs(float64(pmf[i].Prob-w)) > 1e-6 {
				t.Errorf("eps %v on %v: %v, want %v", tt.eps, tt.in, pmf, tt.want)
				break
			}
		}
	}
}

// TestPoisson checks VW's bootstrap weight_gen from --random_seed 0: the
// merand48 draws are 0.0000, 0.0484, 0.0365, 0.7076, 0.9278, 0.2991
// (computed by hand from the LCG), so the counts are 0 0 0 1 3 0.
func TestPoisson(t *testing.T) {
	t.Parallel()
	var state uint64
	for i, want := range []uint32{0, 0, 0, 1, 3, 0} {
		if got := poisson(&state); got != want {
			t.Errorf("draw %d = %d, want %d", i, got, want)
		}
	}
	counts := make([]int, 8)
	const n = 100000
	for range n {
		k := poisson(&state)
		counts[min(k, 7)]++
	}
	// P(0) = P(1) = e^-1, P(2) = e^-1/2.
	for k, want := range []float64{0.3679, 0.3679, 0.1839} {
		if got := float64(counts[k]) / n; math.Abs(got-want) > 0.01 {
			t.Errorf("P(%d) = %.4f, want %.4f", k, got, want)
		}
	}
}

// TestBag checks --bag's vote: every model ranks the actions and votes for
// its best (ties split), the PMF is the share of votes with the epsilon
// floor, sorted by probability, then summed score, then action.
func TestBag(t *testing.T) {
	t.Parallel()
	pol := mustPolicy(t, "--cb_explore_adf --bag 3 --epsilon 0.3 --noconstant")
	m := NewModel(pol)
	// Each action has one feature of its own; model k's weight for it is
	// k slots after model 0's.
	var e Event
	for a := range 3 {
		e.AddAction().Number(string(rune('a'+a)), 1)
	}
	f := Features(&e, pol)
	setScore := func(member, action int, score float32) {
		m.w[4*((f[action][0].Index+uint64(member))&(1<<18-1))] = score
	}
	// Model 0 prefers action 2, model 1 action 2, model 2 ties 0 and 1.
	setScore(0, 2, -1)
	setScore(1, 2, -2)
	setScore(2, 0, -1)
	setScore(2, 1, -1)
	var p Prediction
	m.Predict(&e, &p)
	// Votes 2, 0.5, 0.5 of 3: probabilities 2/3, 1/6, 1/6, then the 0.1
	// floor is already met. Actions 0 and 1 tie on probability and on
	// summed score (-1 each): by action.
	want := []ActionProb{{2, 2.0 / 3}, {0, 1.0 / 6}, {1, 1.0 / 6}}
	if !samePMF(p.PMF(), want) {
		t.Errorf("PMF %v, want %v", p.PMF(), want)
	}
}

// TestPredictEpsilon checks that PredictEpsilon's epsilon replaces an
// epsilon-greedy policy's --epsilon, exactly, and that the other
// exploration algorithms ignore it.
func TestPredictEpsilon(t *testing.T) {
	t.Parallel()
	// Four actions with a feature each; action 2 scores best (lowest cost).
	model := func(args string) *Model {
		pol := mustPolicy(t, "--cb_explore_adf --noconstant "+args)
		m := NewModel(pol)
		var e Event
		for a := range 4 {
			e.AddAction().Number(string(rune('a'+a)), 1)
		}
		f := Features(&e, pol)
		m.w[4*(f[2][0].Index&(1<<18-1))] = -1
		return m
	}
	event := func() *Event {
		var e Event
		for a := range 4 {
			e.AddAction().Number(string(rune('a'+a)), 1)
		}
		return &e
	}
	tests := []struct {
		name string
		args string
		eps  float32
		want []ActionProb
	}{
		{"epsilon-greedy, 0.5 for 0.2", "--epsilon 0.2", 0.5, []ActionProb{{2, 0.625}, {0, 0.125}, {1, 0.125}, {3, 0.125}}},
		{"epsilon-greedy, 0 explores not", "--epsilon 0.2", 0, []ActionProb{{2, 1}, {0, 0}, {1, 0}, {3, 0}}},
		{"epsilon-greedy, 1 is uniform", "--epsilon 0.2", 1, []ActionProb{{2, 0.25}, {0, 0.25}, {1, 0.25}, {3, 0.25}}},
		{"first_only, 0.5", "--epsilon 0.2 --first_only", 0.5, []ActionProb{{2, 0.625}, {0, 0.125}, {1, 0.125}, {3, 0.125}}},
	}
	for _, tt := range tests {
		var p Prediction
		model(tt.args).PredictEpsilon(event(), &p, tt.eps)
		if !slices.Equal(p.PMF(), tt.want) {
			t.Errorf("%s: PMF = %v, want exactly %v", tt.name, p.PMF(), tt.want)
		}
	}
	// Predict is PredictEpsilon with the policy's own epsilon.
	var p, q Prediction
	m := model("--epsilon 0.2")
	m.Predict(event(), &p)
	m.PredictEpsilon(event(), &q, 0.2)
	if !slices.Equal(p.PMF(), q.PMF()) || p.PMF()[0].Prob != 0.85 {
		t.Errorf("Predict %v, PredictEpsilon(0.2) %v", p.PMF(), q.PMF())
	}
	// Other algorithms keep their own epsilon.
	for _, args := range []string{"--softmax --lambda 1 --epsilon 0.1", "--squarecb --epsilon 0.1", "--bag 2 --epsilon 0.1", "--first 3 --epsilon 0.1"} {
		var p, q Prediction
		m := model(args)
		m.Predict(event(), &p)
		m.PredictEpsilon(event(), &q, 0.9)
		if !slices.Equal(p.PMF(), q.PMF()) {
			t.Errorf("%s: PredictEpsilon(0.9) = %v, Predict = %v", args, q.PMF(), p.PMF())
		}
	}
}
