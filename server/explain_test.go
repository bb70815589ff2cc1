package server

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/client"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// explainRequest is the specification's Rank example (testdata/rest/rank.json)
// as a typed request.
func explainRequest() *personalizerv1.RankRequest {
	return &personalizerv1.RankRequest{
		ContextFeatures: []*personalizerv1.Namespace{ns("", feature("timeOfDay", "Morning"))},
		Actions: []*personalizerv1.Action{
			action("NewsArticle", ns("", feature("type", "News"))),
			action("SportsArticle", ns("", feature("type", "Sports"))),
			action("EntertainmentArticle", ns("", feature("type", "Entertainment"))),
		},
		ExcludedActions: []string{"SportsArticle"},
		EventId:         proto.String("75269AD0-BFEE-4598-8196-C57383D38E10"),
	}
}

// wantExplanation is what Rank must answer for req, which it answered with
// resp, under the model of version mv, worked out apart from Rank: the
// event built with names over the eligible actions, the learner's
// Explain of it (top [decide.ExplainTop]), each part negated (reward, not
// cost), in the order of resp's ranking, the excluded actions left out.
func wantExplanation(t *testing.T, mv *eventsv1.GetModelResponse, req *personalizerv1.RankRequest, resp *personalizerv1.RankResponse) []*personalizerv1.ActionExplanation {
	t.Helper()
	m, err := bandit.ReadModel(bytes.NewReader(mv.GetData()))
	if err != nil {
		t.Fatal(err)
	}
	var eligible []*personalizerv1.Action
	for _, a := range req.GetActions() {
		if !slices.Contains(req.GetExcludedActions(), a.GetId()) {
			eligible = append(eligible, a)
		}
	}
	var ev bandit.Event
	ev.SetKeepNames(true)
	features.Build(&ev, req.GetContextFeatures(), eligible)
	var p bandit.Prediction
	ex := m.Explain(&ev, &p, 10)
	byID := map[string]bandit.Explanation{}
	for i, a := range eligible {
		byID[a.GetId()] = ex[i]
	}
	var out []*personalizerv1.ActionExplanation
	for _, r := range resp.GetRanking() {
		x, ok := byID[r.GetId()]
		if !ok {
			continue // excluded
		}
		ae := &personalizerv1.ActionExplanation{Id: r.GetId(), Features: []*personalizerv1.FeatureScore{}}
		for _, c := range x.Features {
			ae.Features = append(ae.Features, &personalizerv1.FeatureScore{Name: c.Name, Score: 0 - c.Score})
		}
		out = append(out, ae)
	}
	return out
}

// restRanked is a REST Rank answer, decoded strictly: a key it does not
// name fails the decoding.
type restRanked struct {
	Ranking []struct {
		ID          string  `json:"id"`
		Probability float32 `json:"probability"`
	} `json:"ranking"`
	EventID              string `json:"eventId"`
	RewardActionID       string `json:"rewardActionId"`
	InferenceExplanation []struct {
		ID       string `json:"id"`
		Features []struct {
			Name  string  `json:"name"`
			Score float32 `json:"score"`
		} `json:"features"`
	} `json:"inferenceExplanation"`
}

// restRankAs posts body to the Rank route of every REST version and
// checks that each answers 201 with the same body whose top-level keys
// are exactly keys and which says what want (the gRPC answer) says.
// It returns the body.
func restRankAs(t *testing.T, e *adminEnv, body []byte, want *personalizerv1.RankResponse, keys ...string) []byte {
	t.Helper()
	var first []byte
	for _, v := range RESTVersions {
		resp, out := call(t, "POST", e.url+"/"+v+"/rank", "", string(body))
		if resp.StatusCode != 201 {
			t.Fatalf("%s rank: %d %s", v, resp.StatusCode, out)
		}
		if first == nil {
			first = out
		} else if !bytes.Equal(out, first) {
			t.Fatalf("%s rank answered\n%s\nthe first version\n%s", v, out, first)
		}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(first, &top); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(top)); !slices.Equal(got, slices.Sorted(slices.Values(keys))) {
		t.Fatalf("REST rank keys %v, want %v: %s", got, keys, first)
	}
	dec := json.NewDecoder(bytes.NewReader(first))
	dec.DisallowUnknownFields()
	var got restRanked
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("REST rank answer %s: %v", first, err)
	}
	// The REST answer, in the API's types, is the gRPC answer.
	asProto := &personalizerv1.RankResponse{EventId: got.EventID, RewardActionId: got.RewardActionID, ModelVersion: want.GetModelVersion()}
	for _, r := range got.Ranking {
		asProto.Ranking = append(asProto.Ranking, &personalizerv1.RankedAction{Id: r.ID, Probability: r.Probability})
	}
	for _, x := range got.InferenceExplanation {
		ae := &personalizerv1.ActionExplanation{Id: x.ID}
		for _, f := range x.Features {
			ae.Features = append(ae.Features, &personalizerv1.FeatureScore{Name: f.Name, Score: f.Score})
		}
		asProto.InferenceExplanation = append(asProto.InferenceExplanation, ae)
	}
	if !proto.Equal(asProto, want) {
		t.Fatalf("REST answered\n%v\ngRPC\n%v", asProto, want)
	}
	return first
}

