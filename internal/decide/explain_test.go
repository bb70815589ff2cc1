package decide

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// TestExplanations converts two actions' explanations in the order of a
// ranking, each part negated (reward, not cost), a part of 0 as 0, not -0.
func TestExplanations(t *testing.T) {
	t.Parallel()
	ex := []bandit.Explanation{
		{Action: 0, Score: 1, Features: []bandit.Contribution{{Name: "a", Score: 1.5}, {Name: "b", Score: -0.5}}},
		{Action: 1, Score: -2, Features: []bandit.Contribution{{Name: "c", Score: -2}, {Name: "z", Score: 0}}},
	}
	got := Explanations(ex, []string{"x", "y"}, []int{1, 0})
	want := []*personalizerv1.ActionExplanation{
		{Id: "y", Features: []*personalizerv1.FeatureScore{{Name: "c", Score: 2}, {Name: "z", Score: 0}}},
		{Id: "x", Features: []*personalizerv1.FeatureScore{{Name: "a", Score: -1.5}, {Name: "b", Score: 0.5}}},
	}
	if !proto.Equal(&personalizerv1.RankResponse{InferenceExplanation: got}, &personalizerv1.RankResponse{InferenceExplanation: want}) {
		t.Errorf("Explanations = %v, want %v", got, want)
	}
	if math.Signbit(float64(got[0].Features[1].Score)) {
		t.Errorf("a part of 0 is -0")
	}
}

// TestDecideExplains decides one request with one Scratch, the setting
// switched between decisions: off, the event keeps no feature names and
// the answer has no explanation; on, the answer explains each eligible
// action in the order of the answer's ranking (also in apprentice mode,
// whose answer is the baseline order) with the model's Explain of the
// event that was scored; before the first model, with no features.
func TestDecideExplains(t *testing.T) {
	t.Parallel()
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 5, 3, 3)
	req.ExcludedActions = []string{req.Actions[1].GetId()}
	m := trained(t, req)
	var sc Scratch
	// names counts the feature names the scored event kept ("Ns^feature")
	// (without names, Names makes only "Constant" and the
	// unnamed interactions' "*").
	names := func() int {
		n := 0
		m.Model.Names(&sc.ev, &sc.pred, func(_ uint64, name string) {
			if strings.Contains(name, "^") {
				n++
			}
		})
		return n
	}
	decide := func(explain bool, mode eventsv1.LearningMode, m *Model) (*Decision, *personalizerv1.RankResponse) {
		t.Helper()
		s := settings(t)
		s.Explain, s.Mode = explain, mode
		d, err := sc.Decide(req, req.SizeVT(), "e1", s, m)
		if err != nil {
			t.Fatal(err)
		}
		return d, d.Response(req)
	}
	online, apprentice := eventsv1.LearningMode_LEARNING_MODE_ONLINE, eventsv1.LearningMode_LEARNING_MODE_APPRENTICE
	for _, step := range []struct {
		explain bool
		mode    eventsv1.LearningMode
	}{{false, online}, {true, online}, {false, online}, {true, apprentice}, {false, apprentice}} {
		d, resp := decide(step.explain, step.mode, m)
		if !step.explain {
			if d.Explained != nil || resp.InferenceExplanation != nil || names() != 0 {
				t.Fatalf("off (%v): explained %v, answer %v, %d names kept", step.mode, d.Explained, resp.InferenceExplanation, names())
			}
			continue
		}
		if names() == 0 {
			t.Fatalf("on (%v): the event kept no names", step.mode)
		}
		// The same model's explanation of the event just scored.
		ex := m.Model.Explain(&sc.ev, &sc.pred, ExplainTop)
		var want []*personalizerv1.ActionExplanation
		for _, ap := range d.Answer {
			x := &personalizerv1.ActionExplanation{Id: d.Eligible[ap.Action].GetId()}
			for _, c := range ex[ap.Action].Features {
				x.Features = append(x.Features, &personalizerv1.FeatureScore{Name: c.Name, Score: 0 - c.Score})
			}
			want = append(want, x)
		}
		if len(want) != 4 || len(want[0].Features) != ExplainTop {
			t.Fatalf("on (%v): %d actions explained, %d features", step.mode, len(want), len(want[0].Features))
		}
		for i, r := range resp.Ranking[:4] {
			if want[i].Id != r.Id {
				t.Fatalf("on (%v): explanation %d is of %s, ranking has %s", step.mode, i, want[i].Id, r.Id)
			}
		}
		if !proto.Equal(resp, &personalizerv1.RankResponse{Ranking: resp.Ranking, EventId: resp.EventId, RewardActionId: resp.RewardActionId,
			ModelVersion: resp.ModelVersion, InferenceExplanation: want}) {
			t.Fatalf("on (%v): explanation\n%v\nwant\n%v", step.mode, resp.InferenceExplanation, want)
		}
	}

	// Before the first model: each eligible action, in ranking order, no features.
	_, resp := decide(true, online, nil)
	if len(resp.InferenceExplanation) != 4 {
		t.Fatalf("before the first model: %v", resp.InferenceExplanation)
	}
	for i, x := range resp.InferenceExplanation {
		if x.Id != resp.Ranking[i].Id || len(x.Features) != 0 {
			t.Errorf("before the first model: explanation %d is %v, ranking has %s", i, x, resp.Ranking[i].Id)
		}
	}
}
