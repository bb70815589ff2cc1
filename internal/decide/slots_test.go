package decide

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

const ccbPolicy = "--ccb_explore_adf --epsilon 0.2 -q ::"

// slotsRequest is a request of 6 actions and 3 slots; the second slot
// excludes the first action.
func slotsRequest() *personalizerv1.MultiSlotRankRequest {
	r := sim.Request(rand.New(rand.NewPCG(3, 4)), 6, 3, 3)
	req := &personalizerv1.MultiSlotRankRequest{ContextFeatures: r.GetContextFeatures(), Actions: r.GetActions()}
	for k, id := range []string{"hero", "side", "foot"} {
		req.Slots = append(req.Slots, &personalizerv1.Slot{Id: id, BaselineAction: r.Actions[k+1].GetId(),
			Features: []*personalizerv1.Namespace{{Name: "Slot", Features: []*personalizerv1.Feature{{Name: "pos", Value: &personalizerv1.Feature_NumberValue{NumberValue: float64(k + 1)}}}}}})
	}
	req.Slots[1].ExcludedActions = []string{r.Actions[0].GetId()}
	return req
}

func ccbSettings(t testing.TB) *Settings {
	s := settings(t)
	pol, err := bandit.ParsePolicy(ccbPolicy)
	if err != nil {
		t.Fatal(err)
	}
	s.Policy = pol
	return s
}

// trainedCCB is a CCB model that learned 200 events like req, rewarded
// for action 4 in every slot.
func trainedCCB(t testing.TB, s *Settings, req *personalizerv1.MultiSlotRankRequest) *Model {
	m := bandit.NewModel(s.Policy)
	excluded, _, _ := features.SlotExcluded(nil, req.GetActions(), req.GetSlots())
	var ev bandit.Event
	var pred bandit.Prediction
	for i := range 200 {
		ev.Reset()
		features.BuildSlots(&ev, req.GetContextFeatures(), req.GetActions(), req.GetSlots(), excluded, fmt.Sprint(i))
		for k := range req.GetSlots() {
			a := (i + k) % len(req.GetActions())
			cost := float32(0)
			if a == 4 {
				cost = -1
			}
			ev.SetSlotOutcome(k, a, cost, 0.2)
		}
		m.Learn(&ev, &pred)
	}
	return &Model{Model: m, Version: "7"}
}

// TestDecideSlots: each slot takes an action no earlier slot took and
// it does not exclude, the same event id repeats the answer, and the
// decision is the model's own prediction of the event.
func TestDecideSlots(t *testing.T) {
	req := slotsRequest()
	s := ccbSettings(t)
	for _, m := range []*Model{nil, trainedCCB(t, s, req)} {
		var sc Scratch
		counts := make([]map[int]int, 3)
		for i := range counts {
			counts[i] = map[int]int{}
		}
		for i := range 300 {
			id := fmt.Sprint("ev", i)
			d, err := sc.DecideSlots(req, req.SizeVT(), id, s, m)
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Clone(d.Answer)
			if len(got) != 3 || slices.Contains(got, -1) {
				t.Fatalf("answer %v", got)
			}
			if got[0] == got[1] || got[1] == got[2] || got[0] == got[2] || got[1] == 0 {
				t.Fatalf("answer %v: an action twice, or slot 1 took its excluded action 0", got)
			}
			for k, dec := range d.Logged {
				if dec[0].Action != got[k] {
					t.Fatalf("slot %d logged %v, answered %d", k, dec, got[k])
				}
				sum := float32(0)
				for _, ap := range dec {
					sum += ap.Prob
				}
				if sum < 0.999 || sum > 1.001 {
					t.Fatalf("slot %d probabilities sum to %v", k, sum)
				}
				counts[k][got[k]]++
			}
			want := 6
			if m == nil && (len(d.Logged[0]) != want || d.Logged[0][0].Prob != 1/float32(want)) {
				t.Fatalf("before a model slot 0 is %v, want 6 equally likely", d.Logged[0])
			}
			again, err := new(Scratch).DecideSlots(req, req.SizeVT(), id, s, m)
			if err != nil || !slices.Equal(again.Answer, got) {
				t.Fatalf("event %s decided %v, then %v (%v)", id, got, again.Answer, err)
			}
			if m != nil {
				var ev bandit.Event
				var pred bandit.Prediction
				features.BuildSlots(&ev, req.GetContextFeatures(), req.GetActions(), req.GetSlots(), sc.slots.excluded, id)
				m.Model.PredictEpsilon(&ev, &pred, s.Epsilon)
				for k, dec := range pred.Slots() {
					if !slices.Equal(dec, d.Logged[k]) {
						t.Fatalf("slot %d decided %v, the model predicts %v", k, d.Logged[k], dec)
					}
				}
			}
		}
		if m != nil && counts[0][4] < 200 { // exploit: 1-0.2+0.2/6 of 300 is 250
			t.Errorf("the trained model chose action 4 for slot 0 %d times of 300", counts[0][4])
		}
		if m == nil && len(counts[0]) != 6 {
			t.Errorf("before a model slot 0 took %d different actions, want all 6", len(counts[0]))
		}
	}
}

