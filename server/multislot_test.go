package server

import (
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func newMultiSlotServer(t *testing.T) (personalizerv1.PersonalizerServiceClient, *eventlog.Mem, *Server) {
	t.Helper()
	pol, err := bandit.ParsePolicy(bandit.DefaultMultiSlotPolicy)
	if err != nil {
		t.Fatal(err)
	}
	return newTestServerWith(t, Config{Loop: "test", Policy: pol})
}

func validMultiSlot() *personalizerv1.MultiSlotRankRequest {
	acts := actions(4)
	return &personalizerv1.MultiSlotRankRequest{
		ContextFeatures: []*personalizerv1.Namespace{ns("User", str("tier", "gold"))},
		Actions:         acts,
		Slots: []*personalizerv1.Slot{
			{Id: "hero", BaselineAction: acts[0].Id, Features: []*personalizerv1.Namespace{ns("Slot", str("pos", "top"))}},
			{Id: "side", BaselineAction: acts[1].Id, ExcludedActions: []string{acts[2].Id}},
		},
		EventId: proto.String("ms-1"),
	}
}

// fetchRecords reads n records of the events topic.
func fetchRecords(t *testing.T, mem *eventlog.Mem, n int) []eventlog.Record {
	t.Helper()
	r := mem.Reader(eventlog.EventsTopic, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var recs []eventlog.Record
	for len(recs) < n {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// TestMultiSlotRank: every slot gets an action no earlier slot took and it
// does not exclude; the same event id repeats the answer; the rank record
// carries the request and each slot's decision, and MultiSlotReward one
// reward record per slot reward.
func TestMultiSlotRank(t *testing.T) {
	t.Parallel()
	client, mem, _ := newMultiSlotServer(t)
	ctx := context.Background()
	req := validMultiSlot()
	resp, err := client.MultiSlotRank(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	slots := resp.GetSlots()
	if len(slots) != 2 || slots[0].GetId() != "hero" || slots[1].GetId() != "side" || resp.GetEventId() != "ms-1" || resp.GetModelVersion() != "" {
		t.Fatalf("response %v", resp)
	}
	hero, side := slots[0], slots[1]
	if hero.GetRewardActionId() == side.GetRewardActionId() || side.GetRewardActionId() == req.Actions[2].Id {
		t.Fatalf("slots %v: an action twice or an excluded one", slots)
	}
	// Before the first model: hero from 4 actions, side from the 2 left.
	if len(hero.GetRanking()) != 4 || hero.GetRanking()[0].GetProbability() != 0.25 || hero.GetRanking()[0].GetId() != hero.GetRewardActionId() ||
		len(side.GetRanking()) != 2 || side.GetRanking()[0].GetProbability() != 0.5 {
		t.Fatalf("slot rankings %v", slots)
	}
	again, err := client.MultiSlotRank(ctx, req)
	if err != nil || !proto.Equal(resp, again) {
		t.Fatalf("same event id, different answer:\n%v\n%v (%v)", resp, again, err)
	}
	if _, err := client.MultiSlotReward(ctx, &personalizerv1.MultiSlotRewardRequest{EventId: "ms-1", Rewards: []*personalizerv1.SlotReward{
		{SlotId: "hero", Value: 1}, {SlotId: "side", Value: 0.5}}}); err != nil {
		t.Fatal(err)
	}
	recs := fetchRecords(t, mem, 4)
	var ev eventsv1.RankEvent
	if err := proto.Unmarshal(recs[0].Value, &ev); err != nil {
		t.Fatal(err)
	}
	var sent personalizerv1.MultiSlotRankRequest
	if err := proto.Unmarshal(ev.GetMultiSlotRequest(), &sent); err != nil || !proto.Equal(&sent, req) {
		t.Fatalf("record's request %v (%v)", &sent, err)
	}
	if string(recs[0].Key) != "test/ms-1" || ev.GetEventId() != "ms-1" || len(ev.GetSlots()) != 2 || len(ev.GetRanking()) != 0 || len(ev.GetRequest()) != 0 {
		t.Fatalf("rank record %v", &ev)
	}
	for k, sd := range ev.GetSlots() {
		if id := req.Actions[sd.GetRanking()[0]].Id; id != slots[k].GetRewardActionId() || sd.GetProbabilities()[0] != slots[k].GetRanking()[0].GetProbability() {
			t.Errorf("slot %d logged %v, answered %v", k, sd, slots[k])
		}
	}
	for i, want := range []struct {
		slot  string
		value float32
	}{{"hero", 1}, {"side", 0.5}} {
		var rw eventsv1.RewardEvent
		if err := proto.Unmarshal(recs[2+i].Value, &rw); err != nil || recs[2+i].Type() != eventlog.TypeReward ||
			rw.GetSlotId() != want.slot || rw.GetValue() != want.value || rw.GetEventId() != "ms-1" || rw.GetId() == 0 {
			t.Errorf("reward record %d: %v (%v)", i, &rw, err)
		}
	}

	// The stream answers as the unary call.
	stream, err := client.MultiSlotRankStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&personalizerv1.MultiSlotRankStreamRequest{Request: req}); err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil || !proto.Equal(got.GetResponse(), resp) {
		t.Fatalf("stream answered %v (%v), want %v", got, err, resp)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
}

// TestProblemType: a single-slot loop refuses multi-slot calls and a
// multi-slot loop single-slot ones, with FailedPrecondition and
// Personalizer's error code in the status.
func TestProblemType(t *testing.T) {
	t.Parallel()
	single, _, _ := newTestServer(t)
	multi, _, _ := newMultiSlotServer(t)
	ctx := context.Background()
	reason := func(err error) string {
		st := status.Convert(err)
		if st.Code() != codes.FailedPrecondition {
			return "code " + st.Code().String()
		}
		for _, d := range st.Details() {
			if ei, ok := d.(*errdetails.ErrorInfo); ok {
				return ei.GetReason()
			}
		}
		return "no reason"
	}
	_, err := single.MultiSlotRank(ctx, validMultiSlot())
	if got := reason(err); got != "InvalidMultiSlotApiAccess" {
		t.Errorf("MultiSlotRank on a single-slot loop: %s (%v)", got, err)
	}
	_, err = single.MultiSlotReward(ctx, &personalizerv1.MultiSlotRewardRequest{EventId: "e", Rewards: []*personalizerv1.SlotReward{{SlotId: "s", Value: 1}}})
	if got := reason(err); got != "InvalidMultiSlotApiAccess" {
		t.Errorf("MultiSlotReward on a single-slot loop: %s (%v)", got, err)
	}
	_, err = multi.Rank(ctx, validRank())
	if got := reason(err); got != "InvalidRankRequest" {
		t.Errorf("Rank on a multi-slot loop: %s (%v)", got, err)
	}
	_, err = multi.Reward(ctx, &personalizerv1.RewardRequest{EventId: "e", Value: 1})
	if got := reason(err); got != "InvalidRankRequest" {
		t.Errorf("Reward on a multi-slot loop: %s (%v)", got, err)
	}
	if _, err := multi.Activate(ctx, &personalizerv1.ActivateRequest{EventId: "e"}); err != nil {
		t.Errorf("Activate on a multi-slot loop: %v", err)
	}
}

func TestMultiSlotRejectsBadInput(t *testing.T) {
	t.Parallel()
	client, _, _ := newMultiSlotServer(t)
	ctx := context.Background()
	bad := validMultiSlot()
	bad.Slots[1].BaselineAction = "nope"
	_, err := client.MultiSlotRank(ctx, bad)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument {
		t.Errorf("unknown baseline: %v", err)
	}
	for _, r := range []*personalizerv1.MultiSlotRewardRequest{
		{EventId: "e"},
		{EventId: "", Rewards: []*personalizerv1.SlotReward{{SlotId: "s", Value: 1}}},
		{EventId: "e", Rewards: []*personalizerv1.SlotReward{{SlotId: "", Value: 1}}},
		{EventId: "e", Rewards: []*personalizerv1.SlotReward{{SlotId: "s", Value: 1.5}}},
	} {
		if _, err := client.MultiSlotReward(ctx, r); status.Code(err) != codes.InvalidArgument {
			t.Errorf("MultiSlotReward(%v): %v", r, err)
		}
	}
}

// TestMultiSlotLoop: a loop made with a --ccb_explore_adf policy answers
// multi-slot calls, keeps its problem type through policy changes and
// resets, and refuses auto-optimization and offline evaluation.
func TestMultiSlotLoop(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, false)
	ctx := context.Background()
	ccb := &personalizerv1.Policy{Name: "carousel", Arguments: bandit.DefaultMultiSlotPolicy}
	auto := &personalizerv1.ServiceConfiguration{IsAutoOptimizationEnabled: true}
	if _, err := e.admin.CreateLoop(ctx, &personalizerv1.CreateLoopRequest{Loop: "ms", Policy: ccb, Service: auto}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("create a multi-slot loop with auto-optimization: %v", err)
	}
	if _, err := e.admin.CreateLoop(ctx, &personalizerv1.CreateLoopRequest{Loop: "ms", Policy: ccb}); err != nil {
		t.Fatal(err)
	}
	ms := metadata.NewIncomingContext(ctx, metadata.Pairs("x-personalizer-loop", "ms"))
	if _, err := e.srv.MultiSlotRank(ms, validMultiSlot()); err != nil {
		t.Errorf("MultiSlotRank on the multi-slot loop: %v", err)
	}
	if _, err := e.srv.MultiSlotRank(ctx, validMultiSlot()); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("MultiSlotRank on the single-slot loop: %v", err)
	}
	if _, err := e.admin.UpdatePolicy(ctx, &personalizerv1.UpdatePolicyRequest{Loop: "ms", Policy: &personalizerv1.Policy{Name: "cb", Arguments: bandit.DefaultPolicy}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a single-slot policy for the multi-slot loop: %v", err)
	}
	reset, err := e.admin.ResetPolicy(ctx, &personalizerv1.ResetPolicyRequest{Loop: "ms"})
	if err != nil || reset.GetPolicy().GetArguments() != bandit.DefaultMultiSlotPolicy {
		t.Errorf("reset the multi-slot loop's policy: %v, %v", reset, err)
	}
	svc, err := e.admin.GetServiceConfiguration(ctx, &personalizerv1.GetServiceConfigurationRequest{Loop: "ms"})
	if err != nil {
		t.Fatal(err)
	}
	svc.GetConfiguration().IsAutoOptimizationEnabled = true
	if _, err := e.admin.UpdateServiceConfiguration(ctx, &personalizerv1.UpdateServiceConfigurationRequest{Loop: "ms", Configuration: svc.GetConfiguration()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("auto-optimization for the multi-slot loop: %v", err)
	}
	if _, err := e.admin.CreateEvaluation(ctx, &personalizerv1.CreateEvaluationRequest{Loop: "ms", Evaluation: &personalizerv1.EvaluationContract{
		Name: "e", StartTime: timestamppb.New(testNow.Add(-time.Hour)), EndTime: timestamppb.New(testNow)}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("an evaluation of the multi-slot loop: %v", err)
	}
}
