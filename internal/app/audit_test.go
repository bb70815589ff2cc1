package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// auditRequest is a random Rank request of event id: a user context, 2 to
// 5 actions with features, sometimes one excluded.
func auditRequest(rng *rand.Rand, id string) *personalizerv1.RankRequest {
	tiers := []string{"gold", "silver", "bronze"}
	req := &personalizerv1.RankRequest{EventId: &id, ContextFeatures: []*personalizerv1.Namespace{{Name: "User", Features: []*personalizerv1.Feature{
		{Name: "tier", Value: &personalizerv1.Feature_StringValue{StringValue: tiers[rng.IntN(len(tiers))]}},
		{Name: "age", Value: &personalizerv1.Feature_NumberValue{NumberValue: float64(rng.IntN(100)) / 100}},
	}}}}
	for a := range 2 + rng.IntN(4) {
		req.Actions = append(req.Actions, &personalizerv1.Action{Id: fmt.Sprintf("a%d", a), Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{
			{Name: "kind", Value: &personalizerv1.Feature_StringValue{StringValue: fmt.Sprintf("k%d", a%3)}},
		}}}})
	}
	if len(req.Actions) > 2 && rng.IntN(4) == 0 {
		req.ExcludedActions = []string{"a1"}
	}
	return req
}

// auditReward is the reward the simulated user gives: gold likes a0,
// the others a2.
func auditReward(req *personalizerv1.RankRequest, action string) float32 {
	want := "a2"
	if req.GetContextFeatures()[0].GetFeatures()[0].GetStringValue() == "gold" {
		want = "a0"
	}
	if action == want {
		return 1
	}
	return 0
}

// waitRecord reads personalizer.events until a record of type typ keyed
// key is stored: the server's write of it is acknowledged.
func waitRecord(ctx context.Context, t *testing.T, d *dev, key, typ string) {
	t.Helper()
	r, err := kafkalog.NewTopicReader(ctx, d.broker.Addrs(), eventlog.EventsTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatalf("waiting for the %s record of %s: %v", typ, key, err)
		}
		if string(rec.Key) == key && rec.Type() == typ {
			return
		}
	}
}

