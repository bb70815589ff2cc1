package bandit

import (
	"math"
	"slices"
)

// VW's limits on feature values in the normalized update (gd.cc).
var (
	xMin     float32 = 1.084202e-19
	x2Min            = xMin * xMin // a float32 product, as VW's constexpr
	maxFloat float32 = math.MaxFloat32
)

// score is VW's gd predict of the action expanded into p with the model at
// weight offset off: the raw partial prediction, which ranks the actions.
// It generates the quadratic features on the fly (the hot path of Rank and
// of learning) and sums in exactly VW's order.
func (m *Model) score(p *Prediction, off uint64) float32 {
	if m.truncates() || m.policy.anyIgnoreLin {
		p.feats = m.appendFeatures(p.feats[:0], p)
		return m.scoreFeats(p.feats, off)
	}
	w, mask := m.w, m.mask
	var sum float32
	for _, f := range p.lin {
		// The conversion keeps Go from fusing the multiply and add: VW
		// rounds both.
		sum += float32(w[(f.idx+off)&mask] * f.x)
	}
	for i := range p.terms {
		t := &p.terms[i]
		if t.n != 2 {
			p.gen = p.appendTerm(p.gen[:0], t)
			for _, f := range p.gen {
				sum += float32(w[(f.idx+off)&mask] * f.x)
			}
			continue
		}
		wa, wb := p.where[t.ns[0]], p.where[t.ns[1]]
		if wa == 0 || wb == 0 {
			continue
		}
		sa, sb := p.spans[wa-1], p.spans[wb-1]
		first, second := p.lin[sa.start:sa.end], p.lin[sb.start:sb.end]
		if !sa.shared || !sb.shared {
			sum = dotQuad(w, off, first, second, wa == wb, sum)
			continue
		}
		// Both namespaces come from the shared example alone: the products
		// are the same for every action (rank scores all actions with the
		// same weights), so the first action computes them and the others
		// only add them, in the same order.
		c := p.shared.at(i)
		if c.epoch != p.shared.epoch {
			c.prods = quadProducts(w, off, first, second, wa == wb, c.prods[:0])
			c.epoch = p.shared.epoch
		}
		for _, v := range c.prods {
			sum += v
		}
	}
	return sum * float32(m.contraction)
}

// groupable reports whether rank may score the actions of the event
// prepared into p several at a time (see scoreGroup): score's own fast
// path applies (no --l1 truncation, no --ignore_linear) and every
// interaction term is quadratic.
func (m *Model) groupable(p *Prediction) bool {
	if m.truncates() || m.policy.anyIgnoreLin {
		return false
	}
	for i := range p.terms {
		if p.terms[i].n != 2 {
			return false
		}
	}
	return true
}

// groupMax is how many actions scoreGroup scores at once.
const groupMax = 4

// twin returns the linear features of action a of e if they are laid out
// like those of the action expanded into p: the same namespaces, in the
// same order, with as many features each. p.where then serves both. buf
// is the scratch memory (of p.twins) to expand a into if e is not
// prepared.
func (m *Model) twin(e *Event, a int, p *Prediction, buf *twinBuf) ([]ftr, bool) {
	var lin []ftr
	var spans []span
	if pr := p.prep; pr != nil {
		act := &pr.acts[a]
		lin, spans = pr.lin[act.lin[0]:act.lin[1]], pr.spans[act.spans[0]:act.spans[1]]
	} else {
		buf.lin, buf.spans, p.idx = m.expandLinear(e, a, buf.lin[:0], buf.spans[:0], p.idx[:0])
		lin, spans = buf.lin, buf.spans
	}
	if len(spans) != len(p.spans) {
		return nil, false
	}
	for i, s := range spans {
		t := p.spans[i]
		if s.ns != t.ns || s.shared != t.shared || s.start != t.start || s.end != t.end {
			return nil, false
		}
	}
	return lin, true
}

// twinBuf is memory for an action's linear features, see twin.
type twinBuf struct {
	lin   []ftr
	spans []span
}

