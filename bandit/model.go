package bandit

import (
	"math"
	"slices"
)

// Model is a contextual-bandit learner equivalent to VW 9.11.2 run with
// --cb_explore_adf: one squared-loss linear regressor over each action's
// features (shared features merged in) trained with VW's gradient descent,
// reduced from bandit labels by mtr, ips or dr, and explored with
// epsilon-greedy, tau-first, softmax, SquareCB or bagging.
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
	gd                 []gdState  // normalization sums per model (dr and --bag keep several)
	mtr                []mtrState // per --bag model
	t                  float64    // VW's sd->t: initial_t plus the weight of every event seen
	gravity            float64    // --l1: truncation accumulated but not yet applied to the weights
	contraction        float64    // --l2: scale accumulated but not yet applied to the weights
	tau                uint64     // --first: learned events left to explore uniformly
	counter            uint64     // --squarecb: learned events
	rand               uint64     // --bag: VW's random state

	// VW resets these when it loads a model, so they are not saved: the
	// weight of the held-out and unlabelled events, which plain SGD's
	// learning rate schedule does not count, and gd's last multiplier.
	tHoldout, tUnlabeled float64
	updateMultiplier     float32
}

// gdState is VW's gd_per_model_state.
type gdState struct {
	normSumNormX float64 // sum of weight * |x/N|^2 over learned examples
	totalWeight  float64 // sum of importance weights
}

// mtrState is cb_adf's per-model mtr state.
type mtrState struct {
	events, actions uint64 // events learned and actions in them
}

// NewModel returns a model with all weights zero for policy p. Until it
// learns, every action scores 0, all tie and the PMF is uniform (or what
// the exploration algorithm makes of all-equal scores).
func NewModel(p *Policy) *Model {
	m := shape(p)
	m.w = make([]float32, 4<<p.bits)
	if p.initialT > 0 && !p.sgdDefaultT {
		// VW counts initial_t fake examples of norm 1, in the first model
		// only, and with the adaptive update starts every weight's sum of
		// squared gradients at initial_t (plain SGD's default initial_t
		// comes after: it counts none).
		m.gd[0] = gdState{normSumNormX: float64(p.initialT), totalWeight: float64(p.initialT)}
		if p.adaptive {
			for i := 1; i < len(m.w); i += 4 {
				m.w[i] = p.initialT
			}
		}
	}
	return m
}

// shape returns a model for p without weights: enough to hash and expand
// features.
func shape(p *Policy) *Model {
	width := p.width()
	return &Model{
		policy:      p,
		mask:        4<<p.bits - 1,
		mult:        nextPow2(width) << 2,
		parseMask:   1<<p.bits - 1,
		gd:          make([]gdState, width),
		mtr:         make([]mtrState, p.bag),
		t:           float64(p.initialT),
		contraction: 1,
		tau:         p.tau,
		rand:        p.randomSeed,
	}
}

// Policy returns the policy m learns with.
func (m *Model) Policy() *Policy { return m.policy }

// Clone returns a deep copy of m.
func (m *Model) Clone() *Model {
	c := *m
	c.w = slices.Clone(m.w)
	c.gd = slices.Clone(m.gd)
	c.mtr = slices.Clone(m.mtr)
	return &c
}

