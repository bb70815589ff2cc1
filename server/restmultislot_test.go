package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// restMultiSlot is a multi-slot rank body in Personalizer's JSON; edit
// replaces its slots (or, when it starts with ',', adds fields).
func restMultiSlot(edit string) string {
	slots := `"slots":[{"id":"hero","features":[{"size":"large"}],"baselineAction":"news"},` +
		`{"id":"side","features":[{"size":"small"}],"excludedActions":["music"],"baselineAction":"sports"}]`
	switch {
	case strings.HasPrefix(edit, ","):
		slots += edit
	case edit != "":
		slots = edit
	}
	return `{"contextFeatures":[{"user":{"tier":"gold"}},{"timeOfDay":"morning"}],` +
		`"actions":[{"id":"news","features":[{"type":"News"}]},{"id":"sports","features":[{"type":"Sports"}]},` +
		`{"id":"music","features":[{"type":"Music"}]},{"id":"film","features":[{"type":"Film"}]}],` + slots + `}`
}

// typedMultiSlot is restMultiSlot("") as the gRPC request, with eventID.
func typedMultiSlot(eventID string) *personalizerv1.MultiSlotRankRequest {
	act := func(id, typ string) *personalizerv1.Action { return action(id, ns("", str("type", typ))) }
	return &personalizerv1.MultiSlotRankRequest{
		ContextFeatures: []*personalizerv1.Namespace{ns("user", str("tier", "gold")), ns("", str("timeOfDay", "morning"))},
		Actions:         []*personalizerv1.Action{act("news", "News"), act("sports", "Sports"), act("music", "Music"), act("film", "Film")},
		Slots: []*personalizerv1.Slot{
			{Id: "hero", Features: []*personalizerv1.Namespace{ns("", str("size", "large"))}, BaselineAction: "news"},
			{Id: "side", Features: []*personalizerv1.Namespace{ns("", str("size", "small"))}, ExcludedActions: []string{"music"}, BaselineAction: "sports"},
		},
		EventId: proto.String(eventID),
	}
}

// TestRESTMultiSlot: POST /multislot/rank answers 201 with Personalizer's
// MultiSlotRankResponse and nothing more, the same as MultiSlotRank over
// gRPC for the typed request the JSON maps to, and logs that request;
// the same event id repeats the answer; multi-slot reward and activate
// answer 204 and log a reward per slot and an activation.
func TestRESTMultiSlot(t *testing.T) {
	t.Parallel()
	client, mem, srv := newMultiSlotServer(t)
	base := newTestREST(t, srv, 1<<20) + "/personalizer/v1.1-preview.3"
	body := restMultiSlot(`,"eventId":"ms-rest-5","deferActivation":true`)
	const want = `{"slots":[{"id":"hero","rewardActionId":"film"},{"id":"side","rewardActionId":"news"}],"eventId":"ms-rest-5"}` + "\n"
	for range 2 {
		if code, out := post(t, base+"/multislot/rank", body); code != http.StatusCreated || string(out) != want {
			t.Fatalf("multi-slot rank: %d %s, want 201 %s", code, out, want)
		}
	}
	typed := typedMultiSlot("ms-rest-5")
	typed.DeferActivation = true
	resp, err := client.MultiSlotRank(context.Background(), typed)
	if err != nil {
		t.Fatal(err)
	}
	if s := resp.GetSlots(); len(s) != 2 || s[0].GetRewardActionId() != "film" || s[1].GetRewardActionId() != "news" {
		t.Errorf("gRPC answered %v", s)
	}
	if code, out := post(t, base+"/multislot/events/ms-rest-5/reward", `{"reward":[{"slotId":"hero","value":0.5},{"slotId":"side","value":-1}]}`); code != http.StatusNoContent || len(out) != 0 {
		t.Fatalf("multi-slot reward: %d %s", code, out)
	}
	if code, out := post(t, base+"/multislot/events/ms-rest-5/activate", ""); code != http.StatusNoContent || len(out) != 0 {
		t.Fatalf("multi-slot activate: %d %s", code, out)
	}
	types := map[string]int{}
	var slots []string
	for _, rec := range fetchRecords(t, mem, 6) {
		types[rec.Type()]++
		if string(rec.Key) != "test/ms-rest-5" {
			t.Errorf("key %q", rec.Key)
		}
		switch rec.Type() {
		case eventlog.TypeRank:
			var ev eventsv1.RankEvent
			var logged personalizerv1.MultiSlotRankRequest
			if err := proto.Unmarshal(rec.Value, &ev); err != nil || !ev.GetDeferred() {
				t.Fatalf("rank record %v (%v)", &ev, err)
			}
			if err := proto.Unmarshal(ev.GetMultiSlotRequest(), &logged); err != nil || !proto.Equal(&logged, typed) {
				t.Errorf("logged request %v (%v), want %v", &logged, err, typed)
			}
		case eventlog.TypeReward:
			var ev eventsv1.RewardEvent
			if err := proto.Unmarshal(rec.Value, &ev); err != nil {
				t.Fatal(err)
			}
			slots = append(slots, ev.GetSlotId())
			if want := map[string]float32{"hero": 0.5, "side": -1}[ev.GetSlotId()]; ev.GetValue() != want || ev.GetEventId() != "ms-rest-5" {
				t.Errorf("reward record %v", &ev)
			}
		}
	}
	if types[eventlog.TypeRank] != 3 || types[eventlog.TypeReward] != 2 || types[eventlog.TypeActivate] != 1 {
		t.Errorf("records by type %v", types)
	}
	if slices.Sort(slots); !slices.Equal(slots, []string{"hero", "side"}) {
		t.Errorf("rewards for slots %v", slots)
	}
}