// scoreGroup is score (its fast path: see groupable) of the actions whose
// linear features are in p.group[:n], n being 2 or groupMax: the one
// expanded into p first, then the ones twin found laid out alike. It
// writes their scores to p.groupScores. Each score is summed in exactly
// score's order, so each is bit for bit what score gives; what scoring
// one action waits for is its chain of dependent float32 additions, and
// the independent chains of several actions in one loop overlap.
func (m *Model) scoreGroup(p *Prediction, n int, off uint64) {
	w := m.w
	mask := uint64(len(w) - 1)
	l0 := p.group[0]
	l1 := p.group[1][:len(l0)]
	var s0, s1, s2, s3 float32
	var l2, l3 []ftr
	if n == groupMax {
		l2, l3 = p.group[2][:len(l0)], p.group[3][:len(l0)]
		for k := range l0 {
			s0 += float32(w[(l0[k].idx+off)&mask] * l0[k].x)
			s1 += float32(w[(l1[k].idx+off)&mask] * l1[k].x)
			s2 += float32(w[(l2[k].idx+off)&mask] * l2[k].x)
			s3 += float32(w[(l3[k].idx+off)&mask] * l3[k].x)
		}
	} else {
		for k := range l0 {
			s0 += float32(w[(l0[k].idx+off)&mask] * l0[k].x)
			s1 += float32(w[(l1[k].idx+off)&mask] * l1[k].x)
		}
	}
	for i := range p.terms {
		t := &p.terms[i]
		wa, wb := p.where[t.ns[0]], p.where[t.ns[1]]
		if wa == 0 || wb == 0 {
			continue
		}
		sa, sb := p.spans[wa-1], p.spans[wb-1]
		switch {
		case sa.shared && sb.shared:
			// The same products for every action, as in score.
			c := p.shared.at(i)
			if c.epoch != p.shared.epoch {
				c.prods = quadProducts(w, off, l0[sa.start:sa.end], l0[sb.start:sb.end], wa == wb, c.prods[:0])
				c.epoch = p.shared.epoch
			}
			if n == groupMax {
				s0, s1, s2, s3 = addFour(c.prods, s0, s1, s2, s3)
			} else {
				for _, v := range c.prods {
					s0 += v
					s1 += v
				}
			}
		case sb.shared:
			// The second namespace is the same for every action (and
			// another than the first).
			second := l0[sb.start:sb.end]
			s0, s1 = dotQuadPairShared(w, off, l0[sa.start:sa.end], l1[sa.start:sa.end], second, s0, s1)
			if n == groupMax {
				s2, s3 = dotQuadPairShared(w, off, l2[sa.start:sa.end], l3[sa.start:sa.end], second, s2, s3)
			}
		default:
			s0, s1 = dotQuadPair(w, off, l0[sa.start:sa.end], l0[sb.start:sb.end],
				l1[sa.start:sa.end], l1[sb.start:sb.end], wa == wb, s0, s1)
			if n == groupMax {
				s2, s3 = dotQuadPair(w, off, l2[sa.start:sa.end], l2[sb.start:sb.end],
					l3[sa.start:sa.end], l3[sb.start:sb.end], wa == wb, s2, s3)
			}
		}
	}
	ct := float32(m.contraction)
	p.groupScores = [groupMax]float32{s0 * ct, s1 * ct, s2 * ct, s3 * ct}
}

// addFour adds the values, in order, to each of four sums.
func addFour(vs []float32, s0, s1, s2, s3 float32) (float32, float32, float32, float32) {
	for _, v := range vs {
		s0 += v
		s1 += v
		s2 += v
		s3 += v
	}
	return s0, s1, s2, s3
}

