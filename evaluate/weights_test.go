package evaluate

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

// weightLines: two events whose actions have one feature each, so that
// an action's score is that feature's w·x.
const weightLines = `{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1,2],"c":{"_multi":[{"A":{"p":1}},{"A":{"q":2}}]},"p":[0.5,0.5]}
{"_label_cost":-0.5,"_label_probability":0.5,"_labelIndex":1,"a":[2,1],"c":{"_multi":[{"A":{"p":1}},{"A":{"r":4}}]},"p":[0.5,0.5]}
`

// TestWeights checks the weight-based importance of a model trained on
// weightLines against its own scores: A^p is in both events' first
// action (2 of 4 actions scored), A^q and A^r in one second action each
// (A^q's action is never chosen: its weight stays 0).
func TestWeights(t *testing.T) {
	ctx := context.Background()
	pol, err := bandit.ParsePolicy("--cb_explore_adf --cb_type ips --noconstant -l 0.5")
	if err != nil {
		t.Fatal(err)
	}
	m := bandit.NewModel(pol)
	var parser bandit.DSJSONParser
	var ev bandit.Event
	var p bandit.Prediction
	scores := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(weightLines), "\n") {
		if err := parser.Parse([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		m.Learn(&ev, &p)
	}
	for k, line := range strings.Split(strings.TrimSpace(weightLines), "\n") {
		if err := parser.Parse([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		m.Predict(&ev, &p)
		s := p.Scores(nil)
		scores["A^p"] += math.Abs(float64(s[0]))
		scores[[]string{"A^q", "A^r"}[k]] += math.Abs(float64(s[1]))
	}
	res, err := Weights(ctx, m, learner.ReadExamples("w", strings.NewReader(weightLines)), 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 2 || res.Actions != 4 || res.Arguments != pol.String() || len(res.Features) != 3 {
		t.Fatalf("result %+v", res)
	}
	top := 0.0
	for _, s := range scores {
		top = max(top, s/4)
	}
	for k, f := range res.Features {
		want := scores[f.Name] / 4
		if f.Mean != want || f.Score != want/top || (want == 0) != (f.Name == "A^q") {
			t.Errorf("%s: mean %v score %v, want %v and %v", f.Name, f.Mean, f.Score, want, want/top)
		}
		if k > 0 && res.Features[k-1].Mean < f.Mean {
			t.Errorf("%s ranked after a less important feature", f.Name)
		}
		t.Logf("%s: mean %v score %v", f.Name, f.Mean, f.Score)
	}
	if len(res.FeatureImportance) == 0 || res.FeatureImportance[0][0] != res.Features[0].Name {
		t.Errorf("featureImportance %q", res.FeatureImportance)
	}

	// The same from files, with interactions named as --invert_hash.
	dir := t.TempDir()
	model, data := filepath.Join(dir, "m"), filepath.Join(dir, "d.json")
	q, _ := bandit.ParsePolicy("--cb_explore_adf -q UA")
	mq := bandit.NewModel(q)
	lines := `{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1,2],"c":{"U":{"u":3},"_multi":[{"A":{"p":1}},{"A":{"q":2}}]},"p":[0.5,0.5]}` + "\n"
	if err := parser.Parse([]byte(strings.TrimSpace(lines)), &ev); err != nil {
		t.Fatal(err)
	}
	mq.Learn(&ev, &p)
	f, _ := os.Create(model)
	if _, err := mq.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.WriteFile(data, []byte(lines), 0o644)
	res, err = WeightsFile(ctx, model, data)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range res.Features {
		names = append(names, f.Name)
	}
	if strings.Contains(strings.Join(names, ","), "Constant") {
		t.Errorf("the constant is in %q", names)
	}
	for _, want := range []string{"U^u", "A^p", "A^q", "U^u*A^p", "U^u*A^q"} {
		if !strings.Contains(strings.Join(names, ","), want) {
			t.Errorf("no %s in %q", want, names)
		}
	}
	if _, err := WeightsFile(ctx, filepath.Join(dir, "none"), data); err == nil {
		t.Error("a missing model was accepted")
	}
}

// TestTiers checks the score groups.
func TestTiers(t *testing.T) {
	got := Tiers([]string{"a", "b", "c", "d", "e"}, []float64{1, 0.7, 0.5, 0.1, 0})
	if want := [][]string{{"a", "b"}, {"c"}, {"d"}, {"e"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("tiers %q, want %q", got, want)
	}
	if got := Tiers(nil, nil); got == nil || len(got) != 0 {
		t.Errorf("no names: %q", got)
	}
	if got := Tiers([]string{"a", "b"}, []float64{1, 2.0 / 3}); !reflect.DeepEqual(got, [][]string{{"a"}, {"b"}}) {
		t.Errorf("2/3 is in the second group: %q", got)
	}
}