// Prediction holds the result of [Model.Predict] and the scratch memory it
// needs; reuse one per goroutine to predict without allocating.
type Prediction struct {
	ranked []ranked
	pmf    []ActionProb
	nfeat  int

	idx     []byte
	lin     []ftr // the linear features of the action being scored
	spans   []span
	linBuf  []ftr // memory for lin and spans when the event is not prepared
	spanBuf []span
	where   [256]int32 // namespace -> 1 + its span in spans
	inWhere []byte     // the namespaces set in where
	terms   []term     // interaction terms compiled for the event
	prep    *prepared  // the event's preparation for the model's policy, if any
	shared  sharedProducts
	cache   termCache
	feats   []ftr // every feature of the action being learned
	gen     []ftr
	labels  []float32 // dr's cost-sensitive labels
	scores  []float32 // --bag: summed scores per action
	top     []float32 // --bag: votes per action
	sorted  []float32

	// Several actions scored at once (see scoreGroup).
	twins       [groupMax - 1]twinBuf // memory for their lin and spans when the event is not prepared
	group       [groupMax][]ftr       // their linear features
	groupScores [groupMax]float32
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
// action(s) first, then by increasing score (expected cost), ties by action
// (--bag: by decreasing probability). The slice is overwritten by the next
// prediction.
func (p *Prediction) PMF() []ActionProb { return p.pmf }

// NumFeatures returns the number of features VW reports for the event: the
// features of every action, shared features and interactions included.
func (p *Prediction) NumFeatures() int { return p.nfeat }

// Predict computes the PMF of e into p. It does not modify m or e.
func (m *Model) Predict(e *Event, p *Prediction) {
	m.PredictEpsilon(e, p, m.policy.epsilon)
}

// PredictEpsilon is [Model.Predict] with eps in place of the policy's
// --epsilon when the policy explores epsilon-greedy (Personalizer's
// explorationPercentage overrides --epsilon so). The other exploration
// algorithms ignore eps.
func (m *Model) PredictEpsilon(e *Event, p *Prediction, eps float32) {
	m.prepare(e, p)
	p.nfeat = 0
	if m.policy.explore == exploreBag {
		m.predictBag(e, p)
		return
	}
	m.rank(e, p, 0, true)
	m.explore(p, e.n, eps)
}

// rank scores every action of e with the model at slot base into p.ranked,
// sorted by (score, action) as VW's csoaa_ldf rank does.
func (m *Model) rank(e *Event, p *Prediction, base int, count bool) {
	p.ranked = p.ranked[:0]
	p.shared.epoch++
	off := uint64(base) << 2
	grouped := m.groupable(p)
	for a := 0; a < e.n; {
		n := m.expand(e, a, p)
		// Actions laid out alike (the usual case) are scored several at a
		// time; see scoreGroup.
		g := 1
		if grouped {
			p.group[0] = p.lin
			for g < groupMax && a+g < e.n {
				lin, ok := m.twin(e, a+g, p, &p.twins[g-1])
				if !ok {
					break
				}
				p.group[g] = lin
				g++
			}
		}
		switch {
		case g == groupMax:
			m.scoreGroup(p, g, off)
		case g > 1:
			g = 2
			m.scoreGroup(p, g, off)
		default:
			p.groupScores[0] = m.score(p, off)
		}
		for i := range g {
			p.ranked = append(p.ranked, ranked{score: p.groupScores[i], action: a + i})
		}
		if count {
			p.nfeat += g * n // the same spans give the same count
		}
		a += g
	}
	slices.SortFunc(p.ranked, func(a, b ranked) int {
		switch {
		case a.score < b.score:
			return -1
		case a.score > b.score:
			return 1
		}
		return a.action - b.action
	})
}

// Mode says what [Model.Process] does with an event.
type Mode uint8

const (
	// ModeLearn predicts, then learns from a labelled event (VW's default).
	ModeLearn Mode = iota
	// ModeHoldout is ModeLearn for an event of VW's multi-pass holdout set:
	// VW learns multi-line examples even when they are held out, but does
	// not count them in plain SGD's learning rate schedule.
	ModeHoldout
	// ModeTest predicts only, as vw -t: no weight changes and the label
	// range does not widen.
	ModeTest
)

// Learn predicts e into p (the PMF before learning, as VW reports it) and
// then, if e is labelled, valid (see [Event.Validate]) and not SkipLearn,
// learns from it. loss is e's contribution to VW's progressive average loss:
// the IPS estimate of the cost of p's PMF, weighted by the event weight.
func (m *Model) Learn(e *Event, p *Prediction) (loss float64, learned bool) {
	return m.Process(e, p, ModeLearn)
}

// Process is [Model.Learn] with a [Mode]. labeled reports whether e had a
// valid label (and so a loss); with ModeLearn and ModeHoldout the model
// learned from it.
func (m *Model) Process(e *Event, p *Prediction, mode Mode) (loss float64, labeled bool) {
	m.Predict(e, p)
	if e.SkipLearn {
		return 0, false
	}
	w := e.Weight()
	labeled = e.label.set && e.Validate() == nil
	if labeled {
		l := e.label
		var loss32 float32
		for _, ap := range p.pmf {
			if ap.Action == l.chosen {
				loss32 = l.cost / l.prob * ap.Prob * w
			}
		}
		loss = float64(loss32)
		if mode != ModeTest {
			m.learn(e, p)
		}
	}
	// VW's shared_data::update counts the event after learning it.
	m.t += float64(w)
	switch {
	case !labeled:
		m.tUnlabeled += float64(w)
	case mode == ModeHoldout:
		m.tHoldout += float64(w)
	}
	return loss, labeled
}

// learn learns from a labelled event with the policy's exploration
// algorithm, which decides which models learn and how often.
func (m *Model) learn(e *Event, p *Prediction) {
	pol := m.policy
	prob := e.label.prob
	switch pol.explore {
	case exploreBag:
		// Each model learns a Poisson(1) number of times (bootstrap), the
		// first exactly once with --greedify.
		for i := range pol.bag {
			n := uint32(1)
			if !pol.greedify || i > 0 {
				n = poisson(&m.rand)
			}
			for range n {
				m.learnCB(e, p, i, prob)
			}
		}
	case exploreSquareCB:
		// SquareCB learns without importance weights: VW sets the
		// probability to 1 on every action example but the last one.
		if e.label.chosen != e.n-1 {
			prob = 1
		}
		m.learnCB(e, p, 0, prob)
		m.counter++
	case exploreFirst:
		m.learnCB(e, p, 0, prob)
		if m.tau > 0 {
			m.tau--
		}
	default:
		m.learnCB(e, p, 0, prob)
	}
}

// learnCB is VW's cb_adf learn for --bag model member: it turns the bandit
// label into regression examples by the cb_type and learns them.
func (m *Model) learnCB(e *Event, p *Prediction, member int, prob float32) {
	l := e.label
	iw := e.Weight()
	base := member * int(m.policy.cbWidth())
	switch m.policy.cbType {
	case cbMTR:
		// Learn the chosen action only, weighted 1/p times the mean number of
		// actions so far (cb_adf learn_MTR).
		st := &m.mtr[member]
		st.events++
		st.actions += uint64(e.n)
		w := iw * (1 / prob * (float32(st.events) / float32(st.actions)))
		m.expand(e, l.chosen, p)
		p.feats = m.appendFeatures(p.feats[:0], p)
		if m.policy.explore == exploreBag {
			m.learnOne(p, base, l.cost, w)
			break
		}
		// Nothing changed the weights since Predict scored this action:
		// its score is the one to learn from.
		for _, r := range p.ranked {
			if r.action == l.chosen {
				m.learnScored(p, base, l.cost, w, r.score)
			}
		}
	case cbIPS:
		// Every action, cost/p for the chosen one and 0 for the rest.
		for a := range e.n {
			var y float32
			if a == l.chosen {
				y = l.cost / prob
			}
			m.expand(e, a, p)
			p.feats = m.appendFeatures(p.feats[:0], p)
			m.learnOne(p, base, y, iw)
		}
	case cbDR:
		// The second model predicts costs and learns the observed one; the
		// first, the policy, learns those predictions with the chosen
		// action's corrected by IPS (gen_cs_example_dr).
		p.labels = p.labels[:0]
		for a := range e.n {
			m.expand(e, a, p)
			p.feats = m.appendFeatures(p.feats[:0], p)
			var y float32
			if a == l.chosen {
				y = m.learnOne(p, base+1, l.cost, iw/prob)
				y += (l.cost - y) / prob
			} else {
				y = m.clamp(m.scoreFeats(p.feats, uint64(base+1)<<2))
			}
			p.labels = append(p.labels, y)
		}
		for a, y := range p.labels {
			m.expand(e, a, p)
			p.feats = m.appendFeatures(p.feats[:0], p)
			m.learnOne(p, base, y, iw)
		}
	}
}

// poisson draws from a Poisson distribution with mean 1 as VW's bootstrap
// weight_gen: one merand48 step compared with the cumulative
// probabilities.
func poisson(state *uint64) uint32 {
	*state = 0xeece66d5deece66d**state + 2147483647
	u := float64(math.Float32frombits(uint32(*state>>25)&0x7FFFFF|127<<23) - 1)
	for k, c := range poissonCDF {
		if u <= c {
			return uint32(k)
		}
	}
	return uint32(len(poissonCDF))
}

// poissonCDF[k] is P(X <= k) for X ~ Poisson(1), as written in VW's bs.h.
var poissonCDF = [...]float64{
	0.3678794411714423215955, 0.735758882342884643191, 0.919698602928605803989,
	0.9810118431238461909214, 0.9963401531726562876545, 0.9994058151824183070012,
	0.9999167588507119768923, 0.9999897508033253583053, 0.9999988747974020309819,
	0.9999998885745216612793, 0.9999999899522336243091, 0.9999999991683892573118,
	0.9999999999364022267287, 0.999999999995480147453, 0.9999999999996999989333,
	0.9999999999999813223654, 0.9999999999999989050799, 0.9999999999999999393572,
	0.999999999999999996817, 0.9999999999999999998412,
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

// sameRel is VW's are_same_rel with its default tolerance, in float32.
func sameRel(a, b float32) bool {
	return abs32(a-b) <= float32(1e-4)*(abs32(a)+abs32(b))
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

// nextPow2 is the smallest power of two at least n: VW spaces the
// features of the models it keeps per feature (parse_args.cc's
// interleave shifts) that far apart, so that --bag 3 takes the room of 4.
func nextPow2(n uint64) uint64 {
	p := uint64(1)
	for p < n {
		p <<= 1
	}
	return p
}
