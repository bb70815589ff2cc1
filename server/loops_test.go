package server

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// TestLoops checks that a server serves every loop of its registry: a
// call names its loop in metadata (or its key does), gets that loop's
// model and configuration, and logs records keyed by it; loops appear and
// go with the registry.
func TestLoops(t *testing.T) {
	e := newAdminEnv(t, false)
	shop := loop.Default("shop")
	shop.Version = 1
	shop.Service.ExplorationPercentage = 0.5
	e.reg.Set(shop)
	e.srv.syncLoops()
	if got := e.srv.Loops(); !slices.Equal(got, []string{"shop", "test"}) {
		t.Fatalf("Loops() = %v", got)
	}
	// A trained model for shop only: the loops answer differently.
	req := &personalizerv1.RankRequest{EventId: proto.String("e1"), Actions: []*personalizerv1.Action{{Id: "a"}, {Id: "b"}, {Id: "c"}, {Id: "d"}}}
	mv := trainedVersion(t, req, "c", 3)
	mv.Info.Loop = "shop"
	if err := e.srv.Load(mv); err != nil {
		t.Fatal(err)
	}
	if e.srv.ModelVersion() != 0 || e.srv.LoopModelInfo("shop").GetVersion() != 3 {
		t.Fatalf("versions: test %d, shop %d", e.srv.ModelVersion(), e.srv.LoopModelInfo("shop").GetVersion())
	}

	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-personalizer-loop", "shop"))
	resp, err := e.srv.Rank(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := probabilities(resp), []float32{0.625, 0.125, 0.125, 0.125}; !slices.Equal(got, want) {
		t.Errorf("shop's Rank: %v, want %v (its model, its exploration)", got, want)
	}
	rec := loggedRecord(t, e.mem, 1)
	var ev eventsv1.RankEvent
	if err := proto.Unmarshal(rec.Value, &ev); err != nil {
		t.Fatal(err)
	}
	if string(rec.Key) != "shop/e1" || ev.GetLoop() != "shop" || ev.GetRules().GetConfigVersion() != 1 {
		t.Errorf("shop's record: key %q, loop %q, rules %v", rec.Key, ev.GetLoop(), ev.GetRules())
	}
	if _, err := e.srv.Reward(ctx, &personalizerv1.RewardRequest{EventId: "e1", Value: 1}); err != nil {
		t.Fatal(err)
	}
	if rec := loggedRecord(t, e.mem, 2); string(rec.Key) != "shop/e1" {
		t.Errorf("shop's reward keyed %q", rec.Key)
	}
	resp, err = e.srv.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := probabilities(resp); !slices.Equal(got, []float32{0.25, 0.25, 0.25, 0.25}) {
		t.Errorf("the server's own loop (no model): %v", got)
	}
	if rec := loggedRecord(t, e.mem, 3); string(rec.Key) != "test/e1" {
		t.Errorf("own loop's record keyed %q", rec.Key)
	}

	// A loop not served: NotFound; a version of it is refused.
	other := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-personalizer-loop", "nope"))
	if _, err := e.srv.Rank(other, req); status.Code(err) != codes.NotFound {
		t.Errorf("Rank for a loop not served: %v", err)
	}
	mv.Info.Loop = "nope"
	if err := e.srv.Load(mv); err == nil {
		t.Error("a version of a loop not served was loaded")
	}
	// Deleted from the registry: no longer served.
	e.reg.Delete("shop")
	e.srv.syncLoops()
	if e.srv.Serves("shop") || !e.srv.Serves("test") {
		t.Errorf("after deleting shop: serves %v", e.srv.Loops())
	}
}
