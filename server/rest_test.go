package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// newTestREST serves srv's REST API without keys, reading bodies up to
// maxBody bytes.
func newTestREST(t *testing.T, srv *Server, maxBody int64) string {
	t.Helper()
	g, err := NewGuard(GuardConfig{Loop: "test"}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(NewREST(srv, g, maxBody))
	t.Cleanup(hs.Close)
	return hs.URL
}

// post sends body to url and returns the status and the response body.
func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// loadTrained loads into srv a model trained to prefer the action whose id
// is best in requests like req, so that probabilities are not uniform.
func loadTrained(t *testing.T, srv *Server, req *personalizerv1.RankRequest, best string) {
	t.Helper()
	if err := srv.Load(trainedVersion(t, req, best, 1)); err != nil {
		t.Fatal(err)
	}
}

// trainedVersion is version v of a model trained to prefer best for req.
func trainedVersion(t *testing.T, req *personalizerv1.RankRequest, best string, v uint64) *eventsv1.GetModelResponse {
	t.Helper()
	policy, err := bandit.ParsePolicy("--cb_explore_adf --epsilon 0.2 -l 0.5 -q ::")
	if err != nil {
		t.Fatal(err)
	}
	m := bandit.NewModel(policy)
	var ev bandit.Event
	var pred bandit.Prediction
	for i := range 60 {
		k := i % len(req.Actions)
		cost := float32(0)
		if req.Actions[k].Id == best {
			cost = -1
		}
		ev.Reset()
		features.Build(&ev, req.GetContextFeatures(), req.GetActions())
		ev.SetLabel(k, cost, 1/float32(len(req.Actions)))
		m.Learn(&ev, &pred)
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return versionOf(buf.Bytes(), v)
}

func feature(name string, v any) *personalizerv1.Feature {
	switch v := v.(type) {
	case string:
		return str(name, v)
	case float64:
		return num(name, v)
	case bool:
		return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_BoolValue{BoolValue: v}}
	}
	panic(v)
}

func action(id string, nss ...*personalizerv1.Namespace) *personalizerv1.Action {
	return &personalizerv1.Action{Id: id, Features: nss}
}

// TestRESTMatchesGRPC sends the specification's examples over REST and
// their typed equivalents over gRPC to one server: the mapping gives the
// typed request, and both answer and log the same.
func TestRESTMatchesGRPC(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file    string
		typed   *personalizerv1.RankRequest
		best    string
		context string // the logged DSJson context, when checked literally
	}{
		{
			file: "rank.json",
			typed: &personalizerv1.RankRequest{
				ContextFeatures: []*personalizerv1.Namespace{ns("", feature("timeOfDay", "Morning"))},
				Actions: []*personalizerv1.Action{
					action("NewsArticle", ns("", feature("type", "News"))),
					action("SportsArticle", ns("", feature("type", "Sports"))),
					action("EntertainmentArticle", ns("", feature("type", "Entertainment"))),
				},
				ExcludedActions: []string{"SportsArticle"},
				EventId:         proto.String("75269AD0-BFEE-4598-8196-C57383D38E10"),
			},
			best: "EntertainmentArticle",
			context: `{"timeOfDay":"Morning","_multi":[` +
				`{"_tag":"NewsArticle","i":{"constant":1,"id":"NewsArticle"},"j":{"type":"News"}},` +
				`{"_tag":"EntertainmentArticle","i":{"constant":1,"id":"EntertainmentArticle"},"j":{"type":"Entertainment"}}]}`,
		},
		{
			file: "rank_namespaces.json",
			typed: &personalizerv1.RankRequest{
				ContextFeatures: []*personalizerv1.Namespace{
					ns("user", feature("profileType", "AnonymousUser"), feature("latLong", "47.6,-122.1")),
					ns("environment", feature("dayOfMonth", "28"), feature("monthOfYear", "8"), feature("weather", "Sunny")),
					ns("device", feature("mobile", true), feature("windows", true)),
					ns("recentActivity", feature("itemsInCart", 3.0)),
				},
				Actions: []*personalizerv1.Action{
					action("EntertainmentArticle",
						ns("", feature("topic", "Entertainment"), feature("length", 0.8), feature("author", "Ann")),
						ns("meta", feature("fresh", true))),
					action("SportsArticle", ns("", feature("topic", "Sports"), feature("length", 0.3))),
					action("PoliticsArticle", ns("", feature("topic", "Politics"))),
				},
				EventId:         proto.String("namespaced-1"),
				DeferActivation: true,
			},
			best: "SportsArticle",
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			body, err := os.ReadFile("testdata/rest/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			var in restRankRequest
			if err := json.Unmarshal(body, &in); err != nil {
				t.Fatal(err)
			}
			mapped, err := rankFromREST(&in)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(mapped, tt.typed) {
				t.Fatalf("mapped\n%v\nwant\n%v", mapped, tt.typed)
			}

			client, mem, srv := newTestServer(t)
			loadTrained(t, srv, tt.typed, tt.best)
			url := newTestREST(t, srv, 4<<20)
			code, out := post(t, url+"/personalizer/v1.0/rank", string(body))
			if code != http.StatusCreated {
				t.Fatalf("REST rank: %d %s", code, out)
			}
			var got restRankResponse
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			want, err := client.Rank(context.Background(), tt.typed)
			if err != nil {
				t.Fatal(err)
			}
			if got.EventID != want.EventId || got.RewardActionID != want.RewardActionId || len(got.Ranking) != len(want.Ranking) {
				t.Fatalf("REST %+v, gRPC %v", got, want)
			}
			if p := want.Ranking[0].Probability; p == 0 || p == 1/float32(len(tt.typed.Actions)-len(tt.typed.ExcludedActions)) {
				t.Fatalf("probability %v: the model did not make the ranking", p)
			}
			for i, r := range want.Ranking {
				if got.Ranking[i].ID != r.Id || got.Ranking[i].Probability != r.Probability {
					t.Errorf("ranking[%d]: REST %+v, gRPC %v", i, got.Ranking[i], r)
				}
			}
			// Both ranks were logged with the same key, context and decision.
			var recs []*eventsv1.RankEvent
			for p := range mem.Partitions(eventlog.EventsTopic) {
				for _, rec := range waitRecords(t, mem, p, 2) {
					if string(rec.Key) != "test/"+tt.typed.GetEventId() {
						t.Errorf("record key %q", rec.Key)
					}
					var ev eventsv1.RankEvent
					if err := proto.Unmarshal(rec.Value, &ev); err != nil {
						t.Fatal(err)
					}
					recs = append(recs, &ev)
				}
			}
			if len(recs) != 2 || !proto.Equal(recs[0], recs[1]) {
				t.Fatalf("logged %v", recs)
			}
			if c, err := joiner.RankContext(recs[0]); tt.context != "" && string(c) != tt.context {
				t.Errorf("context\n%s (%v)\nwant\n%s", c, err, tt.context)
			}
			if recs[0].Deferred != tt.typed.DeferActivation {
				t.Errorf("deferred %v", recs[0].Deferred)
			}
		})
	}
}