// dotQuadPair is dotQuad of two actions' namespaces at once: first1 and
// second1 of one, first2 and second2 (of the same lengths) of the other.
//
//go:noinline
func dotQuadPair(w []float32, off uint64, first1, second1, first2, second2 []ftr, same bool, s1, s2 float32) (float32, float32) {
	if len(w) == 0 {
		return s1, s2 // never: the check lets the compiler drop the bounds checks below
	}
	mask := uint64(len(w) - 1)
	first2 = first2[:len(first1)]
	second2 = second2[:len(second1)]
	for j := range first1 {
		h1, v1 := fnvPrime*first1[j].idx, first1[j].x
		h2, v2 := fnvPrime*first2[j].idx, first2[j].x
		k0 := 0
		if same {
			k0 = j
		}
		r1, r2 := second1[k0:], second2[k0:]
		r2 = r2[:len(r1)]
		for k := range r1 {
			s1 += float32(w[((h1^r1[k].idx)+off)&mask] * float32(v1*r1[k].x))
			s2 += float32(w[((h2^r2[k].idx)+off)&mask] * float32(v2*r2[k].x))
		}
	}
	return s1, s2
}

// dotQuadPairShared is dotQuadPair of two actions whose second namespace
// is the same (and another than the first): it reads it once.
//
//go:noinline
func dotQuadPairShared(w []float32, off uint64, first1, first2, second []ftr, s1, s2 float32) (float32, float32) {
	if len(w) == 0 {
		return s1, s2 // never: as in dotQuadPair
	}
	mask := uint64(len(w) - 1)
	first2 = first2[:len(first1)]
	for j := range first1 {
		h1, v1 := fnvPrime*first1[j].idx, first1[j].x
		h2, v2 := fnvPrime*first2[j].idx, first2[j].x
		for k := range second {
			i, x := second[k].idx, second[k].x
			s1 += float32(w[((h1^i)+off)&mask] * float32(v1*x))
			s2 += float32(w[((h2^i)+off)&mask] * float32(v2*x))
		}
	}
	return s1, s2
}

// sharedProducts caches, for one ranking, the products of the interaction
// terms made of shared namespaces only.
type sharedProducts struct {
	epoch uint64 // bumped by every ranking
	terms []sharedTerm
}

type sharedTerm struct {
	epoch uint64
	prods []float32
}

func (c *sharedProducts) at(i int) *sharedTerm {
	for len(c.terms) <= i {
		c.terms = append(c.terms, sharedTerm{})
	}
	return &c.terms[i]
}

// quadProducts appends the weighted products dotQuad would add.
func quadProducts(w []float32, off uint64, first, second []ftr, same bool, dst []float32) []float32 {
	if len(w) == 0 {
		return dst // never: as in dotQuadPair
	}
	mask := uint64(len(w) - 1)
	n := quadCount(first, second, same)
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	out := dst[start:]
	for j := range first {
		h := fnvPrime * first[j].idx
		v := first[j].x
		k0 := 0
		if same {
			k0 = j
		}
		r := second[k0:]
		o := out[:len(r)]
		for k := range r {
			o[k] = float32(w[((h^r[k].idx)+off)&mask] * float32(v*r[k].x))
		}
		out = out[len(r):]
	}
	return dst
}

// dotQuad adds to sum the products of the quadratic interaction of first
// and second (the same namespace if same: then each unordered pair once).
// It is a separate function so that its loop variables stay in registers,
// and w's length is a power of two, so masking with len(w)-1 both wraps the
// index as VW does and lets the compiler drop the bounds check.
//
//go:noinline
func dotQuad(w []float32, off uint64, first, second []ftr, same bool, sum float32) float32 {
	mask := uint64(len(w) - 1)
	for j := range first {
		h := fnvPrime * first[j].idx
		v := first[j].x
		k := 0
		if same {
			k = j
		}
		// Two products per iteration, still added one after the other.
		for ; k+1 < len(second); k += 2 {
			p0 := float32(w[((h^second[k].idx)+off)&mask] * float32(v*second[k].x))
			p1 := float32(w[((h^second[k+1].idx)+off)&mask] * float32(v*second[k+1].x))
			sum += p0
			sum += p1
		}
		if k < len(second) {
			sum += float32(w[((h^second[k].idx)+off)&mask] * float32(v*second[k].x))
		}
	}
	return sum
}

