package bandit

import (
	"math"
	"slices"
)

// ftr is a feature ready for the weights: its index is scaled by the model's
// feature width and stride but not yet offset or masked, as VW keeps it.
type ftr struct {
	idx uint64
	x   float32
}

// span is one namespace of an expanded action: lin[start:end], with VW's
// running sum of the squared values (used by plain SGD's invariant update).
type span struct {
	ns         byte
	shared     bool // only shared features: the same for every action
	start, end int32
	sumSq      float32
}

// prepare compiles the policy's interaction terms for event e into p.terms:
// wildcards expand over the namespaces the event has (those VW may
// interact: ' ' to '~' and a slot's namespace 139, ignored ones excluded).
func (m *Model) prepare(e *Event, p *Prediction) {
	pol := m.policy
	// Checking a preparation reads every example of e, so it is done once
	// per event: expand uses p.prep.
	p.prep = e.preparedFor(pol)
	if p.prep != nil {
		p.terms = p.prep.terms
		return
	}
	if !pol.wildcard {
		p.terms = pol.terms
		return
	}
	var set nsSet
	p.idx = e.shared.indices(p.idx[:0])
	for a := range e.n {
		p.idx = e.actions[a].indices(p.idx)
	}
	for _, ns := range p.idx {
		if !pol.ignore[ns] {
			set.add(ns)
		}
	}
	p.terms = p.cache.compile(pol, set)
}

// expand prepares p to score action a of e (for which prepare was called
// last) and returns how many features
// VW counts for it: p.lin gets the linear features (see expandLinear) and
// p.where their namespaces. Interactions are not stored: the scoring loops
// generate them from p.lin, as VW does. An event prepared for the policy
// ([Event.Prepare]) only needs its prepared features put in place.
func (m *Model) expand(e *Event, a int, p *Prediction) int {
	p.clearWhere()
	if pr := p.prep; pr != nil {
		act := &pr.acts[a]
		p.set(pr.lin[act.lin[0]:act.lin[1]], pr.spans[act.spans[0]:act.spans[1]])
		return act.nfeat
	}
	p.linBuf, p.spanBuf, p.idx = m.expandLinear(e, a, p.linBuf[:0], p.spanBuf[:0], p.idx[:0])
	p.set(p.linBuf, p.spanBuf)
	return p.count()
}

// expandLinear appends to lin the linear features of action a of e in VW's
// order: the action's namespaces with the shared features of the same
// namespace appended, the constant, then the namespaces only the shared
// example has (shared_feature_merger), without --ignore'd namespaces. It
// appends their namespaces to spans, positions relative to lin's length on
// entry. idx is scratch memory.
func (m *Model) expandLinear(e *Event, a int, lin []ftr, spans []span, idx []byte) ([]ftr, []span, []byte) {
	pol := m.policy
	act, sh := e.actions[a], &e.shared
	base := len(lin)
	idx = act.indices(idx[:0])
	for _, ns := range idx {
		if pol.ignore[ns] {
			continue
		}
		start := len(lin) - base
		var s1, s2 float32
		lin, s1 = m.appendScaled(lin, act.group(ns))
		lin, s2 = m.appendScaled(lin, sh.group(ns))
		spans = append(spans, span{ns: ns, start: int32(start), end: int32(len(lin) - base), sumSq: s1 + s2})
	}
	if !pol.noConstant {
		lin = append(lin, ftr{idx: constantIndex * m.mult, x: 1})
		spans = append(spans, span{ns: constantNamespace, start: int32(len(lin) - base - 1), end: int32(len(lin) - base), sumSq: 1})
	}
	idx = sh.indices(idx[:0])
	for _, ns := range idx {
		if pol.ignore[ns] || len(act.group(ns)) > 0 {
			continue // ignored, or merged above
		}
		start := len(lin) - base
		var s float32
		lin, s = m.appendScaled(lin, sh.group(ns))
		spans = append(spans, span{ns: ns, shared: true, start: int32(start), end: int32(len(lin) - base), sumSq: s})
	}
	return lin, spans, idx
}

// clearWhere forgets the namespaces of the action p last scored. It reads
// only p's own memory: p.spans may point into an event that has since been
// reused (personalizer train hands events back to its parser).
func (p *Prediction) clearWhere() {
	for _, ns := range p.inWhere {
		p.where[ns] = 0
	}
	p.inWhere = p.inWhere[:0]
}

// set makes lin and spans the action p scores; p.where must be clear.
func (p *Prediction) set(lin []ftr, spans []span) {
	p.lin, p.spans = lin, spans
	for i, s := range spans {
		p.where[s.ns] = int32(i) + 1
		p.inWhere = append(p.inWhere, s.ns)
	}
}

// count is the number of features VW counts for the action in p: the
// linear ones and every interaction, --ignore_linear'd namespaces included.
func (p *Prediction) count() int {
	n := len(p.lin)
	for i := range p.terms {
		n = satAdd(n, termFeatures(&p.terms[i], p.spanLen))
	}
	return n
}

