package bandit

import (
	"slices"
	"testing"
)

// TestLogged reads the logged decision VW ignores: "a", "p" and
// "Timestamp", reset by every Parse.
func TestLogged(t *testing.T) {
	var d DSJSONParser
	var e Event
	line := `{"_label_cost":-1,"_label_probability":0.05,"_labelIndex":3,"Timestamp":"2021-02-04T16:31:29.2460000Z","a":[4,2,1,3],"c":{"_multi":[{"i":{"id":"a"}},{"i":{"id":"b"}},{"i":{"id":"c"}},{"i":{"id":"d"}}]},"p":[0.05,0.05,0.05,0.85]}`
	if err := d.Parse([]byte(line), &e); err != nil {
		t.Fatal(err)
	}
	a, p, ts := d.Logged()
	if !slices.Equal(a, []int{4, 2, 1, 3}) || !slices.Equal(p, []float32{0.05, 0.05, 0.05, 0.85}) || string(ts) != "2021-02-04T16:31:29.2460000Z" {
		t.Errorf("Logged() = %v, %v, %q", a, p, ts)
	}
	if err := d.Parse([]byte(`{"Timestamp":null,"a":[1],"c":{"_multi":[{"x":1}]},"_p":0.5}`), &e); err != nil {
		t.Fatal(err)
	}
	a, p, ts = d.Logged()
	if !slices.Equal(a, []int{1}) || !slices.Equal(p, []float32{0.5}) || ts != nil {
		t.Errorf("second line: Logged() = %v, %v, %q", a, p, ts)
	}
}

// TestScores: the scores of a fresh mtr model are zero, and after
// learning a cost they are the model's predictions by action.
func TestScores(t *testing.T) {
	m := NewModel(mustPolicy(t, "--cb_explore_adf --cb_type mtr"))
	var e Event
	var d DSJSONParser
	if err := d.Parse([]byte(`{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":1,"a":[2,1],"c":{"_multi":[{"i":{"id":"x"}},{"i":{"id":"y"}}]},"p":[0.5,0.5]}`), &e); err != nil {
		t.Fatal(err)
	}
	var p Prediction
	m.Learn(&e, &p)
	if s := p.Scores(nil); !slices.Equal(s, []float32{0, 0}) {
		t.Errorf("scores before learning %v", s)
	}
	m.Predict(&e, &p)
	s := p.Scores([]float32{7})
	if len(s) != 3 || s[0] != 7 || !(s[2] < 0) || s[2] >= s[1] {
		t.Errorf("scores after learning a cost of -1 for action 1: %v", s)
	}
	for _, r := range p.ranked {
		if s[1+r.action] != r.score {
			t.Errorf("action %d scores %v, ranked %v", r.action, s[1+r.action], r.score)
		}
	}
}
