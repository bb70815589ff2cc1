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
	m.rank(e, p, 0, false)
	out := make([]Explanation, e.n)
	for _, r := range p.ranked {
		out[r.action] = Explanation{Action: r.action, Score: r.score}
	}
	sums := make([]map[string]float32, e.n)
	m.named(e, p, 1, func(a int, f ftr, _ uint64, name string) {
		if sums[a] == nil {
			sums[a] = make(map[string]float32)
		}
		sums[a][name] += float32(m.predictWeight(f.idx)*f.x) * float32(m.contraction)
	})
	for a, sum := range sums {
		if sum != nil {
			out[a].Features = topContributions(sum, top)
		}
	}
	return out
}

// topContributions returns the top largest of sum (all if top <= 0) in
// the order Explain gives: by magnitude, largest first, ties by name. It
// keeps the top in order as it goes rather than sorting them all: an
// action of -q :: has hundreds of features, and Rank explains every action.
func topContributions(sum map[string]float32, top int) []Contribution {
	if top <= 0 || top > len(sum) {
		top = len(sum)
	}
	cs := make([]Contribution, 0, top)
	for name, s := range sum {
		c := Contribution{Name: name, Score: s}
		if len(cs) == top && !before(c, cs[top-1]) {
			continue
		}
		i, _ := slices.BinarySearchFunc(cs, c, func(x, y Contribution) int {
			if before(x, y) {
				return -1
			}
			return 1 // names are distinct: never equal
		})
		if len(cs) < top {
			cs = append(cs, Contribution{})
		}
		copy(cs[i+1:], cs[i:len(cs)-1])
		cs[i] = c
	}
	return cs
}

// before reports whether x comes before y in an explanation.
func before(x, y Contribution) bool {
	if c := cmp.Compare(abs32(y.Score), abs32(x.Score)); c != 0 {
		return c < 0
	}
	return x.Name < y.Name
}