// termFeatures is how many features the interaction term t generates when
// namespace ns has size(ns) features: VW generates each combination of the
// features of a repeated namespace once, the diagonal included, so a run
// of r equal namespaces of k features gives k multichoose r.
func termFeatures(t *term, size func(byte) int) int {
	if t.n == 2 { // the usual case, and the sizes are far too small to overflow
		a := size(t.ns[0])
		if t.ns[0] == t.ns[1] {
			return a * (a + 1) / 2
		}
		return a * size(t.ns[1])
	}
	n := 1
	for i := 0; i < t.n; {
		ns, r := t.ns[i], 1
		for i+r < t.n && t.ns[i+r] == ns {
			r++
		}
		k := size(ns)
		c := 1 // C(k+j-1, j) for j = 1..r: each step's division is exact
		for j := 1; j <= r; j++ {
			if c > math.MaxInt/(k+j) {
				return math.MaxInt
			}
			c = c * (k + j - 1) / j
		}
		if n = satMul(n, c); n == 0 {
			return 0
		}
		i += r
	}
	return n
}

func satAdd(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}

func satMul(a, b int) int {
	if b != 0 && a > math.MaxInt/b {
		return math.MaxInt
	}
	return a * b
}

// prepared is what [Event.Prepare] computed for a policy: the interaction
// terms and every action's linear features.
type prepared struct {
	policy  *Policy
	version uint64 // the event's version it was computed from
	terms   []term
	lin     []ftr
	spans   []span
	acts    []preparedAction
	scratch *Prediction
	idx     []byte
}

type preparedAction struct {
	lin, spans [2]int
	nfeat      int
}

// Prepare computes the features a model with policy pol scores and learns
// for e, so that [Model.Predict] and [Model.Learn] need not: one goroutine
// can parse and prepare events while another learns, with the same results
// as without. The preparation is kept until e changes. Prepare must not run
// while a model predicts e.
func (e *Event) Prepare(pol *Policy) {
	if pol.ccb {
		// A slot's features depend on the slots before it, which the
		// model decides: multi-slot events are expanded as they are learned.
		e.prep.policy = nil
		return
	}
	pr := &e.prep
	if pr.scratch == nil {
		pr.scratch = new(Prediction)
	}
	pr.policy = nil
	e.own()
	m, p := pol.shape, pr.scratch
	m.prepare(e, p)
	pr.terms = append(pr.terms[:0], p.terms...)
	p.terms = pr.terms
	pr.lin, pr.spans, pr.acts = pr.lin[:0], pr.spans[:0], pr.acts[:0]
	for a := range e.n {
		l0, s0 := len(pr.lin), len(pr.spans)
		pr.lin, pr.spans, pr.idx = m.expandLinear(e, a, pr.lin, pr.spans, pr.idx)
		p.clearWhere()
		p.set(pr.lin[l0:], pr.spans[s0:])
		pr.acts = append(pr.acts, preparedAction{lin: [2]int{l0, len(pr.lin)}, spans: [2]int{s0, len(pr.spans)}, nfeat: p.count()})
	}
	p.clearWhere()
	p.lin, p.spans = nil, nil
	pr.policy, pr.version = pol, e.version()
}

// preparedFor returns e's preparation for pol, or nil if there is none or
// e changed since.
func (e *Event) preparedFor(pol *Policy) *prepared {
	if e.prep.policy == pol && e.prep.version == e.version() && e.shared.changes == &e.changes {
		return &e.prep
	}
	return nil
}

func (p *Prediction) spanLen(ns byte) int {
	if w := p.where[ns]; w != 0 {
		s := p.spans[w-1]
		return int(s.end - s.start)
	}
	return 0
}

func (p *Prediction) termPresent(t *term) bool {
	for _, ns := range t.bytes() {
		if p.where[ns] == 0 {
			return false
		}
	}
	return true
}

func (p *Prediction) span(ns byte) []ftr {
	s := p.spans[p.where[ns]-1]
	return p.lin[s.start:s.end]
}

// appendScaled appends the features fs masked to -b bits (unless raw) and
// scaled by the feature width and stride, as VW's setup_example does, and
// returns VW's running sum of their squares.
func (m *Model) appendScaled(dst []ftr, fs []feature) ([]ftr, float32) {
	var sumSq float32
	hashAll := m.policy.hashAll
	for _, f := range fs {
		h := f.hash
		if hashAll {
			h = f.alt
		}
		idx := uint64(h) & m.parseMask
		if f.pos != 0 {
			idx = uint64(h) + uint64(f.pos-1) // a JSON array's number: unmasked
		}
		dst = append(dst, ftr{idx: idx * m.mult, x: f.value})
		sumSq += f.value * f.value
	}
	return dst, sumSq
}

// appendFeatures appends every feature of the action expanded into p, in
// the order VW sums them: the linear features (without the namespaces of
// --ignore_linear), then each interaction term's products.
func (m *Model) appendFeatures(dst []ftr, p *Prediction) []ftr {
	if m.policy.anyIgnoreLin {
		for _, s := range p.spans {
			if !m.policy.ignoreLinear[s.ns] {
				dst = append(dst, p.lin[s.start:s.end]...)
			}
		}
	} else {
		dst = append(dst, p.lin...)
	}
	for i := range p.terms {
		dst = p.appendTerm(dst, &p.terms[i])
	}
	return dst
}