// scoreFeats is score over features already generated into feats. With
// --l1 VW predicts with the weights truncated by the accumulated gravity.
func (m *Model) scoreFeats(feats []ftr, off uint64) float32 {
	var sum float32
	if m.truncates() {
		g := float32(m.gravity)
		for _, f := range feats {
			sum += float32(truncWeight(m.w[(f.idx+off)&m.mask], g) * f.x)
		}
	} else {
		sum = dot(m.w, off, feats)
	}
	return sum * float32(m.contraction)
}

// dot is the sum of the features' values times their weights, in order.
func dot(w []float32, off uint64, feats []ftr) float32 {
	mask := uint64(len(w) - 1)
	var sum float32
	k := 0
	for ; k+1 < len(feats); k += 2 {
		p0 := float32(w[(feats[k].idx+off)&mask] * feats[k].x)
		p1 := float32(w[(feats[k+1].idx+off)&mask] * feats[k+1].x)
		sum += p0
		sum += p1
	}
	if k < len(feats) {
		sum += float32(w[(feats[k].idx+off)&mask] * feats[k].x)
	}
	return sum
}

// truncates reports whether predictions truncate the weights by the
// accumulated gravity: with --l1 only, as VW's reg_mode decides (a VW
// model file keeps the gravity but not --l1, and VW then predicts with
// the weights as they are).
func (m *Model) truncates() bool { return m.gravity != 0 && m.policy.l1 > 0 }

// predictWeight is the weight at index idx (unmasked) that m predicts
// with: with --l1, truncated by the accumulated gravity.
func (m *Model) predictWeight(idx uint64) float32 {
	w := m.w[idx&m.mask]
	if m.truncates() {
		w = truncWeight(w, float32(m.gravity))
	}
	return w
}

// truncWeight is VW's trunc_weight: w moved gravity towards 0, or 0.
func truncWeight(w, gravity float32) float32 {
	if gravity < abs32(w) {
		if w <= 0 {
			return w + gravity
		}
		return w - gravity
	}
	return 0
}

// learnOne is VW's scorer + gd learn of one squared-loss example made of
// the features in p.feats, for the model at weight slot (0, or 1 for dr's
// cost model, more with --bag): widen the label range, predict (clamped),
// and if the loss is positive update the weights with the policy's rule
// (adaptive, normalized and invariant by default). It returns the
// prediction made before the update.
func (m *Model) learnOne(p *Prediction, slot int, y, iw float32) float32 {
	return m.learnScored(p, slot, y, iw, m.scoreFeats(p.feats, uint64(slot)<<2))
}

// learnScored is learnOne when the raw score of p.feats is known.
func (m *Model) learnScored(p *Prediction, slot int, y, iw, raw float32) float32 {
	m.minLabel = min(m.minLabel, y)
	m.maxLabel = max(m.maxLabel, y)
	off := uint64(slot) << 2
	pred := m.clamp(raw)
	if d := pred - y; !(d*d > 0) {
		return pred
	}
	pol := m.policy

	var ppu float32 // how much a unit update moves the prediction
	if pol.adaptive || pol.normalized {
		ppu = m.predPerUpdate(p.feats, off, slot, pred, y, iw)
	} else {
		ppu = p.sumSq()
	}
	scale := pol.eta * iw
	if !pol.adaptive {
		// Plain SGD decays the rate with VW's example counter t.
		t := float32(m.t + float64(iw) - m.tHoldout - m.tUnlabeled)
		scale *= powf(t, -pol.powerT)
	}
	var update float32
	switch {
	case !pol.invariant:
		update = 2 * (y - pred) * scale
	case float64(scale*ppu) < 1e-6:
		// The invariant update of squared loss (loss_functions.cc), with
		// its first order expansion near 0.
		update = 2 * (y - pred) * scale
	default:
		update = (y - pred) * (1 - expf(-2*scale*ppu)) / ppu
	}
	if (pol.l1 > 0 || pol.l2 > 0) && float64(abs32(update)) > 1e-8 {
		// --l1 and --l2 are applied lazily (gd.cc compute_update): the
		// weights shrink by contraction and move towards 0 by gravity at
		// prediction time, until syncWeights applies both.
		dev1 := float64(2 * (pred - y))
		var etaBar float64
		if math.Abs(dev1) > 1e-8 {
			etaBar = -float64(update) / dev1
			m.contraction *= 1 - float64(pol.l2)*etaBar
		}
		update /= float32(m.contraction)
		m.gravity += etaBar * float64(pol.l1)
	}
	if update != update {
		update = 0
	}
	if update != 0 {
		if pol.normalized {
			update *= m.updateMultiplier
		}
		train(m.w, p.feats, off, update, pol.adaptive || pol.normalized)
	}
	if m.contraction < 1e-9 || m.gravity > 1e3 {
		m.syncWeights() // before the numbers degenerate, as VW
	}
	return pred
}

