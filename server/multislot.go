package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// A loop's problem type is its policy's: multi-slot (VW's conditional
// contextual bandit, --ccb_explore_adf) or single-slot (--cb_explore_adf).
// It is fixed when the loop is made (see loop.Policy.Validate), so that
// its log and its models never mix the two: a multi-slot loop answers
// MultiSlotRank and MultiSlotReward, a single-slot one Rank and Reward;
// Activate and everything else both.

// multiSlot reports whether lc's loop is multi-slot.
func (lc *liveConfig) multiSlot() bool { return lc.set.Policy != nil && lc.set.Policy.CCB() }

// problemTypeError is a call the loop's problem type does not answer.
type problemTypeError struct {
	loop      string
	multiSlot bool // the loop's type
}

func (e *problemTypeError) Error() string {
	if e.multiSlot {
		return fmt.Sprintf("loop %q is multi-slot (its policy has --ccb_explore_adf): use MultiSlotRank and MultiSlotReward", e.loop)
	}
	return fmt.Sprintf("Multi-slot feature is currently disabled: loop %q is single-slot (its policy has --cb_explore_adf); a multi-slot loop is one made with a --ccb_explore_adf policy", e.loop)
}

// GRPCStatus is e as gRPC answers it: FailedPrecondition, with
// Personalizer's error code in an ErrorInfo detail for the REST API.
func (e *problemTypeError) GRPCStatus() *status.Status {
	st := status.New(codes.FailedPrecondition, e.Error())
	reason := "InvalidMultiSlotApiAccess"
	if e.multiSlot {
		reason = "InvalidRankRequest"
	}
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "personalizer"}); err == nil {
		st = d
	}
	return st
}

// MultiSlotRank implements PersonalizerService.MultiSlotRank.
func (s *Server) MultiSlotRank(ctx context.Context, req *personalizerv1.MultiSlotRankRequest) (*personalizerv1.MultiSlotRankResponse, error) {
	resp, err := s.multiSlotRank(ctx, req)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return resp, nil
}

// MultiSlotRankStream implements PersonalizerService.MultiSlotRankStream:
// requests are answered one by one, in order.
func (s *Server) MultiSlotRankStream(stream personalizerv1.PersonalizerService_MultiSlotRankStreamServer) error {
	return serveStream(s, stream.Context(), stream.Recv, func(req *personalizerv1.MultiSlotRankStreamRequest) error {
		resp, err := s.multiSlotRank(stream.Context(), req.GetRequest())
		if err != nil {
			return s.toStatus(err)
		}
		return stream.Send(&personalizerv1.MultiSlotRankStreamResponse{Response: resp})
	})
}

// multiSlotRank decides and logs one multi-slot request.
func (s *Server) multiSlotRank(ctx context.Context, req *personalizerv1.MultiSlotRankRequest) (*personalizerv1.MultiSlotRankResponse, error) {
	l, err := s.loopFor(ctx)
	if err != nil {
		return nil, err
	}
	lc := l.live.Load()
	if !lc.multiSlot() {
		return nil, &problemTypeError{loop: l.name}
	}
	eventID := req.GetEventId()
	if req.EventId == nil {
		eventID = rand.Text()
	}
	wire, err := req.MarshalVT()
	if err != nil {
		return nil, fmt.Errorf("encode the request: %w", err)
	}
	sc := s.pool.Get().(*scratch)
	defer s.putScratch(sc)
	d, err := sc.DecideSlots(req, len(wire), eventID, &lc.set, l.decideModel())
	if err != nil {
		return nil, err
	}
	resp := d.Response(req)
	rec := &eventsv1.RankEvent{
		Loop:             l.name,
		EventId:          eventID,
		Deferred:         req.GetDeferActivation(),
		ModelVersion:     d.ModelVersion,
		LearningMode:     d.Mode,
		Rules:            lc.rules,
		MultiSlotRequest: wire,
		Slots:            make([]*eventsv1.SlotDecision, len(d.Logged)),
	}
	for k, dec := range d.Logged {
		sd := &eventsv1.SlotDecision{Ranking: make([]uint32, len(dec)), Probabilities: make([]float32, len(dec))}
		for i, ap := range dec {
			sd.Ranking[i], sd.Probabilities[i] = uint32(ap.Action), ap.Prob
		}
		rec.Slots[k] = sd
	}
	v, err := rec.MarshalVT()
	if err != nil {
		return nil, fmt.Errorf("encode the rank record: %w", err)
	}
	// As Rank: the decision stands even if the event cannot be buffered.
	if err := s.publishValue(ctx, eventlog.TypeRank, []byte(l.prefix+eventID), v); err != nil && !errors.Is(err, errBufferFull) {
		s.log.Error("rank event not logged", "event_id", eventID, "err", err)
	}
	l.ranks.Add(1)
	return resp, nil
}

// MultiSlotReward implements PersonalizerService.MultiSlotReward: one
// reward record per slot reward, each with its own id.
func (s *Server) MultiSlotReward(ctx context.Context, req *personalizerv1.MultiSlotRewardRequest) (*personalizerv1.MultiSlotRewardResponse, error) {
	l, err := s.loopFor(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	lc := l.live.Load()
	if !lc.multiSlot() {
		return nil, s.toStatus(&problemTypeError{loop: l.name})
	}
	if err := validateMultiSlotReward(lc.set.Limits, req); err != nil {
		return nil, s.toStatus(err)
	}
	for _, r := range req.GetRewards() {
		ev := &eventsv1.RewardEvent{Loop: l.name, EventId: req.GetEventId(), Value: r.GetValue(), Id: outcomeID(), SlotId: r.GetSlotId()}
		if err := s.publish(ctx, l, eventlog.TypeReward, req.GetEventId(), ev); err != nil {
			return nil, s.toStatus(err)
		}
		l.rewards.Add(1)
	}
	return &personalizerv1.MultiSlotRewardResponse{}, nil
}

// validateMultiSlotReward checks a MultiSlotRewardRequest: its event id,
// at least one reward and at most one per slot a request may have, each
// naming a slot and with a value in [-1, 1].
func validateMultiSlotReward(l Limits, req *personalizerv1.MultiSlotRewardRequest) error {
	if err := validateOutcomeEventID(l, "event_id", req.GetEventId()); err != nil {
		return err
	}
	rs := req.GetRewards()
	if n := len(rs); n < 1 || n > l.MaxActions {
		return invalid("rewards", "want 1 to %d slot rewards, got %d", l.MaxActions, n)
	}
	for i, r := range rs {
		if id := r.GetSlotId(); id == "" || len(id) > l.MaxIDLength {
			return invalid(fmt.Sprintf("rewards[%d].slot_id", i), "a slot id of 1 to %d bytes is required", l.MaxIDLength)
		}
		if v := r.GetValue(); math.IsNaN(float64(v)) || v < -1 || v > 1 {
			return invalid(fmt.Sprintf("rewards[%d].value", i), "reward must be a number between -1 and 1, got %v", v)
		}
	}
	return nil
}
