package decide

import (
	"fmt"
	"slices"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/features"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// SlotsDecision is one multi-slot request's decision. It lives in the
// [Scratch] that made it and is valid until the Scratch's next use.
type SlotsDecision struct {
	EventID string
	// Logged is each slot's decision as the model made it, in slot order:
	// the sampled action first, then the slot's other candidates (the
	// actions no earlier slot took and the slot does not exclude), as
	// 0-based indices into the request's actions. A slot left without
	// candidates has an empty decision. The rank record carries it in
	// every learning mode; the mode says what the caller got.
	Logged [][]bandit.ActionProb
	// Answer is each slot's action for the caller, an index into the
	// request's actions (-1: none left for it): Online the sampled one,
	// Apprentice and LoggingOnly the slot's baseline action.
	Answer       []int
	Mode         eventsv1.LearningMode
	ModelVersion string // empty before the first model
}

// slotScratch is a multi-slot decision's part of a [Scratch].
type slotScratch struct {
	excluded [][]bool
	taken    []bool
	logged   [][]bandit.ActionProb
	answer   []int
	d        SlotsDecision
}

// CheckSlots is [Scratch.Check] for a multi-slot request: the limits, the
// slot rules, the size of the event and of its joined line, the features
// the policy's interactions make of it (every slot counted with every
// slot's features, a bound). It leaves each slot's excluded actions in sc.
func (sc *Scratch) CheckSlots(req *personalizerv1.MultiSlotRankRequest, size int, s *Settings, m *Model) error {
	excluded, err := s.Limits.ValidateMultiSlotRank(req, sc.slots.excluded)
	if err != nil {
		return err
	}
	sc.slots.excluded = excluded
	actions, slots := req.GetActions(), req.GetSlots()
	// The joined line holds the rendered context and, per slot, its
	// candidates with their probabilities.
	line := features.ContextBound(req.GetContextFeatures(), actions) + features.SlotsBound(actions, slots) + len(slots)*len(actions)*24
	if n := max(size, line) + JoinedLineRoom; n > s.MaxRecordBytes {
		return invalid("request", "the event this multi-slot rank logs would take about %d bytes, over the limit of %d bytes a record may have (--max-record-bytes); send fewer or shorter features", n, s.MaxRecordBytes)
	}
	pol := s.Policy
	if m != nil {
		pol = m.Model.Policy()
	}
	features.ShapeSlots(&sc.shape, req.GetContextFeatures(), actions, slots)
	sc.scored = pol.CountShape(&sc.shape, &sc.pred)
	if sc.scored > 0 && len(slots) > 1 {
		sc.scored = min(sc.scored, s.Limits.MaxInteractionFeatures+1) * len(slots)
	}
	if limit := s.Limits.MaxInteractionFeatures; sc.scored > limit {
		return invalid("request", "the policy's interactions make %s features to score these slots, over the limit of %d (--max-interaction-features); send fewer features per namespace, fewer slots or fewer actions", countString(sc.scored), limit)
	}
	return nil
}

// DecideSlots checks req, of encoded size size, and decides it as event
// eventID: slot by slot, in order, as VW's --ccb_explore_adf predicts,
// each slot sampled with the seed "<eventID><slot id>" (Personalizer's
// client library's). Before the first model every candidate of a slot is
// equally likely. The same request, event id, settings and model give
// the same decision.
func (sc *Scratch) DecideSlots(req *personalizerv1.MultiSlotRankRequest, size int, eventID string, s *Settings, m *Model) (*SlotsDecision, error) {
	if err := sc.CheckSlots(req, size, s, m); err != nil {
		return nil, err
	}
	st := &sc.slots
	actions, slots := req.GetActions(), req.GetSlots()
	d := &st.d
	d.EventID, d.ModelVersion = eventID, ""
	st.logged = st.logged[:0]
	if m == nil {
		st.taken = append(st.taken[:0], make([]bool, len(actions))...)
		for k, sl := range slots {
			pmf := st.next(len(actions))
			for i := range actions {
				if !st.taken[i] && !st.excluded[k][i] {
					pmf = append(pmf, bandit.ActionProb{Action: i})
				}
			}
			for i := range pmf {
				pmf[i].Prob = 1 / float32(len(pmf))
			}
			if len(pmf) > 0 {
				c := bandit.SampleSlot(eventID+sl.GetId(), pmf)
				pmf[0], pmf[c] = pmf[c], pmf[0]
				st.taken[pmf[0].Action] = true
			}
			st.logged[k] = pmf
		}
	} else {
		sc.ev.Reset()
		sc.ev.SetKeepNames(false)
		features.BuildSlots(&sc.ev, req.GetContextFeatures(), actions, slots, st.excluded, eventID)
		m.Model.PredictEpsilon(&sc.ev, &sc.pred, s.Epsilon)
		decs := sc.pred.Slots()
		if len(decs) != len(slots) {
			return nil, fmt.Errorf("model version %s decided %d of %d slots: it is not a multi-slot (--ccb_explore_adf) model", m.Version, len(decs), len(slots))
		}
		for k, dec := range decs {
			st.logged[k] = append(st.next(len(dec)), dec...)
		}
		d.ModelVersion = m.Version
	}
	d.Logged = st.logged
	d.Mode = s.Mode
	if d.Mode == eventsv1.LearningMode_LEARNING_MODE_UNSPECIFIED {
		d.Mode = eventsv1.LearningMode_LEARNING_MODE_ONLINE
	}
	st.answer = st.answer[:0]
	for k, sl := range slots {
		a := -1
		switch {
		case d.Mode != eventsv1.LearningMode_LEARNING_MODE_ONLINE:
			a = slices.IndexFunc(actions, func(x *personalizerv1.Action) bool { return x.GetId() == sl.GetBaselineAction() })
		case len(d.Logged[k]) > 0:
			a = d.Logged[k][0].Action
		}
		st.answer = append(st.answer, a)
	}
	d.Answer = st.answer
	return d, nil
}

// next appends an empty slot decision with room for n to st.logged, reusing
// the memory of an earlier one, and returns it.
func (st *slotScratch) next(n int) []bandit.ActionProb {
	k := len(st.logged)
	if k < cap(st.logged) {
		st.logged = st.logged[:k+1]
	} else {
		st.logged = append(st.logged, nil)
	}
	return slices.Grow(st.logged[k][:0], n)
}

// Response is the answer to req, which d decided: each slot with the
// action to show and reward, and the slot's decision with the actions'
// ids.
func (d *SlotsDecision) Response(req *personalizerv1.MultiSlotRankRequest) *personalizerv1.MultiSlotRankResponse {
	actions := req.GetActions()
	resp := &personalizerv1.MultiSlotRankResponse{EventId: d.EventID, ModelVersion: d.ModelVersion}
	for k, sl := range req.GetSlots() {
		r := &personalizerv1.SlotResponse{Id: sl.GetId()}
		if a := d.Answer[k]; a >= 0 {
			r.RewardActionId = actions[a].GetId()
		}
		for _, ap := range d.Logged[k] {
			r.Ranking = append(r.Ranking, &personalizerv1.RankedAction{Id: actions[ap.Action].GetId(), Probability: ap.Prob})
		}
		resp.Slots = append(resp.Slots, r)
	}
	return resp
}
