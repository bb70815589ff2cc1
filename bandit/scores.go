package bandit

// Scores returns dst with the score of each action of e's last prediction
// appended, indexed by action (0-based): with --cb_type mtr a score is the
// predicted cost of the action. Learning from the event with mtr (without
// --bag) keeps the scores of the prediction before learning; with --bag
// they are the last member's.
func (p *Prediction) Scores(dst []float32) []float32 {
	n := len(dst)
	for range p.ranked {
		dst = append(dst, 0)
	}
	for _, r := range p.ranked {
		dst[n+r.action] = r.score
	}
	return dst
}