// TestDecisionAudit ranks 1,200 events over several model versions, and
// audits 1,000 of them at random over gRPC (every tenth over REST too):
// the ranking, probabilities and model version are exactly what Rank
// returned, the scores are those of the model version that decided, and
// the join outcome is the joiner's (rewarded, default reward, late,
// pending). Then it rolls back to an old version: Rank answers as it did
// under that version and learning goes on from it. Unknown events and
// versions are 404.
func TestDecisionAudit(t *testing.T) {
	// A bound for failures, not a wait: with -race on a 2-core machine
	// that other processes keep busy the batches alone took 4 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cfg := testConfig(t, t.TempDir(), "--model-history", "1000")
	d, client := startTestDev(t, cfg)
	defer d.close()
	conn, err := grpc.NewClient(d.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := personalizerv1.NewAdminServiceClient(conn)
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0"

	type ranked struct {
		req    *personalizerv1.RankRequest
		resp   *personalizerv1.RankResponse
		reward *float32 // nil: not rewarded
	}
	rng := rand.New(rand.NewPCG(12, 5))
	var events []ranked
	const batches, perBatch = 6, 200
	for b := range batches {
		for i := range perBatch {
			req := auditRequest(rng, fmt.Sprintf("e%d-%d", b, i))
			resp, err := client.Rank(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			ev := ranked{req: req, resp: resp}
			if i%3 != 0 { // every third gets the default reward
				v := auditReward(req, resp.GetRewardActionId())
				ev.reward = &v
				if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: req.GetEventId(), Value: v}); err != nil {
					t.Fatal(err)
				}
			}
			events = append(events, ev)
		}
		// The next batch is ranked with a model that has learned this one.
		n := int64(len(events))
		if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= n }); err != nil {
			t.Fatal(err)
		}
		var v uint64
		if err := d.learner.Wait(ctx, func(s learner.Stats) bool {
			info := d.store.Latest().GetInfo()
			v = info.GetVersion()
			return int64(info.GetExamples()) >= n
		}); err != nil {
			t.Fatal(err)
		}
		if err := d.srv.WaitModel(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	versions := map[string]int{}
	for _, ev := range events {
		versions[ev.resp.GetModelVersion()]++
	}
	if len(versions) < batches { // the first batch has no model, each other its own version at least
		t.Fatalf("events ranked under %d model versions (%v), want at least %d", len(versions), versions, batches)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= int64(len(events)) }); err != nil {
		t.Fatal(err)
	}

	// One joined event gets a late reward.
	late := events[3] // i%3 == 0: the default reward
	if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: late.req.GetEventId(), Value: 0.5}); err != nil {
		t.Fatal(err)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Late >= 1 }); err != nil {
		t.Fatal(err)
	}

	models := map[string]*decide.Model{}
	model := func(version string) *decide.Model {
		if m, ok := models[version]; ok {
			return m
		}
		v, _ := strconv.ParseUint(version, 10, 64)
		mv, err := d.store.Get(v)
		if err != nil {
			t.Fatalf("model version %s: %v", version, err)
		}
		m, err := decide.LoadModel(mv.GetData(), mv.GetInfo().GetSha256(), v)
		if err != nil {
			t.Fatal(err)
		}
		models[version] = m
		return m
	}
	checked, explored, breakdowns := 0, 0, 0
	picked := rng.Perm(len(events))[:1000]
	decs := make([]*personalizerv1.Decision, len(picked))
	var g errgroup.Group
	g.SetLimit(4) // audits wait on the broker more than they compute
	for n, k := range picked {
		g.Go(func() error {
			req := &personalizerv1.GetDecisionRequest{EventId: events[k].req.GetEventId()}
			if n%2 == 1 { // half of them searched from a time hint, half backwards from the end
				req.At = timestamppb.New(time.Now().Add(-time.Hour))
			}
			resp, err := client.GetDecision(ctx, req)
			if err != nil {
				return fmt.Errorf("audit of %s: %w", req.GetEventId(), err)
			}
			decs[n] = resp.GetDecision()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for n, k := range picked {
		ev, dec := events[k], decs[n]
		if err := sameRanking(dec.GetRanking(), ev.resp.GetRanking()); err != nil || dec.GetModelVersion() != ev.resp.GetModelVersion() ||
			dec.GetRewardActionId() != ev.resp.GetRewardActionId() || dec.GetChosenActionId() != ev.resp.GetRewardActionId() {
			t.Fatalf("audit of %s: ranking %v (%v), version %q, reward action %q, chosen %q; Rank returned %v, version %q, reward action %q",
				ev.req.GetEventId(), dec.GetRanking(), err, dec.GetModelVersion(), dec.GetRewardActionId(), dec.GetChosenActionId(),
				ev.resp.GetRanking(), ev.resp.GetModelVersion(), ev.resp.GetRewardActionId())
		}
		if !sameRequest(dec.GetRequest(), ev.req) {
			t.Fatalf("audit of %s: request %v, want %v", ev.req.GetEventId(), dec.GetRequest(), ev.req)
		}
		o := dec.GetOutcome()
		want := &personalizerv1.DecisionOutcome{Status: "joined", Learnable: true, DefaultReward: ev.reward == nil}
		if ev.reward != nil {
			want.Rewards, want.Reward, want.OriginalReward, want.Cost = []float32{*ev.reward}, *ev.reward, *ev.reward, -*ev.reward
		}
		if k == 3 {
			v := float32(0.5)
			want.Unjoined = []*personalizerv1.UnjoinedOutcome{{Reason: "late", Value: &v}}
		}
		if o.GetStatus() != want.Status || o.GetLearnable() != want.Learnable || o.GetDefaultReward() != want.DefaultReward ||
			fmt.Sprint(o.GetRewards()) != fmt.Sprint(want.Rewards) || o.GetReward() != want.Reward || o.GetOriginalReward() != want.OriginalReward ||
			o.GetCost() != want.Cost || len(o.GetUnjoined()) != len(want.Unjoined) || o.GetActivated() {
			t.Fatalf("audit of %s: outcome %v, want %v", ev.req.GetEventId(), o, want)
		}
		for i, u := range want.Unjoined {
			if got := o.GetUnjoined()[i]; got.GetReason() != u.GetReason() || got.GetValue() != u.GetValue() {
				t.Fatalf("audit of %s: unjoined %v, want %v", ev.req.GetEventId(), o.GetUnjoined(), want.Unjoined)
			}
		}
		checked++
		if dec.GetModelVersion() == "" {
			if dec.GetBreakdownUnavailable() == "" || len(dec.GetScores()) != 0 || dec.GetExploratory() {
				t.Fatalf("audit of %s before the first model: %v", ev.req.GetEventId(), dec)
			}
		} else {
			// The scores are the historic model's, recomputed here.
			m := model(dec.GetModelVersion())
			excluded, _, _ := features.Excluded(nil, ev.req.GetActions(), ev.req.GetExcludedActions())
			eligible := features.Eligible(nil, ev.req.GetActions(), excluded)
			var e bandit.Event
			features.Build(&e, ev.req.GetContextFeatures(), eligible)
			var p bandit.Prediction
			m.Model.PredictEpsilon(&e, &p, 0)
			scores := p.Scores(nil)
			index := map[string]int{}
			for i, a := range eligible {
				index[a.GetId()] = i
			}
			if len(dec.GetScores()) != len(eligible) || len(dec.GetExplanations()) != len(eligible) || dec.GetBreakdownUnavailable() != "" {
				t.Fatalf("audit of %s: %d scores, %d explanations for %d eligible actions (%q)", ev.req.GetEventId(), len(dec.GetScores()), len(dec.GetExplanations()), len(eligible), dec.GetBreakdownUnavailable())
			}
			for i, s := range dec.GetScores() {
				if s.GetId() != dec.GetRanking()[i].GetId() || s.GetScore() != -scores[index[s.GetId()]] || dec.GetExplanations()[i].GetId() != s.GetId() {
					t.Fatalf("audit of %s: scores %v, explanations %v; the model's costs %v, ranking %v", ev.req.GetEventId(), dec.GetScores(), dec.GetExplanations(), scores, dec.GetRanking())
				}
			}
			best := eligible[p.PMF()[0].Action].GetId()
			if dec.GetBestActionId() != best || dec.GetExploratory() != (scores[index[ev.resp.GetRewardActionId()]] > scores[index[best]]) {
				t.Fatalf("audit of %s: best %q, exploratory %v; want best %q, chose %q", ev.req.GetEventId(), dec.GetBestActionId(), dec.GetExploratory(), best, ev.resp.GetRewardActionId())
			}
			if dec.GetExploratory() {
				explored++
			}
			breakdowns++
		}
		if n%10 == 0 { // the same over REST
			code, body := restCall(t, "GET", base+"/events/"+ev.req.GetEventId(), nil)
			var rd struct {
				Ranking []struct {
					ID          string
					Probability float32
				}
				ModelVersion   string
				RewardActionID string `json:"rewardActionId"`
				Scores         []struct {
					ID    string
					Score float32
				}
				Explanations []struct {
					ID       string
					Features []struct {
						Name  string
						Score float32
					}
				}
				Outcome struct{ Status string }
			}
			if code != http.StatusOK || json.Unmarshal(body, &rd) != nil {
				t.Fatalf("GET /events/%s: %d %s", ev.req.GetEventId(), code, body)
			}
			if len(rd.Ranking) != len(ev.resp.GetRanking()) || rd.ModelVersion != ev.resp.GetModelVersion() || rd.RewardActionID != ev.resp.GetRewardActionId() ||
				rd.Outcome.Status != "joined" || len(rd.Scores) != len(dec.GetScores()) || len(rd.Explanations) != len(dec.GetExplanations()) {
				t.Fatalf("GET /events/%s: %s; Rank returned %v", ev.req.GetEventId(), body, ev.resp)
			}
			for i, a := range rd.Ranking {
				if a.ID != ev.resp.GetRanking()[i].GetId() || a.Probability != ev.resp.GetRanking()[i].GetProbability() {
					t.Fatalf("GET /events/%s: ranking %s; Rank returned %v", ev.req.GetEventId(), body, ev.resp.GetRanking())
				}
			}
			for i, s := range rd.Scores {
				if s.ID != dec.GetScores()[i].GetId() || s.Score != dec.GetScores()[i].GetScore() {
					t.Fatalf("GET /events/%s: scores %s; gRPC %v", ev.req.GetEventId(), body, dec.GetScores())
				}
			}
		}
	}
	t.Logf("%d audits: %d with a breakdown, %d exploratory; versions %v", checked, breakdowns, explored, versions)
	if explored == 0 || explored == breakdowns {
		t.Errorf("%d of %d decisions explored: want some", explored, breakdowns)
	}

	// 404s: an unknown event, a version the learner does not keep.
	if _, err := client.GetDecision(ctx, &personalizerv1.GetDecisionRequest{EventId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("audit of an unknown event: %v, want NotFound", err)
	}
	if code, body := restCall(t, "GET", base+"/events/nope", nil); code != http.StatusNotFound || !bytes.Contains(body, []byte(`"code":"ResourceNotFound"`)) {
		t.Errorf("GET /events/nope: %d %s, want 404 ResourceNotFound", code, body)
	}
	if code, body := restCall(t, "POST", base+"/model/rollback", []byte(`{"version": "999999"}`)); code != http.StatusNotFound ||
		!bytes.Contains(body, []byte(`model version 999999 is not kept; the learner keeps the last 1000 versions`)) {
		t.Errorf("rollback to an unknown version: %d %s, want 404", code, body)
	}
	if _, err := admin.RollbackModel(ctx, &personalizerv1.RollbackModelRequest{Version: 999999}); status.Code(err) != codes.NotFound {
		t.Errorf("gRPC rollback to an unknown version: %v, want NotFound", err)
	}
	if code, body := restCall(t, "POST", base+"/model/rollback", []byte(`{"version": "x"}`)); code != http.StatusBadRequest {
		t.Errorf("rollback to version x: %d %s, want 400", code, body)
	}

	// Roll back to the version batch 2 was ranked with: Rank answers as
	// it did then (the same event ids sample the same), and learning
	// goes on from that version's model.
	old := events[2*perBatch].resp.GetModelVersion()
	oldV, _ := strconv.ParseUint(old, 10, 64)
	oldModel, err := d.store.Get(oldV)
	if err != nil {
		t.Fatal(err)
	}
	latest := d.store.Latest().GetInfo().GetVersion()
	code, body := restCall(t, "POST", base+"/model/rollback", []byte(`{"version": "`+old+`"}`))
	var rb struct{ Version, RollbackOf string }
	if code != http.StatusOK || json.Unmarshal(body, &rb) != nil || rb.RollbackOf != old || rb.Version != strconv.FormatUint(latest+1, 10) {
		t.Fatalf("rollback to %s: %d %s, want version %d", old, code, body, latest+1)
	}
	cur := d.store.Latest()
	if !bytes.Equal(cur.GetData(), oldModel.GetData()) || cur.GetInfo().GetRollbackOf() != oldV || cur.GetInfo().GetExamples() != oldModel.GetInfo().GetExamples() ||
		d.srv.ModelVersion() != latest+1 {
		t.Fatalf("after the rollback: version %v served %d; want the model of %v", cur.GetInfo(), d.srv.ModelVersion(), oldModel.GetInfo())
	}
	same := 0
	for _, ev := range events[2*perBatch : 3*perBatch] {
		if ev.resp.GetModelVersion() != old {
			continue
		}
		resp, err := client.Rank(ctx, ev.req)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameRanking(resp.GetRanking(), ev.resp.GetRanking()); err != nil || resp.GetModelVersion() != rb.Version {
			t.Fatalf("rank of %s after the rollback: %v (%v), version %s; under version %s: %v", ev.req.GetEventId(), resp.GetRanking(), err, resp.GetModelVersion(), old, ev.resp.GetRanking())
		}
		same++
	}
	if same == 0 {
		t.Fatal("no event of batch 2 was ranked with its first version")
	}
	props, err := admin.GetModelProperties(ctx, &personalizerv1.GetModelPropertiesRequest{})
	if err != nil || props.GetProperties().GetRollbackOf() != oldV || props.GetProperties().GetVersion() != latest+1 {
		t.Fatalf("model properties after the rollback: %v, %v", props, err)
	}
	learned := d.learner.Stats().Learned
	const more = 100
	for i := range more {
		req := auditRequest(rng, fmt.Sprintf("after-%d", i))
		resp, err := client.Rank(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: req.GetEventId(), Value: auditReward(req, resp.GetRewardActionId())}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= learned+more }); err != nil {
		t.Fatal(err)
	}
	var next *learner.Stats
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool {
		next = &s
		return d.store.Latest().GetInfo().GetExamples() >= oldModel.GetInfo().GetExamples()+more
	}); err != nil {
		t.Fatal(err)
	}
	if info := d.store.Latest().GetInfo(); info.GetExamples() != oldModel.GetInfo().GetExamples()+more || info.GetVersion() <= latest+1 ||
		info.GetRollbackOf() != 0 || next.Learned != learned+more || next.Rollbacks != 1 {
		t.Fatalf("after learning %d more: %v, stats %+v; want %d examples (version %s's %d and %d)", more, info, next,
			oldModel.GetInfo().GetExamples()+more, old, oldModel.GetInfo().GetExamples(), more)
	}

	// A pending event: its window (an hour, from a configuration change)
	// is open, and the reward received so far shows.
	conf, err := admin.GetServiceConfiguration(ctx, &personalizerv1.GetServiceConfigurationRequest{})
	if err != nil {
		t.Fatal(err)
	}
	conf.GetConfiguration().RewardWaitTime = durationpb.New(time.Hour)
	if _, err := admin.UpdateServiceConfiguration(ctx, &personalizerv1.UpdateServiceConfigurationRequest{Configuration: conf.GetConfiguration()}); err != nil {
		t.Fatal(err)
	}
	pending := auditRequest(rng, "pending")
	presp, err := client.Rank(ctx, pending)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: "pending", Value: 0.25}); err != nil {
		t.Fatal(err)
	}
	waitRecord(ctx, t, d, cfg.Loop+"/pending", eventlog.TypeReward)
	resp, err := client.GetDecision(ctx, &personalizerv1.GetDecisionRequest{EventId: "pending"})
	if err != nil {
		t.Fatal(err)
	}
	dec := resp.GetDecision()
	if o := dec.GetOutcome(); o.GetStatus() != "pending" || fmt.Sprint(o.GetRewards()) != "[0.25]" || o.GetLearnable() || o.GetDefaultReward() ||
		sameRanking(dec.GetRanking(), presp.GetRanking()) != nil || dec.GetModelVersion() != presp.GetModelVersion() {
		t.Fatalf("audit of the pending event: %v; Rank returned %v", dec, presp)
	}
}

