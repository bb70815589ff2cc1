package evaluate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

// WeightImportance is a feature's importance in a model by its weight.
type WeightImportance struct {
	// Name is the feature's name as --invert_hash writes it: "Ns^name",
	// interactions joined by '*' ("U^a*A^b"), "[k]" after the features of
	// model k > 0 (dr's cost model, --bag's members).
	Name string `json:"name"`
	// Mean is the mean of |w·x| over the actions of the sample: the
	// feature's weight times its value in each action scored (0 in those
	// without it).
	Mean  float64 `json:"mean"`
	Score float64 `json:"score"` // Mean divided by the largest Mean
}

// WeightResult is the weight-based importance of a model's features.
type WeightResult struct {
	Arguments string `json:"arguments"` // the model's policy
	Events    int    `json:"events"`    // events of the sample
	Actions   int    `json:"actions"`   // actions scored
	// FeatureImportance is Personalizer's featureImportance: the names by
	// score tiers, most important first (see Tiers).
	FeatureImportance [][]string         `json:"featureImportance"`
	Features          []WeightImportance `json:"features"` // most important first, then by name
}

// Weights is the weight-based importance of m's features: no learning,
// only m's weights and the features of the first lines events of src
// (malformed or dropped lines are passed over), which name them. A
// feature's importance is the mean of |w·x| over every action of the
// sample, normalised by the largest. The constant (VW's bias, "Constant")
// is not a feature and is left out.
func Weights(ctx context.Context, m *bandit.Model, src learner.Examples, lines int) (*WeightResult, error) {
	parser := bandit.DSJSONParser{KeepNames: true}
	var (
		ev   bandit.Event
		pred bandit.Prediction
		sum  = map[string]float64{}
		out  = &WeightResult{Arguments: m.Policy().String(), Features: []WeightImportance{}}
	)
	for out.Events < lines {
		x, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if parser.Parse(x.Data, &ev) != nil || ev.Validate() != nil {
			continue
		}
		out.Events++
		out.Actions += ev.NumActions()
		m.Contributions(&ev, &pred, func(_ int, name string, x, w float32) {
			if name != "Constant" && !strings.HasPrefix(name, "Constant[") { // the bias: no feature to remove
				sum[name] += math.Abs(float64(w) * float64(x))
			}
		})
	}
	if out.Events == 0 {
		return nil, errors.New("no event to name the features with")
	}
	top := 0.0
	for name, s := range sum {
		mean := s / float64(out.Actions)
		out.Features = append(out.Features, WeightImportance{Name: name, Mean: mean})
		top = max(top, mean)
	}
	for k := range out.Features {
		out.Features[k].Score = score(out.Features[k].Mean, top)
	}
	sort.Slice(out.Features, func(i, j int) bool {
		a, b := out.Features[i], out.Features[j]
		if a.Mean != b.Mean {
			return a.Mean > b.Mean
		}
		return a.Name < b.Name
	})
	names, scores := make([]string, len(out.Features)), make([]float64, len(out.Features))
	for k, f := range out.Features {
		names[k], scores[k] = f.Name, f.Score
	}
	out.FeatureImportance = Tiers(names, scores)
	return out, nil
}

// WeightsFile is Weights on the model file model (as `personalizer train
// -f` writes it) with the first ImportanceLines lines of the DSJson file
// data.
func WeightsFile(ctx context.Context, model, data string) (*WeightResult, error) {
	f, err := os.Open(model)
	if err != nil {
		return nil, err
	}
	m, err := bandit.ReadModel(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", model, err)
	}
	src, err := learner.OpenExamples(data)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	res, err := Weights(ctx, m, src, ImportanceLines)
	if err != nil {
		return nil, fmt.Errorf("weights %s: %w", data, err)
	}
	return res, nil
}

// Tier bounds: Tiers puts scores above TierHigh in the first group, above
// TierLow in the second, above 0 in the third, and 0 in the last.
const (
	TierHigh = 2.0 / 3
	TierLow  = 1.0 / 3
)

// Tiers groups names by their scores (0 to 1), as Personalizer's
// featureImportance: the names scoring above TierHigh, above TierLow,
// above 0, then 0 (removing them costs nothing), each group in the given
// order; empty groups are left out. It is never nil.
func Tiers(names []string, scores []float64) [][]string {
	var groups [4][]string
	for k, name := range names {
		s := scores[k]
		g := 3
		switch {
		case s > TierHigh:
			g = 0
		case s > TierLow:
			g = 1
		case s > 0:
			g = 2
		}
		groups[g] = append(groups[g], name)
	}
	out := [][]string{}
	for _, g := range groups {
		if len(g) > 0 {
			out = append(out, g)
		}
	}
	return out
}
