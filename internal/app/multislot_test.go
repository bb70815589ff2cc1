package app

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// TestCarouselLearns runs the whole loop in one process for a multi-slot
// loop: simulated users get a carousel of 3 slots (MultiSlotRank), every
// slot is rewarded (MultiSlotReward), every event is joined as a CCB
// DSJson line and learned exactly once, and the reward per slot rises well
// above the random policy's.
func TestCarouselLearns(t *testing.T) {
	// A bound for failures, not a wait.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := testConfig(t, t.TempDir(), "--policy", "--ccb_explore_adf --epsilon 0.2 --power_t 0 -l 0.01 --cb_type mtr -q ::")
	d, client := startTestDev(t, cfg)
	defer d.close()

	// One event ranked before the simulation and never rewarded: its
	// slots get the default reward. Once it is learned, its audit says
	// that multi-slot decisions are not audited.
	first := &personalizerv1.MultiSlotRankRequest{EventId: proto.String("first"),
		Actions: []*personalizerv1.Action{{Id: "a", Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{{Name: "x", Value: &personalizerv1.Feature_NumberValue{NumberValue: 1}}}}}}, {Id: "b"}},
		Slots:   []*personalizerv1.Slot{{Id: "top", BaselineAction: "a"}, {Id: "bottom", BaselineAction: "b"}}}
	if _, err := client.MultiSlotRank(ctx, first); err != nil {
		t.Fatal(err)
	}
	const events = 8000 + 1
	res, err := sim.Run(ctx, client, sim.Config{Events: events - 1, Seed: 11, Window: 1000, Concurrency: 4, Rate: 2000, Slots: 3}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("simulation: %+v", res)
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= events }); err != nil {
		t.Fatalf("waiting for %d learned events: %v (stats %+v)", events, err, d.learner.Stats())
	}
	if st := d.learner.Stats(); st.Learned != events || st.Malformed != 0 || st.NotLearnable != 0 {
		t.Errorf("learner stats %+v, want exactly %d learned", st, events)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		t.Fatalf("waiting for %d joined events: %v (counters %+v)", events, err, d.joiner.Counters())
	}
	if c := d.joiner.Counters(); c.Emitted != events || c.Learnable != events || c.Undecodable != 0 || c.DefaultRewards != 1 {
		t.Errorf("joiner counters %+v, want %d emitted, one without rewards", c, events)
	}
	if _, err := client.GetDecision(ctx, &personalizerv1.GetDecisionRequest{EventId: "first"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("audit of a multi-slot event: %v, want FailedPrecondition", err)
	}
	if res.RewardLastWindow < res.RandomPolicyReward+0.04 || res.RewardLastWindow < res.RewardFirstWindow+0.04 {
		t.Errorf("did not learn: reward per slot first window %.3f, last window %.3f, random policy %.3f, best policy %.3f",
			res.RewardFirstWindow, res.RewardLastWindow, res.RandomPolicyReward, res.BestPolicyReward)
	}
}