// train is VW's gd train: every weight moves by update times its
// feature's value and, with the adaptive or normalized update (rated), the
// weight's rate.
func train(w []float32, feats []ftr, off uint64, update float32, rated bool) {
	mask := uint64(len(w) - 1)
	for _, f := range feats {
		if !(f.x < maxFloat && f.x > -maxFloat) {
			continue
		}
		i := (f.idx + off) & mask
		x := f.x
		if rated {
			x = float32(x * w[(i+3)&mask])
		}
		w[i] += float32(update * x)
	}
}

// predPerUpdate is VW's get_pred_per_update (pred_per_update_feature for
// every feature, in order): it accumulates the adaptive sums, rescales
// weights whose feature got a larger normalizer, stores each weight's rate
// and returns how much a unit update moves the prediction, scaled by the
// normalized update's multiplier.
func (m *Model) predPerUpdate(feats []ftr, off uint64, slot int, pred, y, iw float32) float32 {
	pol := m.policy
	gradSq := iw * (4 * (pred - y) * (pred - y))
	if gradSq == 0 {
		return 1 // VW returns before touching any state
	}
	var normX, ppu float32
	for k := 0; k < len(feats); k++ {
		if pol.powerT == 0 {
			// The common case runs in a loop without calls, which keeps its
			// variables in registers; it stops at a feature needing more.
			k, normX, ppu = m.constRatePPU(feats, k, off, gradSq, normX, ppu)
			if k == len(feats) {
				break
			}
		}
		nx2, rate := m.ppuFeature(feats[k], off, gradSq)
		normX += nx2
		ppu += rate
	}
	if pol.normalized {
		st := &m.gd[slot]
		st.normSumNormX += float64(iw) * float64(normX)
		st.totalWeight += float64(iw)
		m.updateMultiplier = m.averageUpdate(float32(st.totalWeight), float32(st.normSumNormX))
		ppu *= m.updateMultiplier
	}
	return ppu
}

// ppuFeature is VW's pred_per_update_feature for one feature: it returns
// the feature's share of the normalized norm and x^2 times its rate.
func (m *Model) ppuFeature(f ftr, off uint64, gradSq float32) (nx2, xRate float32) {
	pol := m.policy
	i := (f.idx + off) & m.mask
	s := m.w[i : i+4 : i+4]
	x := f.x
	x2 := x * x
	if x2 < x2Min {
		x = -xMin
		if f.x > 0 {
			x = xMin
		}
		x2 = x2Min
	}
	if pol.adaptive {
		s[1] += float32(gradSq * x2)
	}
	if pol.normalized {
		if ax := abs32(x); ax > s[2] {
			if s[2] > 0 {
				if pol.sqrtRate {
					r := s[2] / ax
					if pol.adaptive {
						s[0] *= r
					} else {
						s[0] *= r * r
					}
				} else {
					r := ax / s[2]
					s[0] *= powf(r*r, pol.powerT-1)
				}
			}
			s[2] = ax
		}
		nx2 = x2 / (s[2] * s[2])
		if x2 > maxFloat {
			nx2 = 1
		}
	}
	s[3] = m.rate(s[1], s[2])
	return nx2, float32(x2 * s[3])
}

