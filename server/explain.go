package server

import (
	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/decide"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// explanations is [decide.Explanations] for the server's explanations
// outside Rank; Rank's own answers are made in package decide
// ([decide.Decision.Response]), which local inference shares.
func explanations(ex []bandit.Explanation, ids []string, ranking []int) []*personalizerv1.ActionExplanation {
	return decide.Explanations(ex, ids, ranking)
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
