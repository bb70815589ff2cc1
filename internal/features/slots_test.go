package features

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/open-personalizer/personalizer/bandit"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func slotsRequest() ([]*personalizerv1.Namespace, []*personalizerv1.Action, []*personalizerv1.Slot) {
	context, actions := request()
	slots := []*personalizerv1.Slot{
		{Id: "hero", Features: []*personalizerv1.Namespace{
			{Features: []*personalizerv1.Feature{num("size", 1.5), str("pos", "top")}},
			{Name: "Slot", Features: []*personalizerv1.Feature{str("kind", "big")}},
		}, BaselineAction: "news"},
		{Id: "side\"bar", ExcludedActions: []string{"news"}, BaselineAction: "123",
			Features: []*personalizerv1.Namespace{{Name: "Slot", Features: []*personalizerv1.Feature{str("kind", "small")}}}},
	}
	return context, actions, slots
}

// TestBuildSlotsMatchesDSJSON checks that learning a multi-slot request
// as the server builds it and as the joiner logs it changes a model alike:
// the same hashed features, slots, candidates and labels.
func TestBuildSlotsMatchesDSJSON(t *testing.T) {
	context, actions, slots := slotsRequest()
	excluded, k, u := SlotExcluded(nil, actions, slots)
	if k != -1 || u != -1 {
		t.Fatalf("SlotExcluded: slot %d id %d names no action", k, u)
	}
	c := AppendSlotsContext(nil, context, actions, slots, excluded)
	if !json.Valid(c) {
		t.Fatalf("invalid JSON: %s", c)
	}
	policy, err := bandit.ParsePolicy("--ccb_explore_adf --epsilon 0.2 -q :: --power_t 0 -l 0.5")
	if err != nil {
		t.Fatal(err)
	}
	var built bandit.Event
	BuildSlots(&built, context, actions, slots, excluded, "ev1")
	built.SetSlotOutcome(0, 1, -1, 0.5)
	built.SetSlotOutcome(1, 2, 0, 0.5)

	line := append([]byte(`{"c":`), c...)
	line = append(line, `,"_outcomes":[{"_label_cost":-1,"_a":[1,0,2],"_p":[0.5,0.25,0.25]},{"_label_cost":0,"_a":[2,0],"_p":[0.5,0.5]}]}`...)
	parser := bandit.DSJSONParser{CCB: true}
	var parsed bandit.Event
	if err := parser.Parse(line, &parsed); err != nil {
		t.Fatalf("parse %s: %v", line, err)
	}
	if parsed.NumSlots() != 2 {
		t.Fatalf("parsed %d slots, want 2", parsed.NumSlots())
	}
	model := func(e *bandit.Event) []byte {
		m := bandit.NewModel(policy)
		e.Prepare(policy)
		var p bandit.Prediction
		for range 3 {
			m.Learn(e, &p)
		}
		var b bytes.Buffer
		if _, err := m.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	if !bytes.Equal(model(&built), model(&parsed)) {
		t.Error("learning the built and the parsed event gave different models")
	}
}

func TestSlotsContext(t *testing.T) {
	_, actions, slots := slotsRequest()
	excluded, _, _ := SlotExcluded(nil, actions, slots)
	got := string(AppendSlotsContext(nil, nil, actions[2:], slots[:1], excluded[:1]))
	want := `{"_multi":[{"_tag":"123","i":{"constant":1,"id":"123"}}],"_slots":[{"_id":"hero","size":1.5,"pos":"top","Slot":{"kind":"big"}}]}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	got = string(AppendSlotsContext(nil, nil, nil, slots[1:], excluded[1:]))
	if want := `{"_multi":[],"_slots":[{"_id":"side\"bar","Slot":{"kind":"small"},"_inc":[1,2]}]}`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, k, u := SlotExcluded(nil, actions, []*personalizerv1.Slot{{Id: "a"}, {Id: "b", ExcludedActions: []string{"123", "nope"}}}); k != 1 || u != 1 {
		t.Errorf("SlotExcluded of an unknown id: slot %d id %d, want 1 1", k, u)
	}
	n := len(AppendSlotsContext(nil, nil, actions, slots, excluded)) - len(AppendContext(nil, nil, actions))
	if b := SlotsBound(actions, slots); n > b {
		t.Errorf("SlotsBound %d < %d", b, n)
	}
}
