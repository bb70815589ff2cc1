package server

import (
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

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
