package bandit

import (
	"math"
	"slices"
)

// Model is a contextual-bandit learner equivalent to VW 9.11.2 run with
// --cb_explore_adf: one squared-loss linear regressor over each action's
// features (shared features merged in) trained with VW's adaptive,
// normalized, invariant gradient descent.
//
// Predict only reads the model, so any number of goroutines may predict
// concurrently as long as nobody calls Learn on the same model; publish a
// [Model.Clone] to predict while learning continues.
type Model struct {
	policy    *Policy
	w         []float32 // 4 floats per weight: value, adaptive sum, normalizer, rate
	mask      uint64    // len(w)-1
	mult      uint64    // feature width << stride shift
	parseMask uint64    // (1<<b)-1

	// The state VW keeps besides the weights; all of it changes what is
	// learned next, so it is saved with the model.
	minLabel, maxLabel float32    // range of the labels learned so far; predictions are clamped to it
	gd                 [2]gdState // normalization sums per sub-model (dr uses two)
	eventSum           uint64     // mtr: events learned
	actionSum          uint64     // mtr: actions in those events
}

// gdState is VW's gd_per_model_state.
type gdState struct {
	normSumNormX float64 // sum of weight * |x/N|^2 over learned examples
	totalWeight  float64 // sum of importance weights
}

// NewModel returns a model with all weights zero for policy p. Until it
// learns, every action scores 0, all tie and the PMF is uniform.
func NewModel(p *Policy) *Model {
	m := shape(p)
	m.w = make([]float32, 4<<p.bits)
	if p.initialT > 0 {
		// VW counts initial_t fake examples of norm 1, in the first model only.
		m.gd[0] = gdState{normSumNormX: float64(p.initialT), totalWeight: float64(p.initialT)}
	}
	return m
}

// shape returns a model for p without weights: enough to hash and expand
// features.
func shape(p *Policy) *Model {
	return &Model{
		policy:    p,
		mask:      4<<p.bits - 1,
		mult:      p.width() << 2,
		parseMask: 1<<p.bits - 1,
	}
}

// Policy returns the policy m learns with.
func (m *Model) Policy() *Policy { return m.policy }

// Clone returns a deep copy of m.
func (m *Model) Clone() *Model {
	c := *m
	c.w = slices.Clone(m.w)
	return &c
}

// Prediction holds the result of [Model.Predict] and the scratch memory it
// needs; reuse one per goroutine to predict without allocating.
type Prediction struct {
	ranked []ranked
	pmf    []ActionProb
	nfeat  int

	idx      []byte
	lin      []ftr
	spans    []span
	pairs    []uint16
	where    [256]int32
	seenPair [1024]uint64
	drLabels []float32
}

type ranked struct {
	score  float32
	action int
}

// ActionProb is the probability of choosing an action (0-based).
type ActionProb struct {
	Action int
	Prob   float32
}

// PMF returns the probability of each action in VW's -p order: the best
// action(s) first, then by increasing score (expected cost), ties by action.
// The slice is overwritten by the next prediction.
func (p *Prediction) PMF() []ActionProb { return p.pmf }

// NumFeatures returns the number of features VW reports for the event: the
// features of every action, shared features and interactions included.
func (p *Prediction) NumFeatures() int { return p.nfeat }

// Predict computes the PMF of e into p. It does not modify m or e.
func (m *Model) Predict(e *Event, p *Prediction) {
	p.ranked = p.ranked[:0]
	p.nfeat = 0
	m.interactionPairs(e, p)
	for a := range e.n {
		p.nfeat += m.expand(e, a, p)
		p.ranked = append(p.ranked, ranked{score: m.dot(p, 0), action: a})
	}
	m.explore(p)
}

// dot is the raw prediction (VW's partial_prediction) of the sub-model
// whose weights are at offset off.
func (m *Model) dot(p *Prediction, off uint64) float32 {
	var sum float32
	for f := range p.features {
		// The conversion keeps Go from fusing the multiply and add: VW rounds
		// both.
		sum += float32(m.w[(f.idx+off)&m.mask] * f.x)
	}
	return sum
}