// TestRESTMultiSlotErrors checks Personalizer's exact error bodies for
// bad multi-slot requests, calls of the wrong problem type, and the
// multi-slot routes under v1.0, which did not have them; none is logged.
func TestRESTMultiSlotErrors(t *testing.T) {
	t.Parallel()
	_, mem, srv := newMultiSlotServer(t)
	_, singleMem, single := newTestServer(t)
	url := newTestREST(t, srv, 1<<20) + "/personalizer/v1.1-preview.3"
	singleURL := newTestREST(t, single, 1<<20) + "/personalizer/v1.1-preview.3"
	const rankBody = `{"actions":[{"id":"x","features":[{"a":1}]}]}`
	tests := []struct {
		name, url, path, body string
		status                int
		want                  string
	}{
		{"no slots", url, "/multislot/rank", restMultiSlot(`"slots":[]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots: At lease one slot must be defined in a multi-slot rank request.","target":"slots"}}`},
		{"slots missing", url, "/multislot/rank", restMultiSlot(`"eventId":"e"`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots: At lease one slot must be defined in a multi-slot rank request.","target":"slots"}}`},
		{"more slots than actions", url, "/multislot/rank", restMultiSlot(`"slots":[` + strings.Repeat(`{"id":"s","baselineAction":"news"},`, 4) + `{"id":"t","baselineAction":"film"}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots: Slots count should be between 1 and the number of actions (4), got 5.","target":"slots"}}`},
		{"duplicate slot ids", url, "/multislot/rank", restMultiSlot(`"slots":[{"id":"s","baselineAction":"news"},{"id":"s","baselineAction":"film"}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[1].id: All slot's must contain unique, non empty ID: \"s\" is also slots[0]'s.","target":"slots[1].id"}}`},
		{"empty slot id", url, "/multislot/rank", restMultiSlot(`"slots":[{"baselineAction":"news"}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[0].id: All slot's must contain unique, non empty ID (at most 256 bytes).","target":"slots[0].id"}}`},
		{"unknown baseline", url, "/multislot/rank", restMultiSlot(`"slots":[{"id":"s","baselineAction":"news"},{"id":"t","baselineAction":"radio"}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[1].baselineAction: Each slot must contain a unique BaselineAction with an ID corresponding to an element of Actions, got \"radio\".","target":"slots[1].baselineAction"}}`},
		{"no baseline", url, "/multislot/rank", restMultiSlot(`"slots":[{"id":"s"}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[0].baselineAction: Each slot must contain a unique BaselineAction with an ID corresponding to an element of Actions, got \"\".","target":"slots[0].baselineAction"}}`},
		{"baseline twice", url, "/multislot/rank", restMultiSlot(`"slots":[{"id":"s","baselineAction":"news"},{"id":"t","baselineAction":"news"}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[1].baselineAction: Each slot must contain a unique BaselineAction with an ID corresponding to an element of Actions, got \"news\".","target":"slots[1].baselineAction"}}`},
		{"baseline excluded", url, "/multislot/rank", restMultiSlot(`"slots":[{"id":"s","baselineAction":"news","excludedActions":["news"]}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[0].baselineAction: BaselineAction cannot be part of ExcludedActions (\"news\").","target":"slots[0].baselineAction"}}`},
		{"all actions excluded for a slot", url, "/multislot/rank", restMultiSlot(`"slots":[{"id":"s","baselineAction":"news"},{"id":"t","baselineAction":"film","excludedActions":["news","sports","music","film"]}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[1].excludedActions: Slot \"t\" excludes every action.","target":"slots[1].excludedActions"}}`},
		{"unknown excluded action", url, "/multislot/rank", restMultiSlot(`"slots":[{"id":"s","baselineAction":"news","excludedActions":["film","radio"]}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[0].excludedActions[1]: All excluded action ID's must have corresponding action ID: no action has id \"radio\".","target":"slots[0].excludedActions[1]"}}`},
		{"null slot", url, "/multislot/rank", restMultiSlot(`"slots":[null]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[0]: Slots contain null value.","target":"slots[0]"}}`},
		{"null slot feature", url, "/multislot/rank", restMultiSlot(`"slots":[{"id":"s","baselineAction":"news","features":[{"size":null}]}]`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots[0].features[0].size: features contain a null value","target":"slots[0].features[0].size"}}`},
		{"slots not an array", url, "/multislot/rank", restMultiSlot(`"slots":{}`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"slots: must be an array, not a JSON object","target":"slots"}}`},
		{"no actions", url, "/multislot/rank", `{"slots":[{"id":"s","baselineAction":"news"}]}`, 400,
			`{"error":{"code":"InvalidRankRequest","message":"actions: action count should be between 1 and 50, got 0","target":"actions"}}`},
		{"empty event id", url, "/multislot/rank", restMultiSlot(`,"eventId":""`), 400,
			`{"error":{"code":"InvalidRankRequest","message":"eventId: event id should be non-empty or absent","target":"eventId"}}`},
		{"reward without slot id", url, "/multislot/events/e/reward", `{"reward":[{"slotId":"hero","value":1},{"value":1}]}`, 400,
			`{"error":{"code":"InvalidRewardRequest","message":"reward[1].slotId: a slot id of 1 to 256 bytes is required","target":"reward[1].slotId"}}`},
		{"reward without value", url, "/multislot/events/e/reward", `{"reward":[{"slotId":"hero"}]}`, 400,
			`{"error":{"code":"InvalidRewardRequest","message":"reward[0].value: required: a number between -1 and 1","target":"reward[0].value"}}`},
		{"reward out of range", url, "/multislot/events/e/reward", `{"reward":[{"slotId":"hero","value":1.0000001}]}`, 400,
			`{"error":{"code":"InvalidRewardRequest","message":"reward[0].value: reward must be a number between -1 and 1, got 1.0000001","target":"reward[0].value"}}`},
		{"no rewards", url, "/multislot/events/e/reward", `{"reward":[]}`, 400,
			`{"error":{"code":"InvalidRewardRequest","message":"reward: want 1 to 50 slot rewards, got 0","target":"reward"}}`},
		{"null reward", url, "/multislot/events/e/reward", `{"reward":[null]}`, 400,
			`{"error":{"code":"InvalidRewardRequest","message":"reward[0]: reward contains a null value","target":"reward[0]"}}`},
		{"reward event id too long", url, "/multislot/events/" + strings.Repeat("e", 257) + "/reward", `{"reward":[{"slotId":"hero","value":1}]}`, 400,
			`{"error":{"code":"InvalidRewardRequest","message":"eventId: longer than 256 bytes","target":"eventId"}}`},
		{"activate event id too long", url, "/multislot/events/" + strings.Repeat("e", 257) + "/activate", ``, 400,
			`{"error":{"code":"InvalidEventIdToActivate","message":"eventId: longer than 256 bytes","target":"eventId"}}`},
		{"single-slot rank on a multi-slot loop", url, "/rank", rankBody, 400,
			`{"error":{"code":"InvalidRankRequest","message":"loop \"test\" is multi-slot (its policy has --ccb_explore_adf): use MultiSlotRank and MultiSlotReward"}}`},
		{"multi-slot rank on a single-slot loop", singleURL, "/multislot/rank", restMultiSlot(""), 400,
			`{"error":{"code":"InvalidMultiSlotApiAccess","message":"Multi-slot feature is currently disabled: loop \"test\" is single-slot (its policy has --cb_explore_adf); a multi-slot loop is one made with a --ccb_explore_adf policy"}}`},
		{"multi-slot reward on a single-slot loop", singleURL, "/multislot/events/e/reward", `{"reward":[{"slotId":"hero","value":1}]}`, 400,
			`{"error":{"code":"InvalidMultiSlotApiAccess","message":"Multi-slot feature is currently disabled: loop \"test\" is single-slot (its policy has --cb_explore_adf); a multi-slot loop is one made with a --ccb_explore_adf policy"}}`},
		{"multi-slot activate on a single-slot loop", singleURL, "/multislot/events/e/activate", ``, 400,
			`{"error":{"code":"InvalidMultiSlotApiAccess","message":"Multi-slot feature is currently disabled: loop \"test\" is single-slot (its policy has --cb_explore_adf); a multi-slot loop is one made with a --ccb_explore_adf policy"}}`},
		{"multi-slot under v1.0", strings.TrimSuffix(url, "v1.1-preview.3") + "v1.0", "/multislot/rank", restMultiSlot(""), 404,
			`{"error":{"code":"ResourceNotFound","message":"no such route: POST /personalizer/v1.0/multislot/rank"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := post(t, tt.url+tt.path, tt.body)
			if code != tt.status || string(out) != tt.want+"\n" {
				t.Errorf("%d %s\nwant %d %s", code, out, tt.status, tt.want)
			}
		})
	}
	for _, m := range []*eventlog.Mem{mem, singleMem} {
		for p := range m.Partitions(eventlog.EventsTopic) {
			if n := len(m.Records(eventlog.EventsTopic, p)); n != 0 {
				t.Errorf("rejected requests logged %d records in partition %d", n, p)
			}
		}
	}
}

// FuzzRESTMultiSlot feeds arbitrary bodies to the multi-slot route: it
// never panics, answers 201 exactly when the mapping and validation accept
// the body and 400 otherwise, always with a JSON body, and a 201 fills
// every slot, in order, with an action no earlier slot took and the slot
// does not exclude.
func FuzzRESTMultiSlot(f *testing.F) {
	log := slog.New(slog.DiscardHandler)
	pol, err := bandit.ParsePolicy(bandit.DefaultMultiSlotPolicy)
	if err != nil {
		f.Fatal(err)
	}
	srv := New(Config{Loop: "fuzz", Policy: pol}, NewPublisher(discard{}, BufferLimits{Records: 1, Bytes: 1 << 30}, 0, log), log, time.Now)
	g, err := NewGuard(GuardConfig{Loop: "fuzz"}, time.Now)
	if err != nil {
		f.Fatal(err)
	}
	h := NewREST(srv, g, 1<<20)
	f.Add([]byte(restMultiSlot("")))
	f.Add([]byte(restMultiSlot(`"slots":[{"id":"a","baselineAction":"film","excludedActions":["news","sports"]},{"id":"b","baselineAction":"news","excludedActions":["sports","music"]},{"id":"c","baselineAction":"sports"}]`)))
	f.Add([]byte(restMultiSlot(`"slots":[null,{"id":1}]`)))
	f.Add([]byte(`{"actions":[{"id":"x"}],"slots":[{"id":"s","baselineAction":"x","features":[{"a":{"b":null}}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/personalizer/v1.1-preview.3/multislot/rank", bytes.NewReader(body)))
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%d %q is not JSON", rec.Code, rec.Body)
		}
		var in restMultiSlotRankRequest
		var req *personalizerv1.MultiSlotRankRequest
		err := json.Unmarshal(body, &in)
		if err == nil {
			req, err = multiSlotFromREST(&in)
		}
		if err == nil {
			_, err = DefaultLimits.ValidateMultiSlotRank(req, nil)
		}
		if want := map[bool]int{true: http.StatusCreated, false: http.StatusBadRequest}[err == nil]; rec.Code != want {
			t.Fatalf("status %d %s, want %d (%v)", rec.Code, rec.Body, want, err)
		}
		if err != nil {
			return
		}
		var out restMultiSlotRankResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Slots) != len(req.Slots) {
			t.Fatalf("response %s (%v)", rec.Body, err)
		}
		taken := map[string]bool{}
		for k, s := range out.Slots {
			a := s.RewardActionID
			if s.ID != req.Slots[k].Id || taken[a] || slices.Contains(req.Slots[k].ExcludedActions, a) ||
				a != "" && !slices.ContainsFunc(req.Actions, func(x *personalizerv1.Action) bool { return x.Id == a }) {
				t.Fatalf("slot %d of %s", k, rec.Body)
			}
			taken[a] = a != ""
		}
	})
}