// TestDecideSlotsModes: Apprentice and LoggingOnly answer each slot's
// baseline and log the model's decision.
func TestDecideSlotsModes(t *testing.T) {
	req := slotsRequest()
	s := ccbSettings(t)
	m := trainedCCB(t, s, req)
	online, err := new(Scratch).DecideSlots(req, req.SizeVT(), "e", s, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []eventsv1.LearningMode{eventsv1.LearningMode_LEARNING_MODE_APPRENTICE, eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY} {
		s.Mode = mode
		d, err := new(Scratch).DecideSlots(req, req.SizeVT(), "e", s, m)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(d.Answer, []int{1, 2, 3}) {
			t.Errorf("%v answered %v, want the baselines [1 2 3]", mode, d.Answer)
		}
		for k := range d.Logged {
			if !slices.Equal(d.Logged[k], online.Logged[k]) {
				t.Errorf("%v logged slot %d as %v, online %v", mode, k, d.Logged[k], online.Logged[k])
			}
		}
		resp := d.Response(req)
		if got := resp.GetSlots()[2].GetRewardActionId(); got != req.Actions[3].GetId() {
			t.Errorf("%v: slot 2's reward action %q", mode, got)
		}
	}
}

// TestValidateMultiSlotRank: Personalizer's multi-slot rules, each with
// its message.
func TestValidateMultiSlotRank(t *testing.T) {
	s := ccbSettings(t)
	tests := []struct {
		name   string
		change func(r *personalizerv1.MultiSlotRankRequest)
		field  string
		reason string
	}{
		{"no slots", func(r *personalizerv1.MultiSlotRankRequest) { r.Slots = nil }, "slots", "At lease one slot must be defined"},
		{"more slots than actions", func(r *personalizerv1.MultiSlotRankRequest) { r.Actions = r.Actions[:2] }, "slots", "Slots count should be between 1 and the number of actions (2), got 3."},
		{"empty slot id", func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[1].Id = "" }, "slots[1].id", "All slot's must contain unique, non empty ID"},
		{"duplicate slot id", func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[2].Id = "hero" }, "slots[2].id", `"hero" is also slots[0]'s`},
		{"unknown excluded", func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[0].ExcludedActions = []string{"nope"} }, "slots[0].excluded_actions[0]", "All excluded action ID's must have corresponding action ID"},
		{"unknown baseline", func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[0].BaselineAction = "nope" }, "slots[0].baseline_action", "Each slot must contain a unique BaselineAction"},
		{"no baseline", func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[2].BaselineAction = "" }, "slots[2].baseline_action", "Each slot must contain a unique BaselineAction"},
		{"shared baseline", func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[2].BaselineAction = r.Slots[0].BaselineAction }, "slots[2].baseline_action", "unique BaselineAction"},
		{"excluded baseline", func(r *personalizerv1.MultiSlotRankRequest) {
			r.Slots[0].ExcludedActions = []string{r.Slots[0].BaselineAction}
		}, "slots[0].baseline_action", "BaselineAction cannot be part of ExcludedActions"},
		{"all excluded", func(r *personalizerv1.MultiSlotRankRequest) {
			for _, a := range r.Actions {
				r.Slots[1].ExcludedActions = append(r.Slots[1].ExcludedActions, a.GetId())
			}
		}, "slots[1].excluded_actions", `Slot "side" excludes every action.`},
		{"slot feature name", func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[0].Features[0].Features[0].Name = "" }, "slots[0].features[0].features[0].name", "feature names must not be empty"},
		{"no actions", func(r *personalizerv1.MultiSlotRankRequest) { r.Actions = nil }, "actions", "action count should be between 1 and 50"},
	}
	for _, tt := range tests {
		req := slotsRequest()
		tt.change(req)
		_, err := new(Scratch).DecideSlots(req, req.SizeVT(), "e", s, nil)
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Field != tt.field || !strings.Contains(ie.Reason, tt.reason) {
			t.Errorf("%s: got %v, want %s: ...%s...", tt.name, err, tt.field, tt.reason)
		}
	}
}