// setExplain switches the loop's isInferenceExplainabilityEnabled through
// the REST service configuration (PUT of what GET answers, the field
// changed) or the gRPC AdminService, and waits for Rank to apply it.
func setExplain(t *testing.T, e *adminEnv, on, rest bool) {
	t.Helper()
	version := e.reg.Get("test").Version + 1
	if rest {
		_, body := call(t, "GET", e.url+"/v1.1-preview.3/configurations/service", "", "")
		var svc map[string]any
		if err := json.Unmarshal(body, &svc); err != nil {
			t.Fatal(err)
		}
		if _, ok := svc["isInferenceExplainabilityEnabled"]; !ok {
			t.Fatalf("GET service has no isInferenceExplainabilityEnabled: %s", body)
		}
		svc["isInferenceExplainabilityEnabled"] = on
		put, _ := json.Marshal(svc)
		resp, body := call(t, "PUT", e.url+"/v1.1-preview.3/configurations/service", "", string(put))
		if resp.StatusCode != 200 {
			t.Fatalf("PUT service: %d %s", resp.StatusCode, body)
		}
		var got struct {
			On *bool `json:"isInferenceExplainabilityEnabled"`
		}
		if err := json.Unmarshal(body, &got); err != nil || got.On == nil || *got.On != on {
			t.Fatalf("PUT service answered %s", body)
		}
	} else {
		ctx := context.Background()
		get, err := e.admin.GetServiceConfiguration(ctx, &personalizerv1.GetServiceConfigurationRequest{})
		if err != nil {
			t.Fatal(err)
		}
		svc := get.GetConfiguration()
		svc.IsInferenceExplainabilityEnabled = on
		up, err := e.admin.UpdateServiceConfiguration(ctx, &personalizerv1.UpdateServiceConfigurationRequest{Configuration: svc})
		if err != nil {
			t.Fatal(err)
		}
		if up.GetConfiguration().GetIsInferenceExplainabilityEnabled() != on || up.GetVersion() != version {
			t.Fatalf("UpdateServiceConfiguration answered %v", up)
		}
	}
	waitConfig(t, e.srv, version)
	if e.reg.Get("test").Service.IsInferenceExplainabilityEnabled != on {
		t.Fatalf("stored configuration %+v", e.reg.Get("test").Service)
	}
}

// TestRankExplanation follows a loop through the setting's changes: off
// by default (no inferenceExplanation over gRPC, RankStream or REST), on
// through the REST service configuration (before the first model every
// action is named with no features; with a model, the learner's
// explanation of the same model and event, in ranking order, equal over
// gRPC, RankStream and both REST versions), then off again through the
// gRPC AdminService.
func TestRankExplanation(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, false)
	req := explainRequest()
	body, err := os.ReadFile("testdata/rest/rank.json")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rank := func() *personalizerv1.RankResponse {
		t.Helper()
		resp, err := e.rank.Rank(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		stream, err := e.rank.RankStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&personalizerv1.RankStreamRequest{Request: req}); err != nil {
			t.Fatal(err)
		}
		sr, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		stream.CloseSend()
		if !proto.Equal(sr.GetResponse(), resp) {
			t.Fatalf("RankStream answered\n%v\nRank\n%v", sr.GetResponse(), resp)
		}
		return resp
	}
	plain := []string{"ranking", "eventId", "rewardActionId"}
	explained := append(slices.Clone(plain), "inferenceExplanation")

	// Off by default, in the stored configuration and over both APIs.
	get, err := e.admin.GetServiceConfiguration(ctx, &personalizerv1.GetServiceConfigurationRequest{})
	if err != nil || get.GetConfiguration().GetIsInferenceExplainabilityEnabled() {
		t.Fatalf("GetServiceConfiguration: %v %v", get, err)
	}
	resp := rank()
	if resp.InferenceExplanation != nil {
		t.Fatalf("off: %v", resp.InferenceExplanation)
	}
	restRankAs(t, e, body, resp, plain...)

	// On, before the first model: the eligible actions in ranking order,
	// no features (nothing scored them).
	setExplain(t, e, true, true)
	resp = rank()
	want := []*personalizerv1.ActionExplanation{{Id: resp.Ranking[0].Id}, {Id: resp.Ranking[1].Id}}
	if !proto.Equal(&personalizerv1.RankResponse{InferenceExplanation: resp.InferenceExplanation}, &personalizerv1.RankResponse{InferenceExplanation: want}) ||
		resp.Ranking[2].Id != "SportsArticle" {
		t.Fatalf("before the first model: %v", resp)
	}
	out := restRankAs(t, e, body, resp, explained...)
	if !bytes.Contains(out, []byte(`"inferenceExplanation":[{"id":"`+want[0].Id+`","features":[]},{"id":"`+want[1].Id+`","features":[]}]`)) {
		t.Errorf("REST before the first model: %s", out)
	}

	// A trained model: exactly the learner's explanation of the decision.
	mv := trainedVersion(t, req, "EntertainmentArticle", 1)
	if err := e.srv.Load(mv); err != nil {
		t.Fatal(err)
	}
	resp = rank()
	if resp.GetModelVersion() != "1" || resp.Ranking[0].Probability == 0.5 {
		t.Fatalf("the model did not decide: %v", resp)
	}
	wantEx := wantExplanation(t, mv, req, resp)
	if !proto.Equal(&personalizerv1.RankResponse{InferenceExplanation: resp.InferenceExplanation}, &personalizerv1.RankResponse{InferenceExplanation: wantEx}) {
		t.Fatalf("explanation\n%v\nwant\n%v", resp.InferenceExplanation, wantEx)
	}
	for _, x := range resp.InferenceExplanation {
		if len(x.Features) != decide.ExplainTop {
			t.Errorf("%s: %d features, want the top %d", x.Id, len(x.Features), decide.ExplainTop)
		}
	}
	// The model was trained to prefer EntertainmentArticle: it comes
	// first, and its largest part raises its reward.
	if resp.RewardActionId != "EntertainmentArticle" || wantEx[0].Id != "EntertainmentArticle" || wantEx[0].Features[0].Score <= 0 {
		t.Errorf("answer %s, explanation %v", resp.RewardActionId, wantEx)
	}
	restRankAs(t, e, body, resp, explained...)

	// Off again, through gRPC: the answers are as before it was on.
	setExplain(t, e, false, false)
	resp = rank()
	if resp.InferenceExplanation != nil {
		t.Fatalf("off again: %v", resp.InferenceExplanation)
	}
	restRankAs(t, e, body, resp, plain...)
}

