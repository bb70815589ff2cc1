package decide

import (
	"github.com/open-personalizer/personalizer/bandit"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// ExplainTop is how many features an inline explanation names per action
// (Settings.Explain): the largest parts of its score.
const ExplainTop = 10

// Explanations turns the learner's explanation of each action (indexed
// as ids) into the API's, in the order of ranking (action indices): a
// part's score is minus its contribution, since the model predicts cost
// (0 - x, not -x: a part of 0 is 0, not -0, which proto does not send
// and JSON writes as -0).
func Explanations(ex []bandit.Explanation, ids []string, ranking []int) []*personalizerv1.ActionExplanation {
	out := make([]*personalizerv1.ActionExplanation, 0, len(ranking))
	for _, a := range ranking {
		fs := make([]*personalizerv1.FeatureScore, len(ex[a].Features))
		for i, c := range ex[a].Features {
			fs[i] = &personalizerv1.FeatureScore{Name: c.Name, Score: 0 - c.Score}
		}
		out = append(out, &personalizerv1.ActionExplanation{Id: ids[a], Features: fs})
	}
	return out
}