// appendTerm appends the features of one interaction term: VW's
// generate_interactions without permutations. The hash of a feature
// combination is FNV-chained from the scaled indices; a namespace that
// repeats the previous one starts where that one is, so each combination of
// features comes once (the diagonal included).
func (p *Prediction) appendTerm(dst []ftr, t *term) []ftr {
	if !p.termPresent(t) {
		return dst
	}
	if t.n == 2 {
		return appendQuad(dst, p.span(t.ns[0]), p.span(t.ns[1]), t.ns[0] == t.ns[1])
	}
	g := termGen{n: t.n}
	for k, ns := range t.bytes() {
		g.ranges[k] = p.span(ns)
		g.same[k] = k > 0 && ns == t.ns[k-1]
	}
	for i, f := range g.ranges[0] {
		dst = g.gen(dst, 1, i, fnvPrime*f.idx, f.x)
	}
	return dst
}

// quadCount is how many features a quadratic term of first and second
// makes: every pair, or with same (a namespace with itself) each pair once.
func quadCount(first, second []ftr, same bool) int {
	if same {
		return len(first) * (len(first) + 1) / 2
	}
	return len(first) * len(second)
}

// appendQuad appends the features of a quadratic term: dst grows once and
// the loops store by index.
func appendQuad(dst []ftr, first, second []ftr, same bool) []ftr {
	n := quadCount(first, second, same)
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	out := dst[start:]
	k := 0
	for i, f1 := range first {
		h := fnvPrime * f1.idx
		rest := second
		if same {
			rest = second[i:]
		}
		for _, f2 := range rest {
			out[k] = ftr{idx: h ^ f2.idx, x: f1.x * f2.x}
			k++
		}
	}
	return dst
}

// termGen generates the features of a term of three or more namespaces.
type termGen struct {
	n      int
	ranges [maxTermLength][]ftr
	same   [maxTermLength]bool
}

// gen appends the combinations that extend a prefix whose hash is h and
// value x, the prefix's last feature being at position from of its
// namespace.
func (g *termGen) gen(dst []ftr, k, from int, h uint64, x float32) []ftr {
	r := g.ranges[k]
	if !g.same[k] {
		from = 0
	}
	if k == g.n-1 {
		for _, f := range r[from:] {
			dst = append(dst, ftr{idx: f.idx ^ h, x: x * f.x})
		}
		return dst
	}
	for i := from; i < len(r); i++ {
		f := r[i]
		dst = g.gen(dst, k+1, i, fnvPrime*(h^f.idx), f.x*x)
	}
	return dst
}

// sumSq is VW's total_sum_feat_sq of the action expanded into p: the sum
// of the squared values of all its features, interactions included,
// computed per namespace as eval_sum_ft_squared_of_generated_ft does. Only
// plain SGD with --invariant uses it.
func (p *Prediction) sumSq() float32 {
	var sum float32
	for _, s := range p.spans {
		sum += s.sumSq
	}
	var results [maxTermLength]float32
	for i := range p.terms {
		t := &p.terms[i]
		prod := float32(1)
		for k := 0; k < t.n; {
			ns := t.ns[k]
			run := 1
			for k+run < t.n && t.ns[k+run] == ns {
				run++
			}
			if run == 1 {
				if w := p.where[ns]; w != 0 {
					prod *= p.spans[w-1].sumSq
				} else {
					prod = 0
				}
			} else {
				// A namespace repeated run times: the sum over feature
				// combinations with repetition of the product of squares.
				clear(results[:run])
				if p.where[ns] != 0 {
					for _, f := range p.span(ns) {
						x := f.x * f.x
						results[0] += x
						for j := 1; j < run; j++ {
							results[j] += results[j-1] * x
						}
					}
				}
				prod *= results[run-1]
			}
			if prod == 0 {
				break
			}
			k += run
		}
		sum += prod
	}
	return sum
}

// HashedFeature is a feature as a model sees it: the weight it multiplies
// (the index VW's --audit prints) and its value.
type HashedFeature struct {
	Index uint64
	Value float32
}

// Features returns, for each action of e, the features a model with policy p
// sums to score it, in VW's order: the action's namespaces with the shared
// features merged in, the constant, the shared-only namespaces, then the
// interactions. It is meant for tests and debugging and allocates.
func Features(e *Event, p *Policy) [][]HashedFeature {
	m := p.shape
	var pred Prediction
	m.prepare(e, &pred)
	out := make([][]HashedFeature, e.n)
	for a := range e.n {
		m.expand(e, a, &pred)
		for _, f := range m.appendFeatures(nil, &pred) {
			out[a] = append(out[a], HashedFeature{Index: (f.idx & m.mask) >> 2, Value: f.x})
		}
	}
	return out
}
