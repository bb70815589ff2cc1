package bandit

import "slices"

// ftr is a feature ready for the weights: its index is scaled by the model's
// feature width and stride but not yet offset or masked, as VW keeps it.
type ftr struct {
	idx uint64
	x   float32
}

// span is one namespace of an expanded action: lin[start:end].
type span struct {
	ns         byte
	start, end int32
}

// interactionPairs compiles the -q terms for event e into p.pairs the way VW
// does: wildcards expand over the namespaces seen (' ' to '~'), then the list
// is sorted and pairs naming the same two namespaces are kept once.
//
// VW expands over every namespace seen since the model started, but an
// interaction with a namespace an example lacks contributes nothing, so
// expanding over the namespaces of this event gives the same features.
func (m *Model) interactionPairs(e *Event, p *Prediction) {
	p.pairs = p.pairs[:0]
	terms := m.policy.interactions
	if len(terms) == 0 {
		return
	}
	var present [256]bool
	p.idx = e.shared.indices(p.idx[:0])
	for a := range e.n {
		p.idx = e.actions[a].indices(p.idx)
	}
	for _, ns := range p.idx {
		present[ns] = ns >= ' ' && ns <= '~'
	}
	for _, t := range terms {
		switch {
		case t[0] == ':' && t[1] == ':':
			for a := ' '; a <= '~'; a++ {
				if !present[a] {
					continue
				}
				for b := a; b <= '~'; b++ {
					if present[b] {
						p.pairs = append(p.pairs, uint16(a)<<8|uint16(b))
					}
				}
			}
		case t[0] == ':' || t[1] == ':':
			for c := ' '; c <= '~'; c++ {
				if !present[c] {
					continue
				}
				u := t
				if t[0] == ':' {
					u[0] = byte(c)
				} else {
					u[1] = byte(c)
				}
				p.pairs = append(p.pairs, uint16(u[0])<<8|uint16(u[1]))
			}
		default:
			p.pairs = append(p.pairs, uint16(t[0])<<8|uint16(t[1]))
		}
	}
	slices.Sort(p.pairs)
	// Keep the first of the pairs that name the same two namespaces ("UA" and
	// "AU"), in sorted order, as VW's sort_and_filter_duplicate_interactions.
	kept := p.pairs[:0]
	for _, pr := range p.pairs {
		a, b := byte(pr>>8), byte(pr)
		key := uint16(min(a, b))<<8 | uint16(max(a, b))
		if p.seenPair[key/64]&(1<<(key%64)) != 0 {
			continue
		}
		p.seenPair[key/64] |= 1 << (key % 64)
		kept = append(kept, pr)
	}
	for _, pr := range kept {
		a, b := byte(pr>>8), byte(pr)
		key := uint16(min(a, b))<<8 | uint16(max(a, b))
		p.seenPair[key/64] = 0
	}
	p.pairs = kept
}

// expand prepares p to visit the features of action a (see
// [Prediction.features]) and returns how many there are: the action's
// namespaces with the shared features of the same namespace appended, the
// constant, the namespaces only the shared example has, then the quadratic
// interactions of p.pairs. VW computes interactions on the fly, so do we:
// -q :: on a long line would otherwise take memory quadratic in its length.
func (m *Model) expand(e *Event, a int, p *Prediction) int {
	for _, s := range p.spans {
		p.where[s.ns] = 0
	}
	act, sh := e.actions[a], &e.shared
	p.lin, p.spans = p.lin[:0], p.spans[:0]
	p.idx = act.indices(p.idx[:0])
	for _, ns := range p.idx {
		start := len(p.lin)
		p.lin = m.appendScaled(p.lin, act.group(ns))
		p.lin = m.appendScaled(p.lin, sh.group(ns))
		p.spans = append(p.spans, span{ns: ns, start: int32(start), end: int32(len(p.lin))})
	}
	p.lin = append(p.lin, ftr{idx: constantIndex * m.mult, x: 1})
	p.spans = append(p.spans, span{ns: constantNamespace, start: int32(len(p.lin) - 1), end: int32(len(p.lin))})
	p.idx = sh.indices(p.idx[:0])
	for _, ns := range p.idx {
		if len(act.group(ns)) > 0 {
			continue // merged above
		}
		start := len(p.lin)
		p.lin = m.appendScaled(p.lin, sh.group(ns))
		p.spans = append(p.spans, span{ns: ns, start: int32(start), end: int32(len(p.lin))})
	}

	n := len(p.lin)
	for i, s := range p.spans {
		if s.ns != constantNamespace {
			p.where[s.ns] = int32(i) + 1
		}
	}
	for _, pr := range p.pairs {
		wa, wb := p.where[byte(pr>>8)], p.where[byte(pr)]
		if wa == 0 || wb == 0 {
			continue
		}
		na, nb := int(p.spans[wa-1].end-p.spans[wa-1].start), int(p.spans[wb-1].end-p.spans[wb-1].start)
		if wa == wb {
			n += na * (na + 1) / 2
		} else {
			n += na * nb
		}
	}
	return n
}

// features visits the features of the action last expanded into p in VW's
// order: the linear ones, then each interaction pair's products, where a
// namespace interacting with itself gives each unordered pair once, the
// diagonal included.
func (p *Prediction) features(yield func(ftr) bool) {
	for _, f := range p.lin {
		if !yield(f) {
			return
		}
	}
	for _, pr := range p.pairs {
		wa, wb := p.where[byte(pr>>8)], p.where[byte(pr)]
		if wa == 0 || wb == 0 {
			continue
		}
		sa, sb := p.spans[wa-1], p.spans[wb-1]
		first, second := p.lin[sa.start:sa.end], p.lin[sb.start:sb.end]
		for i, f1 := range first {
			half := fnvPrime * f1.idx
			rest := second
			if wa == wb {
				rest = second[i:]
			}
			for _, f2 := range rest {
				if !yield(ftr{idx: half ^ f2.idx, x: f1.x * f2.x}) {
					return
				}
			}
		}
	}
}

// appendScaled appends the features fs masked to -b bits (unless raw) and
// scaled by the feature width and stride, as VW's setup_example does.
func (m *Model) appendScaled(dst []ftr, fs []feature) []ftr {
	for _, f := range fs {
		idx := f.index
		if !f.raw {
			idx &= m.parseMask
		}
		dst = append(dst, ftr{idx: idx * m.mult, x: f.value})
	}
	return dst
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
// quadratic interactions. It is meant for tests and debugging and allocates.
func Features(e *Event, p *Policy) [][]HashedFeature {
	m := shape(p)
	var pred Prediction
	m.interactionPairs(e, &pred)
	out := make([][]HashedFeature, e.n)
	for a := range e.n {
		m.expand(e, a, &pred)
		for f := range pred.features {
			out[a] = append(out[a], HashedFeature{Index: (f.idx & m.mask) >> 2, Value: f.x})
		}
	}
	return out
}