// TestLocalExplainsAsRemote: with the setting on, local inference
// answers as the service's Rank does, explanation included, in each
// learning mode and before the first model.
func TestLocalExplainsAsRemote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		mode  string
		model bool
	}{
		{"online", loop.Online, true},
		{"apprentice", loop.Apprentice, true},
		{"before the first model", loop.Online, false},
	}
	for k, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := loop.Default("test")
			c.Service.LearningMode = tt.mode
			c.Service.IsInferenceExplainabilityEnabled = true
			e := newLocalEnv(t, Config{Configs: loop.NewRegistry(c)})
			if tt.model {
				if err := e.srv.Load(trainedModel(t, bandit.DefaultPolicy, localRequests(200, 99), 3)); err != nil {
					t.Fatal(err)
				}
			}
			l := newLocal(t, e.conn, client.LocalConfig{})
			remote := client.New(e.conn)
			ctx := context.Background()
			for i, req := range localRequests(300, uint64(k)) {
				want, err := remote.Rank(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := l.Rank(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if len(want.GetInferenceExplanation()) != len(req.GetActions())-len(req.GetExcludedActions()) {
					t.Fatalf("request %d: %d actions explained", i, len(want.GetInferenceExplanation()))
				}
				if !proto.Equal(got, want) {
					t.Fatalf("request %d: local\n%v\nremote\n%v", i, got, want)
				}
			}
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// BenchmarkRankExplained is BenchmarkRankLiveConfig with the loop's
// isInferenceExplainabilityEnabled on: Rank also names every feature of
// the event and answers each action's top features (with -q ::, about
// 560 named features per action, 20 actions).
func BenchmarkRankExplained(b *testing.B) {
	benchmarkRankExplained(b, bandit.DefaultPolicy, true)
}

// BenchmarkRankExplainedNoInteractions is BenchmarkRankExplained, and
// the same with the setting off, under the default policy less its -q ::
// (about 31 features per action).
func BenchmarkRankExplainedNoInteractions(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			benchmarkRankExplained(b, "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr", on)
		})
	}
}

func benchmarkRankExplained(b *testing.B, policy string, on bool) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	srv, stop := benchServerPolicy(b, req, policy)
	defer stop()
	svc := srv.LoopConfig().Service
	svc.ExplorationPercentage = 0.1
	svc.IsInferenceExplainabilityEnabled = on
	c, err := srv.LoopConfig().Update(svc, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	srv.Configs().Set(c)
	srv.syncLoops() // what WatchConfig does on the change, without its goroutine
	if resp, err := srv.Rank(context.Background(), req); err != nil || (len(resp.GetInferenceExplanation()) == 20) != on {
		b.Fatalf("explanation of %d actions (%v), want 20: %v", len(resp.GetInferenceExplanation()), err, on)
	}
	b.SetBytes(int64(proto.Size(req)))
	loopCPU(b, func() error {
		_, err := srv.Rank(context.Background(), req)
		return err
	})
}
