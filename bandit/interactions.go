package bandit

import (
	"bytes"
	"cmp"
	"slices"
)

// term is one interaction: the namespace indices whose features are
// multiplied, ':' standing for any namespace until it is compiled.
type term struct {
	n  int
	ns [maxTermLength]byte
}

func (t *term) bytes() []byte { return t.ns[:t.n] }

func (t *term) hasWildcard() bool { return slices.Contains(t.bytes(), ':') }

// sortTerms orders terms as VW's parse_feature_tweaks does: by length, then
// lexicographically, then it drops duplicates with filterTerms.
func sortTerms(raw [][]byte) []term {
	ts := make([]term, 0, len(raw))
	for _, r := range raw {
		var t term
		t.n = copy(t.ns[:], r)
		ts = append(ts, t)
	}
	slices.SortFunc(ts, compareTerms)
	return filterTerms(ts, nil)
}

// compareTerms is VW's sort_interactions_comparator.
func compareTerms(a, b term) int {
	if a.n != b.n {
		return cmp.Compare(a.n, b.n)
	}
	return bytes.Compare(a.bytes(), b.bytes())
}

type sortedTerm struct {
	t   term // the term's namespaces sorted
	pos int  // its position in the input
}

// filterTerms is VW's sort_and_filter_duplicate_interactions: terms naming
// the same namespaces in any order are kept once (the first), and a term
// that repeats a namespace besides others is rewritten in sorted order so
// that equal namespaces are adjacent ("UAU" becomes "AUU"). It works in
// place; scratch is reused memory.
func filterTerms(ts []term, scratch *[]sortedTerm) []term {
	var s []sortedTerm
	if scratch != nil {
		s = (*scratch)[:0]
	}
	for i, t := range ts {
		st := t
		slices.Sort(st.ns[:st.n])
		s = append(s, sortedTerm{st, i})
	}
	slices.SortStableFunc(s, func(a, b sortedTerm) int { return bytes.Compare(a.t.bytes(), b.t.bytes()) })
	s = slices.CompactFunc(s, func(a, b sortedTerm) bool { return bytes.Equal(a.t.bytes(), b.t.bytes()) })
	slices.SortFunc(s, func(a, b sortedTerm) int { return cmp.Compare(a.pos, b.pos) })
	// s is in input order with s[k].pos >= k, so writing ts[k] never
	// overwrites a term still to be read.
	for k, e := range s {
		if mustBeLeftSorted(e.t.bytes()) {
			ts[k] = e.t
		} else {
			ts[k] = ts[e.pos]
		}
	}
	if scratch != nil {
		*scratch = s
	}
	return ts[:len(s)]
}

// mustBeLeftSorted is VW's must_be_left_sorted on a sorted term: true when
// it repeats a namespace and also has a different one.
func mustBeLeftSorted(t []byte) bool {
	if len(t) <= 1 {
		return true
	}
	diff, pair := false, false
	for i := 0; i < len(t)-1; i++ {
		if t[i] == t[i+1] {
			if diff {
				return true
			}
			pair = true
		} else {
			if pair {
				return true
			}
			diff = true
		}
	}
	return false
}

// nsSet is a set of namespace indices VW's wildcards range over: ' ' to
// '~', and 139, where a multi-slot event's slot features go
// (interactions.h is_interaction_ns).
type nsSet [2]uint64

func (s *nsSet) add(ns byte) {
	if ns >= ' ' && ns <= '~' || ns == ccbSlotNamespace {
		s[(ns-' ')/64] |= 1 << ((ns - ' ') % 64)
	}
}

func (s *nsSet) has(ns byte) bool { return s[(ns-' ')/64]&(1<<((ns-' ')%64)) != 0 }

// termCache holds the terms compiled for one set of namespaces, so events
// with the same namespaces (the usual case) reuse them.
type termCache struct {
	policy  *Policy
	key     nsSet
	terms   []term
	present []byte
	scratch []sortedTerm
	combo   []int
}

// compile returns the policy's terms with wildcards expanded over the
// namespaces in set, as VW's generate_interactions reduction does: each ':'
// ranges over the namespaces (combinations with repetition), the fixed
// namespaces keep their positions, then the list is sorted and filtered
// again.
//
// VW expands over every namespace seen since the model started, not just
// this event's. The terms it adds for absent namespaces contribute no
// features, and sorting and filtering treat the others identically, so
// expanding over the event's namespaces gives the same features in the same
// order.
func (c *termCache) compile(p *Policy, set nsSet) []term {
	if !p.wildcard {
		return p.terms
	}
	if c.policy == p && c.key == set && c.terms != nil {
		return c.terms
	}
	c.policy, c.key = p, set
	c.present = c.present[:0]
	for ns := byte(' '); ns <= '~'; ns++ {
		if set.has(ns) {
			c.present = append(c.present, ns)
		}
	}
	if set.has(ccbSlotNamespace) {
		c.present = append(c.present, ccbSlotNamespace)
	}
	c.terms = c.terms[:0]
	if len(c.present) == 0 {
		return c.terms // VW generates no interactions at all then
	}
	for _, t := range p.terms {
		if !t.hasWildcard() {
			c.terms = append(c.terms, t)
			continue
		}
		c.expand(t)
	}
	slices.SortFunc(c.terms, compareTerms)
	c.terms = filterTerms(c.terms, &c.scratch)
	return c.terms
}

// expand appends t with its k wildcards replaced by every k-tuple of
// present namespaces with repetition, in VW's form: two wildcards by each
// ascending pair (generate_interactions' quadratic fast path), any other
// number by each non-increasing tuple
// (generate_namespace_combinations_with_repetition). compile then sorts the
// terms and rewrites those that repeat a namespace in ascending order, so
// the form decides only the terms of three or more distinct namespaces:
// VW's --cubic ::: over A, S, U makes "USA", whose features are generated
// in that order.
func (c *termCache) expand(t term) {
	k := 0
	for _, ns := range t.bytes() {
		if ns == ':' {
			k++
		}
	}
	c.combo = c.combo[:0]
	for range k {
		c.combo = append(c.combo, 0)
	}
	for {
		out := t
		j := 0
		for i, ns := range t.bytes() {
			if ns == ':' {
				if k == 2 {
					out.ns[i] = c.present[c.combo[j]]
				} else {
					out.ns[i] = c.present[c.combo[k-1-j]]
				}
				j++
			}
		}
		c.terms = append(c.terms, out)
		// Next non-decreasing tuple of indices into present.
		i := k - 1
		for i >= 0 && c.combo[i] == len(c.present)-1 {
			i--
		}
		if i < 0 {
			return
		}
		c.combo[i]++
		for j := i + 1; j < k; j++ {
			c.combo[j] = c.combo[i]
		}
	}
}
