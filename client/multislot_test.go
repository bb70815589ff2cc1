package client

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// serve runs a real server of policy on a loopback port and returns a
// client of it and the server's event log.
func serve(t *testing.T, policy string) (*Client, *eventlog.Mem) {
	t.Helper()
	pol, err := bandit.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	pub := server.NewPublisher(mem, server.BufferLimits{Records: 1000, Bytes: 1 << 20}, 0, log)
	ctx, cancel := context.WithCancel(context.Background())
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(ctx, time.Second) }()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	server.Register(gs, server.New(server.Config{Loop: "test", Policy: pol}, pub, log, time.Now))
	go gs.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); gs.Stop(); cancel(); <-pubDone })
	return New(cc), mem
}

func multiSlotRequest() *personalizerv1.MultiSlotRankRequest {
	var actions []*personalizerv1.Action
	for _, id := range []string{"news", "sports", "music", "film", "radio"} {
		actions = append(actions, &personalizerv1.Action{Id: id, Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{
			{Name: "type", Value: &personalizerv1.Feature_StringValue{StringValue: id}}}}}})
	}
	return &personalizerv1.MultiSlotRankRequest{
		ContextFeatures: []*personalizerv1.Namespace{{Name: "user", Features: []*personalizerv1.Feature{
			{Name: "tier", Value: &personalizerv1.Feature_StringValue{StringValue: "gold"}}}}},
		Actions: actions,
		Slots: []*personalizerv1.Slot{
			{Id: "hero", BaselineAction: "news", ExcludedActions: []string{"radio"}},
			{Id: "side", BaselineAction: "sports", ExcludedActions: []string{"news", "music"}},
			{Id: "footer", BaselineAction: "film"},
		},
	}
}

// TestMultiSlot: against a real multi-slot server, MultiSlotRank gives
// each slot an action no earlier slot took and the slot does not exclude,
// under a new event id that repeats the answer; MultiSlotReward is
// logged; a single-slot server refuses both with FailedPrecondition.
func TestMultiSlot(t *testing.T) {
	t.Parallel()
	c, mem := serve(t, bandit.DefaultMultiSlotPolicy)
	ctx := context.Background()
	req := multiSlotRequest()
	for range 20 {
		resp, err := c.MultiSlotRank(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if req.EventId != nil || resp.GetEventId() == "" {
			t.Fatalf("event id %q; the caller's request got %v", resp.GetEventId(), req.EventId)
		}
		taken := map[string]bool{}
		for k, s := range resp.GetSlots() {
			a := s.GetRewardActionId()
			if s.GetId() != req.Slots[k].Id || a == "" || taken[a] {
				t.Fatalf("slot %d: %v (taken %v)", k, s, taken)
			}
			for _, x := range req.Slots[k].ExcludedActions {
				if a == x {
					t.Fatalf("slot %q got its excluded action %q", s.GetId(), a)
				}
			}
			taken[a] = true
		}
		if len(taken) != 3 {
			t.Fatalf("%d slots answered: %v", len(taken), resp.GetSlots())
		}
		again := proto.Clone(req).(*personalizerv1.MultiSlotRankRequest)
		again.EventId = proto.String(resp.GetEventId())
		if resp2, err := c.MultiSlotRank(ctx, again); err != nil || !proto.Equal(resp, resp2) {
			t.Fatalf("same event id, different answer:\n%v\n%v (%v)", resp, resp2, err)
		}
	}
	if err := c.MultiSlotReward(ctx, "e1", &personalizerv1.SlotReward{SlotId: "hero", Value: 1}, &personalizerv1.SlotReward{SlotId: "side", Value: 0.5}); err != nil {
		t.Fatal(err)
	}
	if err := c.MultiSlotReward(ctx, "e1", &personalizerv1.SlotReward{SlotId: "hero", Value: 2}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a reward of 2: %v", err)
	}
	if err := c.Activate(ctx, "e1"); err != nil {
		t.Fatal(err)
	}
	r := mem.Reader(eventlog.EventsTopic, nil)
	fetch, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	types := map[string]int{}
	for range 40 + 3 {
		rec, err := r.Fetch(fetch)
		if err != nil {
			t.Fatal(err)
		}
		types[rec.Type()]++
	}
	if types[eventlog.TypeRank] != 40 || types[eventlog.TypeReward] != 2 || types[eventlog.TypeActivate] != 1 {
		t.Errorf("records by type %v", types)
	}

	single, _ := serve(t, bandit.DefaultPolicy)
	if _, err := single.MultiSlotRank(ctx, req); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("MultiSlotRank on a single-slot loop: %v", err)
	}
	if err := single.MultiSlotReward(ctx, "e1", &personalizerv1.SlotReward{SlotId: "hero", Value: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("MultiSlotReward on a single-slot loop: %v", err)
	}
}
