package bandit

import (
	"math"
	"slices"
)

// explore turns the ranked scores in p.ranked into p.pmf with the policy's
// exploration algorithm (VW's cb_explore_adf_greedy, _first, _softmax and
// _squarecb). The PMF keeps the ranked order: best action first. eps is
// epsilon-greedy's epsilon; the other algorithms use the policy's.
func (m *Model) explore(p *Prediction, n int, eps float32) {
	pol := m.policy
	p.pmf = p.pmf[:0]
	for _, r := range p.ranked {
		p.pmf = append(p.pmf, ActionProb{Action: r.action})
	}
	if n == 0 {
		return
	}
	switch pol.explore {
	case exploreGreedy:
		// Every action gets epsilon/K; the actions tied with the best
		// (within a relative 1e-4) share the rest, or only the first with
		// --first_only.
		base := eps / float32(n)
		for i := range p.pmf {
			p.pmf[i].Prob = base
		}
		if pol.firstOnly {
			p.pmf[0].Prob += 1 - eps
			return
		}
		tied := fillTied(p.ranked)
		for i := range tied {
			p.pmf[i].Prob += (1 - eps) / float32(tied)
		}
	case exploreFirst:
		// Uniform while exploring, then all on the best action.
		if m.tau > 0 {
			for i := range p.pmf {
				p.pmf[i].Prob = 1 / float32(n)
			}
		} else {
			p.pmf[0].Prob = 1
		}
		enforceMinimumProbability(pol.epsilon, p.pmf, &p.sorted)
	case exploreSoftmax:
		// VW's generate_softmax with -lambda: lower scores (costs) are better.
		lambda := -pol.lambda
		lowest := p.ranked[0].score
		for _, r := range p.ranked {
			lowest = min32(lowest, r.score)
		}
		var norm float32
		for i, r := range p.ranked {
			prob := expf(lambda * (r.score - lowest))
			norm += prob
			p.pmf[i].Prob = prob
		}
		for i := range p.pmf {
			p.pmf[i].Prob /= norm
		}
		enforceMinimumProbability(pol.epsilon, p.pmf, &p.sorted)
	case exploreSquareCB:
		// Inverse gap weighting: 1/(K + gamma*(score - best)) for the others,
		// the rest for the best; gamma grows with the learned events.
		gamma := pol.gammaScale * float32(powCounter(m.counter, pol.gammaExponent))
		best, lowest := 0, p.ranked[0].score
		for a, r := range p.ranked {
			if r.score < lowest {
				best, lowest = a, r.score
			}
		}
		var total float32
		for a, r := range p.ranked {
			if a == best {
				continue
			}
			pa := 1 / (float32(n) + gamma*(r.score-lowest))
			p.pmf[a].Prob = pa
			total += pa
		}
		p.pmf[best].Prob = 1 - total
		enforceMinimumProbability(pol.epsilon, p.pmf, &p.sorted)
	}
}

// min32 is C++'s std::min_element comparison: NaN never replaces the
// current minimum.
func min32(a, b float32) float32 {
	if b < a {
		return b
	}
	return a
}

// powCounter is std::pow(counter, exponent) in double, as SquareCB computes
// gamma. glibc's pow is correctly rounded where it matters here; math.Sqrt
// is exactly so for the default exponent 0.5.
func powCounter(counter uint64, exponent float32) float64 {
	if exponent == 0.5 {
		return math.Sqrt(float64(counter))
	}
	return math.Pow(float64(counter), float64(exponent))
}

// fillTied is VW's fill_tied: how many leading ranked actions score within
// a relative 1e-4 of the best.
func fillTied(r []ranked) int {
	if len(r) == 0 {
		return 0
	}
	tied := 1
	for tied < len(r) && sameRel(r[tied].score, r[0].score) {
		tied++
	}
	return tied
}

// predictBag is VW's cb_explore_adf_bag predict: every bootstrapped model
// ranks the actions and votes for its best (ties split the vote); the PMF
// is the share of votes with an epsilon floor, ordered by decreasing
// probability, then by summed score, then by action.
func (m *Model) predictBag(e *Event, p *Prediction) {
	pol := m.policy
	n := e.n
	p.scores = zeros(p.scores, n)
	p.top = zeros(p.top, n)
	for i := range pol.bag {
		m.rank(e, p, i*int(pol.cbWidth()), i == 0)
		for _, r := range p.ranked {
			p.scores[r.action] += r.score
		}
		if len(p.ranked) == 0 {
			continue
		}
		if pol.firstOnly {
			p.top[p.ranked[0].action]++
			continue
		}
		tied := fillTied(p.ranked)
		for _, r := range p.ranked[:tied] {
			p.top[r.action] += 1 / float32(tied)
		}
	}
	p.pmf = p.pmf[:0]
	if n == 0 {
		return
	}
	var votes float64 // VW's std::accumulate starts from the double 0.
	for _, v := range p.top {
		votes += float64(v)
	}
	models := float32(votes)
	for a := range n {
		p.pmf = append(p.pmf, ActionProb{Action: a})
	}
	if float64(models) <= 1e-6 {
		p.pmf[0].Prob = 1
	} else {
		norm := 1 / models
		for a, v := range p.top {
			p.pmf[a].Prob = v * norm
		}
	}
	enforceMinimumProbability(pol.epsilon, p.pmf, &p.sorted)
	slices.SortFunc(p.pmf, func(a, b ActionProb) int {
		switch {
		case a.Prob > b.Prob:
			return -1
		case a.Prob < b.Prob:
			return 1
		case p.scores[a.Action] < p.scores[b.Action]:
			return -1
		case p.scores[a.Action] > p.scores[b.Action]:
			return 1
		}
		return a.Action - b.Action
	})
}

// enforceMinimumProbability is VW's enforce_minimum_probability (zero
// entries included): it raises every probability to at least epsilon/K and
// takes the mass from the largest ones, keeping the sum 1.
func enforceMinimumProbability(eps float32, pmf []ActionProb, scratch *[]float32) {
	if len(pmf) == 0 || eps == 0 {
		return
	}
	support := len(pmf)
	if eps > 0.999 {
		for i := range pmf {
			pmf[i].Prob = 1 / float32(support)
		}
		return
	}
	minProb := eps / float32(support)
	sorted := (*scratch)[:0]
	for _, ap := range pmf {
		sorted = append(sorted, ap.Prob)
	}
	*scratch = sorted
	slices.SortFunc(sorted, func(a, b float32) int {
		switch {
		case a > b:
			return -1
		case a < b:
			return 1
		}
		return 0
	})
	var running float32
	rho, rhoSum := 0, sorted[0]
	for idx, prob := range sorted {
		running += prob
		if prob > (float32(support-idx-1)*minProb+running-1)/(float32(idx)+1)+minProb {
			rho, rhoSum = idx, running
		}
	}
	tau := ((float32(support-rho)-1)*minProb + rhoSum - 1) / (float32(rho) + 1)
	for i := range pmf {
		v := pmf[i].Prob - tau
		if v < minProb {
			v = minProb
		}
		pmf[i].Prob = v
	}
}

// zeros returns s resized to n zeros, reusing its memory.
func zeros(s []float32, n int) []float32 {
	s = slices.Grow(s[:0], n)[:n]
	clear(s)
	return s
}
