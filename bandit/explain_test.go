package bandit

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// TestExplain sets the weights of a tiny model by hand and checks each
// action's contributions (weight × value, summed per name, largest first)
// and that the score is the one Predict ranks by.
func TestExplain(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, "--cb_explore_adf --noconstant -q UA"))
	var e Event
	e.SetKeepNames(true)
	sh := e.Shared()
	sh.Namespace("U")
	sh.Number("a", 2)
	for _, x := range []float64{3, 1} {
		act := e.AddAction()
		act.Namespace("A")
		act.Number("x", x)
		act.Namespace("U") // merged with the shared U: "U^a" occurs twice
		act.Number("a", 1)
	}
	var p Prediction
	slots := map[string]uint64{}
	m.Names(&e, &p, func(slot uint64, name string) { slots[name] = slot })
	for name, w := range map[string]float32{"U^a": 0.5, "A^x": -1, "U^a*A^x": 0.25} {
		s, ok := slots[name]
		if !ok {
			t.Fatalf("no slot for %s in %v", name, slots)
		}
		m.w[s<<2] = w
	}
	m.Predict(&e, &p)
	scores := p.Scores(nil)
	got := m.Explain(&e, &p, 0)
	// Action 0: A^x = -1×3; U^a = 0.5×(1+2); U^a*A^x = 0.25×(1×3 + 2×3).
	want := []Explanation{
		{Action: 0, Score: scores[0], Features: []Contribution{{"A^x", -3}, {"U^a*A^x", 2.25}, {"U^a", 1.5}}},
		{Action: 1, Score: scores[1], Features: []Contribution{{"U^a", 1.5}, {"A^x", -1}, {"U^a*A^x", 0.75}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Explain = %+v\nwant %+v", got, want)
	}
	if scores[0] != -3+1.5+2.25 || scores[1] != -1+1.5+0.75 {
		t.Errorf("scores %v, want the contributions' sums", scores)
	}
	if top := m.Explain(&e, &p, 1); len(top[0].Features) != 1 || top[0].Features[0] != want[0].Features[0] {
		t.Errorf("Explain top 1 = %+v, want only %+v", top[0].Features, want[0].Features[0])
	}
}

// TestTopContributions: the top kept as they come equal the top of all
// sorted, on contributions with many ties in magnitude (and in sign).
func TestTopContributions(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	sum := map[string]float32{}
	for i := range 500 {
		sum[fmt.Sprintf("f%d", i)] = float32(r.IntN(40)-20) / 4
	}
	all := make([]Contribution, 0, len(sum))
	for name, s := range sum {
		all = append(all, Contribution{name, s})
	}
	slices.SortFunc(all, func(x, y Contribution) int {
		if c := cmp.Compare(abs32(y.Score), abs32(x.Score)); c != 0 {
			return c
		}
		return cmp.Compare(x.Name, y.Name)
	})
	for _, top := range []int{0, 1, 2, 10, 499, 500, 600} {
		want := all
		if top > 0 && top < len(all) {
			want = all[:top]
		}
		if got := topContributions(sum, top); !slices.Equal(got, want) {
			t.Errorf("top %d = %v\nwant %v", top, got, want)
		}
	}
}
