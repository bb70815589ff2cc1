package bandit

import (
	"cmp"
	"slices"
)

// Contribution is one feature's part in an action's score: the weight the
// model gives it times its value (with --l1, the truncated weight VW
// predicts with), as VW's --audit prints it. With --cb_type mtr, ips or dr
// a score is a predicted cost, so a negative contribution makes the action
// more likely to be chosen.
type Contribution struct {
	Name  string  // as --invert_hash names it: "Ns^feature", interactions joined by '*'
	Score float32 // weight × value
}

// Explanation is an action's score and its features' contributions to it.
type Explanation struct {
	Action int     // 0-based, as in e
	Score  float32 // the score the action is ranked by (see [Prediction.Scores])
	// Features holds the largest contributions by magnitude, largest
	// first, ties by name. A feature that occurs more than once (e.g. the
	// same name in the shared and the action example) is summed.
	Features []Contribution
}

// Explain returns, for each action of e in order, its score under m and
// the top contributions to it (all of them if top <= 0). It explains the
// policy's first model (the one ranking the actions; with --bag the first
// member). e must have been parsed or built with [Event.SetKeepNames]:
// features without a name are left out of Features but not of Score. It
// does not modify m or e, and it allocates: it is meant for the audit and
// explanation paths, not for ranking.
func (m *Model) Explain(e *Event, p *Prediction, top int) []Explanation {
	m.prepare(e, p)
	g := float32(m.gravity)
	out := make([]Explanation, e.n)
	p.shared.epoch++ // as rank does: score caches shared products per event
	for a := range e.n {
		m.expand(e, a, p)
		ex := &out[a]
		ex.Action, ex.Score = a, m.score(p, 0)
		feats := m.appendFeatures(p.feats[:0], p)
		p.feats = feats
		names := m.appendNames(nil, p, m.linNames(e, a))
		if len(names) != len(feats) {
			continue // built without names
		}
		sum := make(map[string]float32)
		for i, f := range feats {
			if names[i] == "" {
				continue
			}
			w := m.w[f.idx&m.mask]
			if m.truncates() {
				w = truncWeight(w, g)
			}
			sum[names[i]] += float32(w*f.x) * float32(m.contraction)
		}
		cs := make([]Contribution, 0, len(sum))
		for name, s := range sum {
			cs = append(cs, Contribution{Name: name, Score: s})
		}
		slices.SortFunc(cs, func(x, y Contribution) int {
			if c := cmp.Compare(abs32(y.Score), abs32(x.Score)); c != 0 {
				return c
			}
			return cmp.Compare(x.Name, y.Name)
		})
		if top > 0 && len(cs) > top {
			cs = cs[:top]
		}
		ex.Features = cs
	}
	return out
}