// sameRanking reports how got differs from want, nil if it does not.
func sameRanking(got, want []*personalizerv1.RankedAction) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d actions, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].GetId() != want[i].GetId() || got[i].GetProbability() != want[i].GetProbability() {
			return fmt.Errorf("ranking[%d] is %s %v, want %s %v", i, got[i].GetId(), got[i].GetProbability(), want[i].GetId(), want[i].GetProbability())
		}
	}
	return nil
}

// sameRequest reports whether the audit's request is the one ranked.
func sameRequest(got, want *personalizerv1.RankRequest) bool {
	a, _ := got.MarshalVT()
	b, _ := want.MarshalVT()
	return bytes.Equal(a, b)
}

// TestDecisionAuditEvicted audits an event whose model version the
// learner no longer keeps (--model-history 2): everything but the
// breakdown is there, and the audit says why the breakdown is not.
func TestDecisionAuditEvicted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := testConfig(t, t.TempDir(), "--model-history", "2")
	d, client := startTestDev(t, cfg)
	defer d.close()
	rng := rand.New(rand.NewPCG(3, 4))
	var first []*personalizerv1.RankResponse // of the second batch, ranked under the first version
	for b := range 4 {
		for i := range 20 {
			req := auditRequest(rng, fmt.Sprintf("e%d-%d", b, i))
			resp, err := client.Rank(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if b == 1 {
				first = append(first, resp)
			}
			if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: req.GetEventId(), Value: auditReward(req, resp.GetRewardActionId())}); err != nil {
				t.Fatal(err)
			}
		}
		n := int64(20 * (b + 1))
		var v uint64
		if err := d.learner.Wait(ctx, func(s learner.Stats) bool {
			info := d.store.Latest().GetInfo()
			v = info.GetVersion()
			return s.Learned >= n && int64(info.GetExamples()) >= n
		}); err != nil {
			t.Fatal(err)
		}
		if err := d.srv.WaitModel(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := client.GetDecision(ctx, &personalizerv1.GetDecisionRequest{EventId: "e1-0"})
	if err != nil {
		t.Fatal(err)
	}
	dec := resp.GetDecision()
	kept := d.learner.Stats().Version
	want := fmt.Sprintf("model version %s is not kept; the learner keeps the last 2 versions, now %d to %d", first[0].GetModelVersion(), kept-1, kept)
	if sameRanking(dec.GetRanking(), first[0].GetRanking()) != nil || dec.GetModelVersion() != first[0].GetModelVersion() || dec.GetModelVersion() == "" ||
		dec.GetOutcome().GetStatus() != "joined" || len(dec.GetScores()) != 0 || len(dec.GetExplanations()) != 0 || dec.GetBreakdownUnavailable() != want {
		t.Fatalf("audit of an event of an evicted version: %v; want Rank's %v and %q", dec, first[0], want)
	}
}