// explore turns scores into VW's epsilon-greedy PMF: sort by score then
// action, give every action epsilon/K and split 1-epsilon among the actions
// tied with the best (within a relative 1e-4).
func (m *Model) explore(p *Prediction) {
	slices.SortFunc(p.ranked, func(a, b ranked) int {
		switch {
		case a.score < b.score:
			return -1
		case a.score > b.score:
			return 1
		}
		return a.action - b.action
	})
	n := len(p.ranked)
	tied := 0
	if n > 0 {
		tied = 1
		for tied < n && sameRel(p.ranked[tied].score, p.ranked[0].score) {
			tied++
		}
	}
	eps := m.policy.epsilon
	base := eps / float32(n)
	p.pmf = p.pmf[:0]
	for i, r := range p.ranked {
		prob := base
		if i < tied {
			prob += (1 - eps) / float32(tied)
		}
		p.pmf = append(p.pmf, ActionProb{Action: r.action, Prob: prob})
	}
}

// sameRel is VW's are_same_rel with its default tolerance, in float32.
func sameRel(a, b float32) bool {
	return abs32(a-b) <= float32(1e-4)*(abs32(a)+abs32(b))
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// Learn predicts e into p (the PMF before learning, as VW reports it) and
// then, if e is labelled, valid (see [Event.Validate]) and not SkipLearn,
// learns from it. loss is e's contribution to VW's progressive average loss:
// the IPS estimate of the cost of p's PMF, weighted by the event weight.
func (m *Model) Learn(e *Event, p *Prediction) (loss float64, learned bool) {
	m.Predict(e, p)
	if e.SkipLearn || !e.label.set || e.Validate() != nil {
		return 0, false
	}
	l := e.label
	iw := e.Weight()
	var loss32 float32
	for _, ap := range p.pmf {
		if ap.Action == l.chosen {
			loss32 = l.cost / l.prob * ap.Prob * iw
		}
	}
	switch m.policy.cbType {
	case cbMTR:
		// Learn the chosen action only, weighted 1/p times the mean number of
		// actions so far (cb_adf learn_MTR).
		m.eventSum++
		m.actionSum += uint64(e.n)
		w := iw * (1 / l.prob * (float32(m.eventSum) / float32(m.actionSum)))
		m.expand(e, l.chosen, p)
		m.learnOne(p, 0, l.cost, w)
	case cbIPS:
		// Every action, cost/p for the chosen one and 0 for the rest.
		for a := range e.n {
			var y float32
			if a == l.chosen {
				y = l.cost / l.prob
			}
			m.expand(e, a, p)
			m.learnOne(p, 0, y, iw)
		}
	case cbDR:
		// Sub-model 1 predicts costs and learns the observed one; sub-model 0,
		// the policy, learns those predictions with the chosen action's
		// corrected by IPS (gen_cs_example_dr).
		p.drLabels = p.drLabels[:0]
		for a := range e.n {
			m.expand(e, a, p)
			var y float32
			if a == l.chosen {
				y = m.learnOne(p, 1, l.cost, iw/l.prob)
				y += (l.cost - y) / l.prob
			} else {
				y = m.clamp(m.dot(p, 4))
			}
			p.drLabels = append(p.drLabels, y)
		}
		for a, y := range p.drLabels {
			m.expand(e, a, p)
			m.learnOne(p, 0, y, iw)
		}
	}
	return float64(loss32), true
}

// clamp is VW's finalize_prediction: NaN becomes 0, the rest is clamped to
// the label range seen so far.
func (m *Model) clamp(raw float32) float32 {
	switch {
	case raw != raw:
		return 0
	case raw > m.maxLabel:
		return m.maxLabel
	case raw < m.minLabel:
		return m.minLabel
	}
	return raw
}
