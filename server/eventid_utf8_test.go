package server

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/open-personalizer/personalizer/eventlog"
)

// TestEventIDNotUTF8 refuses event ids that are not UTF-8: REST paths
// carry any bytes, percent-encoded, and the record of such an id would not
// decode downstream. (gRPC's decoder refuses them before validation; see
// TestUndecodableRequests.)
func TestEventIDNotUTF8(t *testing.T) {
	t.Parallel()
	if err := DefaultLimits.ValidateEventID("event_id", "a\xff"); err == nil || err.Error() != "event_id: event id must be valid UTF-8" {
		t.Errorf("ValidateEventID(a\\xff) = %v", err)
	}
	if err := DefaultLimits.ValidateEventID("event_id", "ünïcode"); err != nil {
		t.Errorf("ValidateEventID(ünïcode) = %v", err)
	}
	_, mem, srv := newTestServer(t)
	url := newTestREST(t, srv, 4096) + "/personalizer/v1.0/events/"
	tests := []struct{ path, body, code string }{
		{"a%FF/reward", `{"value":1}`, "InvalidRewardRequest"},
		{"%C3%28/reward", `{"value":1}`, "InvalidRewardRequest"},
		{"a%FF/activate", ``, "InvalidEventIdToActivate"},
		{"%ED%A0%80/activate", ``, "InvalidEventIdToActivate"}, // a UTF-16 surrogate
	}
	for _, tt := range tests {
		code, out := post(t, url+tt.path, tt.body)
		var body restError
		if err := json.Unmarshal(out, &body); err != nil {
			t.Fatalf("%s: %s: %v", tt.path, out, err)
		}
		want := restErrorBody{Code: tt.code, Message: "eventId: event id must be valid UTF-8", Target: "eventId"}
		if code != http.StatusBadRequest || body.Error != want {
			t.Errorf("%s: %d %+v, want 400 %+v", tt.path, code, body.Error, want)
		}
	}
	for p := range mem.Partitions(eventlog.EventsTopic) {
		if n := len(mem.Records(eventlog.EventsTopic, p)); n != 0 {
			t.Errorf("refused calls wrote %d records to partition %d", n, p)
		}
	}
}

// TestRESTIDsBecomeUTF8 checks that action and excluded ids cannot reach
// the server as invalid UTF-8 either: gRPC's decoder refuses them (see
// TestUndecodableRequests), and encoding/json replaces each invalid byte
// of a REST body's strings with U+FFFD, consistently, so an excluded id
// still names its action.
func TestRESTIDsBecomeUTF8(t *testing.T) {
	t.Parallel()
	_, _, srv := newTestServer(t)
	url := newTestREST(t, srv, 4096) + "/personalizer/v1.0/rank"
	code, out := post(t, url, "{\"actions\":[{\"id\":\"a\xff\"},{\"id\":\"b\xfe\"}],\"excludedActions\":[\"b\xfe\"]}")
	if code != http.StatusCreated {
		t.Fatalf("%d %s", code, out)
	}
	var got restRankResponse
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	want := []restRankedAction{{ID: "a\uFFFD", Probability: 1}, {ID: "b\uFFFD", Probability: 0}}
	if len(got.Ranking) != 2 || got.Ranking[0] != want[0] || got.Ranking[1] != want[1] || got.RewardActionID != "a\uFFFD" {
		t.Errorf("ranking %+v, reward action %q; want %+v", got.Ranking, got.RewardActionID, want)
	}
}