// constRatePPU runs ppuFeature over feats from k on for --power_t 0, where
// a weight's rate depends on its normalizer alone: while the normalizer
// does not grow, the rate stored at the weight's last update is still
// right, which spares a powf per feature. It stops at the first feature
// whose normalizer grows or whose rate was never computed, and returns its
// position (len(feats) when done) with the running sums.
func (m *Model) constRatePPU(feats []ftr, k int, off uint64, gradSq, normX, ppu float32) (int, float32, float32) {
	w := m.w
	mask := uint64(len(w) - 1)
	adaptive, normalized := m.policy.adaptive, m.policy.normalized
	if adaptive && normalized {
		// VW's default update, in a loop of its own without the tests of
		// the options.
		xmin2, fmax := x2Min, maxFloat
		for ; k < len(feats); k++ {
			f := feats[k]
			i := (f.idx + off) & mask
			s := w[i : i+4 : i+4]
			x2 := f.x * f.x
			if x2 < xmin2 {
				break
			}
			if s[3] == 0 {
				break
			}
			if abs32(f.x) > s[2] {
				break
			}
			s[1] += float32(gradSq * x2)
			nx2 := x2 / (s[2] * s[2])
			if x2 > fmax {
				nx2 = 1
			}
			normX += nx2
			ppu += float32(x2 * s[3])
		}
		return k, normX, ppu
	}
	for ; k < len(feats); k++ {
		f := feats[k]
		i := (f.idx + off) & mask
		s := w[i : i+4 : i+4]
		x2 := f.x * f.x
		if x2 < x2Min || s[3] == 0 || (normalized && abs32(f.x) > s[2]) {
			break
		}
		if adaptive {
			s[1] += float32(gradSq * x2)
		}
		if normalized {
			nx2 := x2 / (s[2] * s[2])
			if x2 > maxFloat {
				nx2 = 1
			}
			normX += nx2
		}
		ppu += float32(x2 * s[3])
	}
	return k, normX, ppu
}

// rate is VW's compute_rate_decay: G^-power_t for the adaptive update
// times (N^2)^(power_t-1) for the normalized one.
func (m *Model) rate(g, n float32) float32 {
	pol := m.policy
	rate := float32(1)
	if pol.adaptive {
		if pol.sqrtRate {
			rate = invSqrt(g)
		} else {
			rate = powf(g, -pol.powerT)
		}
	}
	if pol.normalized {
		if pol.sqrtRate {
			inv := 1 / n
			if pol.adaptive {
				rate *= inv
			} else {
				rate *= inv * inv
			}
		} else {
			rate *= powf(n*n, pol.powerT-1)
		}
	}
	return rate
}

// averageUpdate is VW's average_update: the normalized update's global
// multiplier from the running weight and normalized norm sums.
func (m *Model) averageUpdate(totalWeight, normSumNormX float32) float32 {
	pol := m.policy
	if pol.sqrtRate {
		avg := totalWeight / normSumNormX
		if pol.adaptive {
			return float32(math.Sqrt(float64(avg)))
		}
		return avg
	}
	return powf(normSumNormX/totalWeight, pol.powerT-1)
}

// syncWeights applies the accumulated --l1 truncation and --l2 contraction
// to every weight, as VW's sync_weights.
func (m *Model) syncWeights() {
	if m.gravity == 0 && m.contraction == 1 {
		return
	}
	g, c := float32(m.gravity), float32(m.contraction)
	for i := 0; i < len(m.w); i += 4 {
		m.w[i] = truncWeight(m.w[i], g) * c
	}
	m.gravity, m.contraction = 0, 1
}

// invSqrt is 1/sqrt(x). VW's release builds use the SSE rsqrtss estimate
// here (only with --power_t 0.5 and the adaptive update), which differs in
// the last bits by CPU, so that path matches VW only approximately.
func invSqrt(x float32) float32 { return float32(1 / math.Sqrt(float64(x))) }

// ApplyRegularization applies the --l1 truncation and --l2 shrinking that
// the update accumulates lazily to the weights themselves, as VW does when
// it loads a model to test with (-t). Predictions stay the same up to
// rounding. Models without --l1 and --l2 are unchanged.
func (m *Model) ApplyRegularization() { m.syncWeights() }
