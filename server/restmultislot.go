package server

import (
	"encoding/json"
	"fmt"
	"net/http"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// restMultiSlotRankRequest is Personalizer's MultiSlotRankRequest.
type restMultiSlotRankRequest struct {
	ContextFeatures []json.RawMessage `json:"contextFeatures"`
	Actions         []*restAction     `json:"actions"`
	Slots           []*restSlot       `json:"slots"`
	EventID         *string           `json:"eventId"`
	DeferActivation bool              `json:"deferActivation"`
}

// restSlot is Personalizer's SlotRequest.
type restSlot struct {
	ID              string            `json:"id"`
	Features        []json.RawMessage `json:"features"`
	ExcludedActions []string          `json:"excludedActions"`
	BaselineAction  string            `json:"baselineAction"`
}

// restMultiSlotRankResponse is Personalizer's MultiSlotRankResponse.
type restMultiSlotRankResponse struct {
	Slots   []restSlotResponse `json:"slots"`
	EventID string             `json:"eventId"`
}

// restSlotResponse is Personalizer's SlotResponse. A slot left without an
// action (every action it allows went to earlier slots) has no
// rewardActionId.
type restSlotResponse struct {
	ID             string `json:"id"`
	RewardActionID string `json:"rewardActionId,omitempty"`
}

// multiSlotFromREST maps a REST MultiSlotRankRequest onto the gRPC type:
// context and action features as [rankFromREST] maps them, each slot's
// features as the context's.
func multiSlotFromREST(in *restMultiSlotRankRequest) (*personalizerv1.MultiSlotRankRequest, error) {
	req := &personalizerv1.MultiSlotRankRequest{
		EventId:         in.EventID,
		DeferActivation: in.DeferActivation,
		Slots:           make([]*personalizerv1.Slot, len(in.Slots)),
	}
	var err error
	if req.ContextFeatures, req.Actions, err = contextAndActions(in.ContextFeatures, in.Actions); err != nil {
		return nil, err
	}
	for k, s := range in.Slots {
		if s == nil {
			return nil, invalid(fmt.Sprintf("slots[%d]", k), "Slots contain null value.")
		}
		req.Slots[k] = &personalizerv1.Slot{Id: s.ID, ExcludedActions: s.ExcludedActions, BaselineAction: s.BaselineAction}
		if req.Slots[k].Features, err = namespaces(fmt.Sprintf("slots[%d].features", k), s.Features); err != nil {
			return nil, err
		}
	}
	return req, nil
}

func (h *REST) multiSlotRank(w http.ResponseWriter, r *http.Request) {
	const code = "InvalidRankRequest"
	var in restMultiSlotRankRequest
	if err := h.decode(r, &in); err != nil {
		h.fail(w, code, err)
		return
	}
	req, err := multiSlotFromREST(&in)
	if err != nil {
		h.fail(w, code, err)
		return
	}
	resp, err := h.s.MultiSlotRank(r.Context(), req)
	if err != nil {
		h.fail(w, code, err)
		return
	}
	out := restMultiSlotRankResponse{EventID: resp.GetEventId(), Slots: make([]restSlotResponse, len(resp.GetSlots()))}
	for k, s := range resp.GetSlots() {
		out.Slots[k] = restSlotResponse{ID: s.GetId(), RewardActionID: s.GetRewardActionId()}
	}
	writeJSON(w, http.StatusCreated, out)
}

func (h *REST) multiSlotReward(w http.ResponseWriter, r *http.Request) {
	const code = "InvalidRewardRequest"
	var in struct {
		Reward []*struct {
			SlotID string   `json:"slotId"`
			Value  *float64 `json:"value"`
		} `json:"reward"`
	}
	if err := h.decode(r, &in); err != nil {
		h.fail(w, code, err)
		return
	}
	req := &personalizerv1.MultiSlotRewardRequest{EventId: r.PathValue("eventId"), Rewards: make([]*personalizerv1.SlotReward, len(in.Reward))}
	for i, rw := range in.Reward {
		var err error
		switch {
		case rw == nil:
			err = invalid(fmt.Sprintf("reward[%d]", i), "reward contains a null value")
		case rw.Value == nil:
			err = invalid(fmt.Sprintf("reward[%d].value", i), "required: a number between -1 and 1")
		case *rw.Value < -1 || *rw.Value > 1: // before float32 rounding can make it 1
			err = invalid(fmt.Sprintf("reward[%d].value", i), "reward must be a number between -1 and 1, got %v", *rw.Value)
		}
		if err != nil {
			h.fail(w, code, err)
			return
		}
		req.Rewards[i] = &personalizerv1.SlotReward{SlotId: rw.SlotID, Value: float32(*rw.Value)}
	}
	if _, err := h.s.MultiSlotReward(r.Context(), req); err != nil {
		h.fail(w, code, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// multiSlotActivate is activate for a multi-slot loop; a single-slot
// loop answers InvalidMultiSlotApiAccess, as its other multi-slot routes.
func (h *REST) multiSlotActivate(w http.ResponseWriter, r *http.Request) {
	l, err := h.s.loopFor(r.Context())
	if err == nil && !l.live.Load().multiSlot() {
		err = &problemTypeError{loop: l.name}
	}
	if err != nil {
		h.fail(w, "InvalidEventIdToActivate", err)
		return
	}
	h.activate(w, r)
}
