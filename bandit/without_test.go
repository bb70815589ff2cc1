package bandit

import (
	"bytes"
	"reflect"
	"testing"
)

// withoutLines are events with a feature "User^tz" in the shared
// namespace User (alone in it in the second line), a default-namespace
// feature "k" and action features; the second set is the same lines with
// the feature removed from the JSON.
var withoutLines = []string{
	`{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1,2],"c":{"k":2,"User":{"tz":"utc","age":3},"_multi":[{"i":{"id":"x","w":0.5}},{"i":{"id":"y"},"j":{"tz":"utc"}}]},"p":[0.5,0.5]}`,
	`{"_label_cost":0,"_label_probability":0.25,"_labelIndex":1,"a":[2,1],"c":{"User":{"tz":"utc"},"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}]},"p":[0.75,0.25]}`,
	`{"_label_cost":-0.5,"_label_probability":0.5,"_labelIndex":1,"a":[1,2],"c":{"User":{"tz":"est","age":1},"k":1,"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}]},"p":[0.5,0.5]}`,
}

var removedLines = []string{
	`{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1,2],"c":{"k":2,"User":{"age":3},"_multi":[{"i":{"id":"x","w":0.5}},{"i":{"id":"y"},"j":{"tz":"utc"}}]},"p":[0.5,0.5]}`,
	`{"_label_cost":0,"_label_probability":0.25,"_labelIndex":1,"a":[2,1],"c":{"User":{},"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}]},"p":[0.75,0.25]}`,
	`{"_label_cost":-0.5,"_label_probability":0.5,"_labelIndex":1,"a":[1,2],"c":{"User":{"tz":"est","age":1},"k":1,"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}]},"p":[0.5,0.5]}`,
}

// TestCopyWithout checks that an event copied without "User^tzutc"
// learns exactly as the line without that key: the same PMFs and the same
// model, with interactions over every namespace.
func TestCopyWithout(t *testing.T) {
	var parser DSJSONParser
	parser.KeepNames = true
	var key FeatureKey
	found := false
	var first Event
	if err := parser.Parse([]byte(withoutLines[0]), &first); err != nil {
		t.Fatal(err)
	}
	var names []string
	first.Features(func(k FeatureKey, name string) {
		names = append(names, name)
		if name == "User^tzutc" && !found {
			key, found = k, true
		}
	})
	if want := []string{"User^tzutc", "User^age", "k", "i^idx", "i^w", "i^idy", "j^tzutc"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("features %q, want %q", names, want)
	}
	// "j^tzutc" has the same name in another namespace: another key.
	pol, err := ParsePolicy("--cb_explore_adf --epsilon 0.2 -q :: --cb_type ips")
	if err != nil {
		t.Fatal(err)
	}
	a, b := NewModel(pol), NewModel(pol)
	var pa, pb Prediction
	var copied int
	for i := range withoutLines {
		var ev, cp, want Event
		if err := parser.Parse([]byte(withoutLines[i]), &ev); err != nil {
			t.Fatal(err)
		}
		if err := parser.Parse([]byte(removedLines[i]), &want); err != nil {
			t.Fatal(err)
		}
		use := &ev
		if ev.CopyWithout(&cp, key) {
			use = &cp
			copied++
		}
		var got, exp []string
		use.Features(func(_ FeatureKey, name string) { got = append(got, name) })
		want.Features(func(_ FeatureKey, name string) { exp = append(exp, name) })
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("line %d: features %q, want %q", i, got, exp)
		}
		if !reflect.DeepEqual(use.Namespaces(nil), want.Namespaces(nil)) {
			t.Errorf("line %d: namespaces %q, want %q", i, use.Namespaces(nil), want.Namespaces(nil))
		}
		a.Process(use, &pa, ModeLearn)
		b.Process(&want, &pb, ModeLearn)
		if !reflect.DeepEqual(pa.PMF(), pb.PMF()) {
			t.Errorf("line %d: PMF %v, want %v", i, pa.PMF(), pb.PMF())
		}
	}
	if copied != 2 {
		t.Errorf("copied %d events, want 2 (the third has no User^tzutc)", copied)
	}
	var wa, wb bytes.Buffer
	if _, err := a.WriteTo(&wa); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteTo(&wb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wa.Bytes(), wb.Bytes()) {
		t.Error("the model learned from the copies differs from the one learned from the edited lines")
	}
}

// TestContributions checks each feature's value and weight on a model
// whose weights are set by hand: score = Σ w·x.
func TestContributions(t *testing.T) {
	pol, err := ParsePolicy("--cb_explore_adf -q UA --noconstant")
	if err != nil {
		t.Fatal(err)
	}
	var parser DSJSONParser
	parser.KeepNames = true
	var ev Event
	line := `{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1,2],"c":{"User":{"age":2},"_multi":[{"A":{"b":3}},{"A":{"c":1}}]},"p":[0.5,0.5]}`
	if err := parser.Parse([]byte(line), &ev); err != nil {
		t.Fatal(err)
	}
	m := NewModel(pol)
	var p Prediction
	slots := map[string]uint64{}
	m.Names(&ev, &p, func(slot uint64, name string) { slots[name] = slot })
	weights := map[string]float32{"User^age": 0.5, "A^b": -1, "A^c": 2, "User^age*A^b": 0.25, "User^age*A^c": -0.125}
	if len(slots) != len(weights) {
		t.Fatalf("names %v", slots)
	}
	for name, w := range weights {
		m.w[slots[name]*4] = w
	}
	type c struct {
		a    int
		name string
		x, w float32
	}
	var got []c
	m.Contributions(&ev, &p, func(a int, name string, x, w float32) { got = append(got, c{a, name, x, w}) })
	want := []c{{0, "A^b", 3, -1}, {0, "User^age", 2, 0.5}, {0, "User^age*A^b", 6, 0.25},
		{1, "A^c", 1, 2}, {1, "User^age", 2, 0.5}, {1, "User^age*A^c", 2, -0.125}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("contributions %v, want %v", got, want)
	}
	m.Predict(&ev, &p)
	scores := p.Scores(nil)
	for a, s := range []float32{-3 + 1 + 1.5, 2 + 1 - 0.25} {
		if scores[a] != s {
			t.Errorf("action %d scores %v, want Σ w·x = %v", a, scores[a], s)
		}
	}
}
