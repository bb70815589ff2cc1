package sim

import (
	"fmt"
	"math/rand/v2"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Request returns a Rank request of the shape benchmarks use: nActions
// actions with nFeatures features each, and nContext context features, a
// third of them strings. With 20, 15 and 15 it encodes to about 5 KB.
func Request(r *rand.Rand, nActions, nFeatures, nContext int) *personalizerv1.RankRequest {
	feats := func(prefix string, n int) []*personalizerv1.Feature {
		fs := make([]*personalizerv1.Feature, n)
		for i := range fs {
			name := fmt.Sprintf("%s%d", prefix, i)
			if i%3 == 0 {
				fs[i] = &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_StringValue{StringValue: fmt.Sprintf("v%d", r.IntN(100))}}
			} else {
				fs[i] = &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_NumberValue{NumberValue: r.Float64()}}
			}
		}
		return fs
	}
	req := &personalizerv1.RankRequest{
		ContextFeatures: []*personalizerv1.Namespace{{Name: "User", Features: feats("u", nContext)}},
	}
	for i := range nActions {
		req.Actions = append(req.Actions, &personalizerv1.Action{
			Id:       fmt.Sprintf("action-%d", i),
			Features: []*personalizerv1.Namespace{{Name: "Item", Features: feats("f", nFeatures)}},
		})
	}
	return req
}
