package server

import (
	"github.com/open-personalizer/personalizer/bandit"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// explanations turns the learner's explanation of each action (indexed
// as ids) into the API's, in the order of ranking (action indices): a
// part's score is minus its contribution, since the model predicts cost.
func explanations(ex []bandit.Explanation, ids []string, ranking []int) []*personalizerv1.ActionExplanation {
	out := make([]*personalizerv1.ActionExplanation, 0, len(ranking))
	for _, a := range ranking {
		fs := make([]*personalizerv1.FeatureScore, len(ex[a].Features))
		for i, c := range ex[a].Features {
			fs[i] = &personalizerv1.FeatureScore{Name: c.Name, Score: -c.Score}
		}
		out = append(out, &personalizerv1.ActionExplanation{Id: ids[a], Features: fs})
	}
	return out
}

// restExplanation is an ActionExplanation in Personalizer's JSON:
// {"id": ..., "features": [{"name": ..., "score": ...}]}.
type restExplanation struct {
	ID       string             `json:"id"`
	Features []restFeatureScore `json:"features"`
}

type restFeatureScore struct {
	Name  string  `json:"name"`
	Score float32 `json:"score"`
}

// restExplanations converts explanations to Personalizer's JSON.
func restExplanations(ex []*personalizerv1.ActionExplanation) []restExplanation {
	out := make([]restExplanation, len(ex))
	for i, a := range ex {
		out[i] = restExplanation{ID: a.GetId(), Features: make([]restFeatureScore, len(a.GetFeatures()))}
		for j, f := range a.GetFeatures() {
			out[i].Features[j] = restFeatureScore{Name: f.GetName(), Score: f.GetScore()}
		}
	}
	return out
}
