package bandit

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Names calls visit with the weight slot (the index VW's readable model
// prints) and the name of every feature m uses to score the actions of e,
// for each of its models, as VW's --invert_hash records them: "Ns^feature",
// interactions joined by '*', and "[k]" after features of model k > 0 (dr's
// cost model, --bag's members). e must have been parsed or built with
// [Event.SetKeepNames]; features without a name are skipped. It allocates.
//
// For a multi-slot event, p must hold the decisions [Model.Process] made
// for it: they decide which actions each slot scored.
func (m *Model) Names(e *Event, p *Prediction, visit func(slot uint64, name string)) {
	if e.nslots > 0 {
		m.namesCCB(e, p, visit)
		return
	}
	m.named(e, p, m.policy.width(), func(_ int, f ftr, k uint64, name string) {
		visit(((f.idx+k<<2)&m.mask)>>2, name)
	})
}

// Contributions calls visit for every action of e with each named
// feature m scores it with, as [Model.Names] names them, its value x (an
// interaction's is the product of its features' values) and the weight w
// m predicts with: an action's score is the sum of w·x over its features
// of model 0. e must keep names, as for Names. It allocates.
func (m *Model) Contributions(e *Event, p *Prediction, visit func(action int, name string, x, w float32)) {
	m.named(e, p, m.policy.width(), func(a int, f ftr, k uint64, name string) {
		visit(a, name, f.x, m.predictWeight(f.idx+k<<2)*float32(m.contraction))
	})
}

// named calls visit for every action of e with each named feature m
// scores it with, for each of the first models k, and its name with the
// "[k]" suffix.
func (m *Model) named(e *Event, p *Prediction, models uint64, visit func(a int, f ftr, k uint64, name string)) {
	m.prepare(e, p)
	for a := range e.n {
		m.expand(e, a, p)
		names := m.linNames(e, a)
		feats := m.appendFeatures(p.feats[:0], p)
		all := m.appendNames(nil, p, names)
		if len(all) != len(feats) {
			continue // an event built without names
		}
		for k := range models {
			suffix := ""
			if k > 0 {
				suffix = "[" + strconv.FormatUint(k, 10) + "]"
			}
			for i, f := range feats {
				if all[i] != "" {
					visit(a, f, k, all[i]+suffix)
				}
			}
		}
	}
}

// linNames returns the names of the linear features expand puts in p.lin
// for action a of e, in the same order.
func (m *Model) linNames(e *Event, a int) []string {
	pol := m.policy
	act, sh := e.actions[a], &e.shared
	var out []string
	for _, ns := range act.indices(nil) {
		if !pol.ignore[ns] {
			out = append(out, act.groupNames(ns)...)
			out = append(out, sh.groupNames(ns)...)
		}
	}
	if !pol.noConstant {
		out = append(out, "Constant")
	}
	for _, ns := range sh.indices(nil) {
		if !pol.ignore[ns] && len(act.group(ns)) == 0 {
			out = append(out, sh.groupNames(ns)...)
		}
	}
	return out
}

func (x *Example) groupNames(ns byte) []string {
	if s := x.slot[ns]; s != 0 {
		g := &x.groups[s-1]
		if len(g.names) == len(g.feats) {
			return g.names
		}
		return make([]string, len(g.feats)) // added without names
	}
	return nil
}

// appendNames appends the names of the features appendFeatures appends,
// in the same order.
func (m *Model) appendNames(dst []string, p *Prediction, lin []string) []string {
	if len(lin) != len(p.lin) {
		return dst
	}
	for _, s := range p.spans {
		if !m.policy.ignoreLinear[s.ns] {
			dst = append(dst, lin[s.start:s.end]...)
		}
	}
	for i := range p.terms {
		t := &p.terms[i]
		if !p.termPresent(t) {
			continue
		}
		var ranges [maxTermLength][]string
		var same [maxTermLength]bool
		for k, ns := range t.bytes() {
			s := p.spans[p.where[ns]-1]
			ranges[k] = lin[s.start:s.end]
			same[k] = k > 0 && ns == t.ns[k-1]
		}
		dst = genNames(dst, ranges[:t.n], same[:t.n], 0, 0, "")
	}
	return dst
}

// genNames mirrors termGen.gen for names.
func genNames(dst []string, ranges [][]string, same []bool, k, from int, prefix string) []string {
	if !same[k] {
		from = 0
	}
	for i := from; i < len(ranges[k]); i++ {
		name := ranges[k][i]
		if k > 0 {
			name = prefix + "*" + name
		}
		if k == len(ranges)-1 {
			dst = append(dst, name)
		} else {
			dst = genNames(dst, ranges, same, k+1, i, name)
		}
	}
	return dst
}

// WriteReadable writes m as text in the layout of VW's --readable_model:
// a header (VW version, label range, bits, options), the learning state,
// then one line per weight slot in use, "slot:weight" followed by the
// adaptive sum and normalizer when the update keeps them. With names (slot
// to feature name, see [Model.Names]) a line starts with the feature's
// name, as --invert_hash writes it.
func (m *Model) WriteReadable(w io.Writer, names map[uint64]string) error {
	b := bufio.NewWriter(w)
	pol := m.policy
	g := func(f float64) string { return strconv.FormatFloat(f, 'g', 6, 64) }
	fmt.Fprintf(b, "Version 9.11.2\nId \nMin label:%s\nMax label:%s\nbits:%d\nlda:0\n0 ngram:\n0 skip:\noptions: %s\n",
		g(float64(m.minLabel)), g(float64(m.maxLabel)), pol.bits, strings.Join(strings.Fields(pol.args), " "))
	for i, st := range m.mtr {
		if pol.cbType == cbMTR {
			fmt.Fprintf(b, "event_sum_%d %d\naction_sum_%d %d\n", i, st.events, i, st.actions)
		}
	}
	switch pol.explore {
	case exploreFirst:
		fmt.Fprintf(b, "cb first adf storing example counter:  = %d\n", m.tau)
	case exploreSquareCB:
		fmt.Fprintf(b, "cb squarecb adf storing example counter:  = %d\n", m.counter)
	}
	fmt.Fprintf(b, ":1\ninitial_t %s\n", g(float64(pol.initialT)))
	for i, st := range m.gd {
		fmt.Fprintf(b, "norm normalizer_%d %s\ntotal_weight_%d %s\n", i, g(st.normSumNormX), i, g(st.totalWeight))
	}
	fmt.Fprintf(b, "t %s\nl1_state %s\nl2_state %s\n", g(m.t), g(m.gravity), g(m.contraction))
	f := func(v float32) string { return strconv.FormatFloat(float64(v), 'g', 6, 32) }
	for slot := 0; slot < len(m.w); slot += 4 {
		s := m.w[slot : slot+4]
		var line string
		switch {
		case pol.adaptive && pol.normalized:
			if s[0] == 0 && s[1] == 0 && s[2] == 0 {
				continue
			}
			line = f(s[0]) + " " + f(s[1]) + " " + f(s[2])
		case pol.adaptive || pol.normalized:
			extra := s[1]
			if !pol.adaptive {
				extra = s[2]
			}
			if s[0] == 0 && extra == 0 {
				continue
			}
			line = f(s[0]) + " " + f(extra)
		default:
			if s[0] == 0 {
				continue
			}
			line = f(s[0])
		}
		index := uint64(slot / 4)
		if name, ok := names[index]; ok {
			b.WriteString(name)
			b.WriteByte(':')
		}
		b.WriteString(strconv.FormatUint(index, 10))
		b.WriteByte(':')
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Flush()
}
