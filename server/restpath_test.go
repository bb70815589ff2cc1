package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestRESTTypeErrors checks that a JSON value of the wrong type is named
// by its full path, array indices included, in the target and at the
// start of the message, as the other REST errors are.
func TestRESTTypeErrors(t *testing.T) {
	t.Parallel()
	_, _, srv := newTestServer(t)
	url := newTestREST(t, srv, 4096) + "/personalizer/v1.0"
	tests := []struct {
		path, body      string
		code            string
		target, message string
	}{
		{"/rank", `{"actions":[{"id":"a"},{"id":5}]}`, "InvalidRankRequest", "actions[1].id", "actions[1].id: must be a string, not a JSON number"},
		{"/rank", `{"actions":[{"id":"a"},{"id":{"x":[1]}}]}`, "InvalidRankRequest", "actions[1].id", "actions[1].id: must be a string, not a JSON object"},
		{"/rank", " {\n \"actions\" : [ {\"id\":\"a\"} ,\n\t{ \"id\" : true } ] } ", "InvalidRankRequest", "actions[1].id", "actions[1].id: must be a string, not a JSON bool"},
		{"/rank", `{"act\u0069ons":[{"id":"a"},{"id":5}]}`, "InvalidRankRequest", "actions[1].id", "actions[1].id: must be a string, not a JSON number"},
		{"/rank", `{"Actions":[{"ID":[]}]}`, "InvalidRankRequest", "Actions[0].ID", "Actions[0].ID: must be a string, not a JSON array"},
		{"/rank", `{"actions":[{"id":"a"},5]}`, "InvalidRankRequest", "actions[1]", "actions[1]: must be an object, not a JSON number"},
		{"/rank", `{"actions":[{"id":"a"},{"id":"b","features":"x"}]}`, "InvalidRankRequest", "actions[1].features", "actions[1].features: must be an array, not a JSON string"},
		{"/rank", `{"actions":"x"}`, "InvalidRankRequest", "actions", "actions: must be an array, not a JSON string"},
		{"/rank", `{"actions":[{"id":"a"}],"excludedActions":["a",5]}`, "InvalidRankRequest", "excludedActions[1]", "excludedActions[1]: must be a string, not a JSON number"},
		{"/rank", `{"excludedActions":{}}`, "InvalidRankRequest", "excludedActions", "excludedActions: must be an array, not a JSON object"},
		{"/rank", `{"contextFeatures":{"a":1}}`, "InvalidRankRequest", "contextFeatures", "contextFeatures: must be an array, not a JSON object"},
		{"/rank", `{"contextFeatures":[{"a":1},5],"actions":[{"id":"a"}]}`, "InvalidRankRequest", "contextFeatures[1]", "contextFeatures[1]: features are not in key value pair format: want a JSON object"},
		{"/rank", `{"eventId":5}`, "InvalidRankRequest", "eventId", "eventId: must be a string, not a JSON number"},
		{"/rank", `{"deferActivation":"yes"}`, "InvalidRankRequest", "deferActivation", "deferActivation: must be true or false, not a JSON string"},
		{"/rank", `[{"actions":[]}]`, "InvalidRankRequest", "", "the request body must be an object, not a JSON array"},
		{"/events/e/reward", `{"value":"1"}`, "InvalidRewardRequest", "value", "value: must be a number, not a JSON string"},
		{"/events/e/reward", `{"value":1e999}`, "InvalidRewardRequest", "value", "value: number 1e999 is out of range"},
		{"/events/e/reward", `0.5`, "InvalidRewardRequest", "", "the request body must be an object, not a JSON number"},
	}
	for _, tt := range tests {
		code, out := post(t, url+tt.path, tt.body)
		var body restError
		if err := json.Unmarshal(out, &body); err != nil {
			t.Fatalf("%s: %s: %v", tt.body, out, err)
		}
		want := restErrorBody{Code: tt.code, Message: tt.message, Target: tt.target}
		if code != http.StatusBadRequest || body.Error != want {
			t.Errorf("%s: %d %+v, want 400 %+v", tt.body, code, body.Error, want)
		}
	}
}

// TestValuePath checks the path of the value at each offset encoding/json
// reports: just past a literal, just past an opening bracket.
func TestValuePath(t *testing.T) {
	t.Parallel()
	const b = `{"a":[1,{"b":"x","c":[true,{}]}],"d":null}`
	tests := []struct {
		off  int
		want string
	}{
		{1, ""},           // the outer object
		{6, "a"},          // a's array
		{7, "a[0]"},       // 1
		{9, "a[1]"},       // a[1]'s object
		{16, "a[1].b"},    // "x"
		{22, "a[1].c"},    // c's array
		{26, "a[1].c[0]"}, // true
		{28, "a[1].c[1]"}, // {}
		{41, "d"},         // null
	}
	for _, tt := range tests {
		if got := valuePath([]byte(b), tt.off); got != tt.want {
			t.Errorf("offset %d (after %q): %q, want %q", tt.off, b[:tt.off], got, tt.want)
		}
	}
}

// FuzzTypeErrorPath decodes arbitrary bodies as a RankRequest: for every
// type error, the path [valuePath] finds is encoding/json's own field path
// with the array indices added (in the body's spelling, which
// encoding/json matches without regard to case).
func FuzzTypeErrorPath(f *testing.F) {
	for _, s := range []string{
		`{"actions":[{"id":"a"},{"id":5}]}`, `{"actions":[{"id":"a"},5]}`, `{"Actions":[{"ID":[]}]}`,
		`{"excludedActions":["a",{}]}`, `{"eventId":[1]}`, `{"deferActivation":0}`, `[1]`, `{"contextFeatures":{"a":1}}`,
	} {
		f.Add([]byte(s))
	}
	indices := regexp.MustCompile(`\[[0-9]+\]`)
	f.Fuzz(func(t *testing.T, body []byte) {
		var in restRankRequest
		var e *json.UnmarshalTypeError
		if !errors.As(json.Unmarshal(body, &in), &e) {
			return
		}
		path := valuePath(body, int(e.Offset))
		if got := strings.ToLower(indices.ReplaceAllString(path, "")); got != strings.ToLower(e.Field) {
			t.Fatalf("%s: path %q, encoding/json's field %q", body, path, e.Field)
		}
	})
}