// waitRecords returns partition p's records once the publisher has written
// n records in all, or the partition's records if they are fewer.
func waitRecords(t *testing.T, mem *eventlog.Mem, p, n int) []eventlog.Record {
	t.Helper()
	r := mem.Reader(eventlog.EventsTopic, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range n {
		if _, err := r.Fetch(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return mem.Records(eventlog.EventsTopic, p)
}

func TestRESTRewardAndActivate(t *testing.T) {
	t.Parallel()
	_, mem, srv := newTestServer(t)
	url := newTestREST(t, srv, 4<<20)
	for _, v := range RESTVersions {
		base := url + "/personalizer/" + v
		if code, out := post(t, base+"/events/ev%2F1/reward", `{"value": 0.5}`); code != http.StatusNoContent {
			t.Fatalf("%s reward: %d %s", v, code, out)
		}
		if code, out := post(t, base+"/events/ev%2F1/activate", ""); code != http.StatusNoContent {
			t.Fatalf("%s activate: %d %s", v, code, out)
		}
	}
	types := map[string]int{}
	for p := range mem.Partitions(eventlog.EventsTopic) {
		for _, rec := range waitRecords(t, mem, p, 4) {
			if string(rec.Key) != "test/ev/1" {
				t.Errorf("key %q", rec.Key)
			}
			types[rec.Type()]++
			if rec.Type() == eventlog.TypeReward {
				var ev eventsv1.RewardEvent
				if err := proto.Unmarshal(rec.Value, &ev); err != nil || ev.Value != 0.5 || ev.EventId != "ev/1" {
					t.Errorf("reward %v %v", &ev, err)
				}
			}
		}
	}
	if types[eventlog.TypeReward] != 2 || types[eventlog.TypeActivate] != 2 || len(types) != 2 {
		t.Errorf("records by type %v", types)
	}
}

// TestRESTErrors checks Personalizer's error body, code and target for bad
// requests, and that none of them is logged.
func TestRESTErrors(t *testing.T) {
	t.Parallel()
	_, mem, srv := newTestServer(t)
	url := newTestREST(t, srv, 4096) + "/personalizer/v1.0"
	rank := func(edit string) string {
		return `{"contextFeatures":[{"a":1}],"actions":[{"id":"x","features":[{"b":2}]},{"id":"y"}]` + edit + `}`
	}
	actions51 := make([]string, 51)
	for i := range actions51 {
		actions51[i] = fmt.Sprintf(`{"id":"a%d"}`, i)
	}
	tests := []struct {
		name, path, body string
		status           int
		code, target     string
	}{
		{"not JSON", "/rank", `{"actions":`, 400, "BadRequest", ""},
		{"actions not an array", "/rank", `{"actions":"x"}`, 400, "InvalidRankRequest", "actions"},
		{"no actions", "/rank", `{"contextFeatures":[{"a":1}]}`, 400, "InvalidRankRequest", "actions"},
		{"51 actions", "/rank", `{"actions":[` + strings.Join(actions51, ",") + `]}`, 400, "InvalidRankRequest", "actions"},
		{"null action", "/rank", `{"actions":[null]}`, 400, "InvalidRankRequest", "actions[0]"},
		{"null context", "/rank", `{"contextFeatures":[null],"actions":[{"id":"x"}]}`, 400, "InvalidRankRequest", "contextFeatures[0]"},
		{"context not an object", "/rank", `{"contextFeatures":[[1]],"actions":[{"id":"x"}]}`, 400, "InvalidRankRequest", "contextFeatures[0]"},
		{"array feature", "/rank", `{"contextFeatures":[{"u":{"vec":[1,2]}}],"actions":[{"id":"x"}]}`, 400, "InvalidRankRequest", "contextFeatures[0].u.vec"},
		{"null feature", "/rank", rank(`,"excludedActions":[],"contextFeatures":[{"a":null}]`), 400, "InvalidRankRequest", "contextFeatures[0].a"},
		{"number out of range", "/rank", `{"contextFeatures":[{"a":1e999}],"actions":[{"id":"x"}]}`, 400, "InvalidRankRequest", "contextFeatures[0].a"},
		{"reserved name", "/rank", `{"actions":[{"id":"x","features":[{"_tag":"t"}]}]}`, 400, "InvalidRankRequest", "actions[0].features[0]._tag"},
		{"empty name", "/rank", `{"contextFeatures":[{"":1}],"actions":[{"id":"x"}]}`, 400, "InvalidRankRequest", "contextFeatures[0]."},
		{"bad namespace name", "/rank", `{"contextFeatures":[{" u":{"a":1}}],"actions":[{"id":"x"}]}`, 400, "InvalidRankRequest", "contextFeatures[0]. u"},
		{"empty action id", "/rank", `{"actions":[{"id":"x"},{"id":""}]}`, 400, "InvalidRankRequest", "actions[1].id"},
		{"duplicate action id", "/rank", `{"actions":[{"id":"x"},{"id":"x"}]}`, 400, "InvalidRankRequest", "actions[1].id"},
		{"unknown excluded id", "/rank", rank(`,"excludedActions":["z"]`), 400, "InvalidRankRequest", "excludedActions[0]"},
		{"empty event id", "/rank", rank(`,"eventId":""`), 400, "InvalidRankRequest", "eventId"},
		{"too large", "/rank", rank(`,"eventId":"` + strings.Repeat("e", 4096) + `"`), 400, "PayloadSizeExceeded", ""},
		{"reward without value", "/events/e/reward", `{}`, 400, "InvalidRewardRequest", "value"},
		{"reward out of range", "/events/e/reward", `{"value":1.0000001}`, 400, "InvalidRewardRequest", "value"},
		{"reward not a number", "/events/e/reward", `{"value":"1"}`, 400, "InvalidRewardRequest", "value"},
		{"reward event id too long", "/events/" + strings.Repeat("e", 257) + "/reward", `{"value":1}`, 400, "InvalidRewardRequest", "eventId"},
		{"activate event id too long", "/events/" + strings.Repeat("e", 257) + "/activate", ``, 400, "InvalidEventIdToActivate", "eventId"},
		{"unknown route", "/model", ``, 404, "ResourceNotFound", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := post(t, url+tt.path, tt.body)
			var body map[string]map[string]string
			if err := json.Unmarshal(out, &body); err != nil {
				t.Fatalf("body %s: %v", out, err)
			}
			e := body["error"]
			if code != tt.status || e["code"] != tt.code || e["target"] != tt.target || e["message"] == "" || len(body) != 1 {
				t.Errorf("%d %s, want %d code %s target %q", code, out, tt.status, tt.code, tt.target)
			}
			if tt.target != "" && !strings.HasPrefix(e["message"], tt.target+": ") {
				t.Errorf("message %q does not name %q", e["message"], tt.target)
			}
		})
	}
	for p := range mem.Partitions(eventlog.EventsTopic) {
		if n := len(mem.Records(eventlog.EventsTopic, p)); n != 0 {
			t.Errorf("rejected requests logged %d records in partition %d", n, p)
		}
	}
}

// FuzzRESTRank feeds arbitrary bodies to the JSON mapping and the REST
// handler: neither panics, the handler answers 201 exactly when the
// mapping and validation accept the body and 400 otherwise, always with a
// JSON body, and an accepted request logs a valid JSON context.
func FuzzRESTRank(f *testing.F) {
	log := slog.New(slog.DiscardHandler)
	srv := New(Config{Loop: "fuzz"}, NewPublisher(discard{}, BufferLimits{Records: 1, Bytes: 1 << 30}, 0, log), log, time.Now)
	g, err := NewGuard(GuardConfig{Loop: "fuzz"}, time.Now)
	if err != nil {
		f.Fatal(err)
	}
	h := NewREST(srv, g, 1<<20)
	for _, file := range []string{"rank.json", "rank_namespaces.json"} {
		b, err := os.ReadFile("testdata/rest/" + file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"contextFeatures":[{"a":{"b":{"c":[1]}}},null,1],"actions":[null,{"id":"x","features":[{"":true}]}]}`))
	f.Add([]byte(`{"contextFeatures":[{"a":"\u0000\ud800","b":-0,"c":1e308}],"actions":[{"id":"\"","features":[{"j":{"x":false}}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/personalizer/v1.0/rank", bytes.NewReader(body)))
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%d %q is not JSON", rec.Code, rec.Body)
		}
		var in restRankRequest
		var req *personalizerv1.RankRequest
		err := json.Unmarshal(body, &in)
		if err == nil {
			checkOracle(t, &in)
			req, err = rankFromREST(&in)
		}
		if err == nil {
			_, err = DefaultLimits.ValidateRank(req, nil)
		}
		if want := map[bool]int{true: http.StatusCreated, false: http.StatusBadRequest}[err == nil]; rec.Code != want {
			t.Fatalf("status %d %s, want %d (%v)", rec.Code, rec.Body, want, err)
		}
		if err != nil {
			return
		}
		eligible := req.GetActions()
		if c := features.AppendContext(nil, req.GetContextFeatures(), eligible); !json.Valid(c) {
			t.Fatalf("context %q is not JSON", c)
		}
		var ev bandit.Event
		features.Build(&ev, req.GetContextFeatures(), eligible)
	})
}

// restBody renders a typed request as Personalizer's JSON: the inverse of
// [rankFromREST] for requests whose namespaces are unique.
func restBody(req *personalizerv1.RankRequest) []byte {
	object := func(fs []*personalizerv1.Feature) map[string]any {
		m := map[string]any{}
		for _, f := range fs {
			switch v := f.GetValue().(type) {
			case *personalizerv1.Feature_StringValue:
				m[f.GetName()] = v.StringValue
			case *personalizerv1.Feature_NumberValue:
				m[f.GetName()] = v.NumberValue
			case *personalizerv1.Feature_BoolValue:
				m[f.GetName()] = v.BoolValue
			}
		}
		return m
	}
	objects := func(nss []*personalizerv1.Namespace) []any {
		var out []any
		for _, n := range nss {
			if n.GetName() == "" {
				out = append(out, object(n.GetFeatures()))
			} else {
				out = append(out, map[string]any{n.GetName(): object(n.GetFeatures())})
			}
		}
		return out
	}
	type act struct {
		ID       string `json:"id"`
		Features []any  `json:"features"`
	}
	in := map[string]any{"contextFeatures": objects(req.GetContextFeatures()), "eventId": req.GetEventId()}
	var as []act
	for _, a := range req.GetActions() {
		as = append(as, act{a.GetId(), objects(a.GetFeatures())})
	}
	in["actions"] = as
	b, err := json.Marshal(in)
	if err != nil {
		panic(err)
	}
	return b
}

// BenchmarkRankREST is BenchmarkRank's request through the REST handler:
// JSON decoding, the mapping onto the gRPC types, Rank and the JSON
// answer. cpu-µs/op is the CPU of the whole process.
func BenchmarkRankREST(b *testing.B) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	req.EventId = proto.String("bench")
	srv, stop := benchServer(b, req)
	defer stop()
	g, err := NewGuard(GuardConfig{Loop: "bench"}, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	h := NewREST(srv, g, 4<<20)
	body := restBody(req)
	// json.Marshal sorts keys: compare with the request in that order.
	var in restRankRequest
	if err := json.Unmarshal(body, &in); err != nil {
		b.Fatal(err)
	}
	mapped, err := rankFromREST(&in)
	if err != nil {
		b.Fatal(err)
	}
	if len(mapped.GetActions()) != 20 || len(mapped.GetContextFeatures()) != len(req.GetContextFeatures()) {
		b.Fatalf("mapped %v", mapped)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/personalizer/v1.0/rank", bytes.NewReader(body)))
		if rec.Code != http.StatusCreated {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkGuard is the per-call cost of a key check and a rate-limit token.
func BenchmarkGuard(b *testing.B) {
	key, line := NewKey("A", "")
	lines := []string{line}
	for range 9 { // ten keys to compare with
		_, l := NewKey("A", "")
		lines = append(lines, l)
	}
	dir := b.TempDir()
	file := dir + "/keys"
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		b.Fatal(err)
	}
	g, err := NewGuard(GuardConfig{Loop: "A", KeysFile: file, RateLimit: 1e12, RateBurst: 1 << 30}, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("ocp-apim-subscription-key", key))
	b.ReportAllocs()
	for b.Loop() {
		c, err := g.Authenticate(ctx)
		if err == nil {
			err = g.Limit(c)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// checkOracle checks the walker's mapping of in's context features
// against encoding/json's token reader: both accept or both refuse, and
// they find the same features, merged by namespace in order of first
// appearance.
func checkOracle(t *testing.T, in *restRankRequest) {
	t.Helper()
	var order []string
	byNS := map[string][]string{}
	ok := true
	for _, raw := range in.ContextFeatures {
		fs, good := oracleFeatures(raw)
		if ok = ok && good; !ok {
			break
		}
		for _, f := range fs {
			ns, _, _ := strings.Cut(f, "\x00")
			if _, seen := byNS[ns]; !seen {
				order = append(order, ns)
			}
			byNS[ns] = append(byNS[ns], f)
		}
	}
	nss, err := namespaces("contextFeatures", in.ContextFeatures)
	if (err == nil) != ok {
		t.Fatalf("oracle accepts: %v; walker: %v", ok, err)
	}
	var want, got []string
	for _, ns := range order {
		want = append(want, byNS[ns]...)
	}
	for _, n := range nss {
		for _, f := range n.GetFeatures() {
			var v any
			switch x := f.GetValue().(type) {
			case *personalizerv1.Feature_StringValue:
				v = fmt.Sprintf("%#v", x.StringValue)
			case *personalizerv1.Feature_BoolValue:
				v = fmt.Sprintf("%#v", x.BoolValue)
			case *personalizerv1.Feature_NumberValue:
				v = x.NumberValue
			}
			got = append(got, fmt.Sprintf("%s\x00%s=%v", n.GetName(), f.GetName(), v))
		}
	}
	if ok && !slices.Equal(got, want) {
		t.Fatalf("walker %q, oracle %q", got, want)
	}
}

// oracleFeatures decodes one feature object with encoding/json's token
// reader into "namespace\x00name=value" strings, for comparison with the
// walker's mapping; ok is false if the object is not one the mapping takes.
func oracleFeatures(raw []byte) (out []string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var walk func(ns string) bool
	walk = func(ns string) bool {
		for dec.More() {
			k, _ := dec.Token()
			name := k.(string)
			if featureNameProblem(name) != "" {
				return false
			}
			v, _ := dec.Token()
			switch v := v.(type) {
			case json.Delim:
				if v == '[' || namespaceNameProblem(name) != "" || !walk(name) {
					return false
				}
				continue
			case json.Number:
				x, err := strconv.ParseFloat(string(v), 64)
				if err != nil || math.IsInf(x, 0) {
					return false
				}
				out = append(out, fmt.Sprintf("%s\x00%s=%v", ns, name, x))
			case nil:
				return false
			default:
				out = append(out, fmt.Sprintf("%s\x00%s=%v", ns, name, fmt.Sprintf("%#v", v)))
			}
		}
		dec.Token() // '}'
		return true
	}
	if t, _ := dec.Token(); t != json.Delim('{') {
		return nil, false
	}
	return out, walk("")
}
