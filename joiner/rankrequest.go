package joiner

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/vtcodec"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// RankContext returns the DSJson "c" object of a rank record: the context
// it carries (records of servers before the request field), or the one
// rendered from the request it carries: the request's context features and
// its eligible actions (those its excluded_actions does not name, in
// request order, found as the server found them), the very bytes those
// servers wrote. A request that does not decode, excludes an action it
// does not have, or whose eligible actions the ranking does not index
// one for one, is an error.
func RankContext(ev *eventsv1.RankEvent) ([]byte, error) {
	if len(ev.GetRequest()) == 0 {
		return ev.GetContext(), nil
	}
	if len(ev.GetContext()) > 0 {
		return nil, errors.New("the record carries both a context and a request")
	}
	sc := renderPool.Get().(*renderScratch)
	defer func() {
		// A rare large request must not hold its memory for good.
		if cap(sc.context) <= keepRenderBytes && sc.blocks.Features() <= keepRenderFeatures {
			renderPool.Put(sc)
		}
	}()
	// Straight from the bytes when they are what servers write; decoded
	// otherwise, to render them or to say what is wrong.
	if c, n, ok := sc.wire.Append(sc.context[:0], ev.GetRequest()); ok && n == len(ev.GetRanking()) {
		sc.context = c
		return bytes.Clone(c), nil
	}
	return sc.decoded(ev)
}

// decoded is RankContext by decoding the request into messages.
func (sc *renderScratch) decoded(ev *eventsv1.RankEvent) ([]byte, error) {
	req := &sc.req
	if err := sc.blocks.Unmarshal(ev.GetRequest(), req); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	defer req.Reset() // not to keep the record alive
	actions := req.GetActions()
	excluded, n, unknown := features.Excluded(sc.excluded, actions, req.GetExcludedActions())
	sc.excluded = excluded
	switch {
	case unknown >= 0:
		return nil, fmt.Errorf("request: excluded_actions[%d] names no action", unknown)
	case n != len(ev.GetRanking()):
		return nil, fmt.Errorf("request has %d eligible actions, the ranking %d", n, len(ev.GetRanking()))
	}
	sc.eligible = features.Eligible(sc.eligible[:0], actions, excluded)
	sc.context = features.AppendContext(sc.context[:0], req.GetContextFeatures(), sc.eligible)
	clear(sc.eligible) // not to keep the request alive
	return bytes.Clone(sc.context), nil
}

// renderRequest gives a rank record that carries its request the context
// rendered from it instead ([RankContext]), so that the join holds and
// writes records of either kind alike. A multi-slot record gets the
// context of its multi-slot request, and its slots are returned
// ([renderSlots]).
func renderRequest(ev *eventsv1.RankEvent) ([]Slot, error) {
	if len(ev.GetMultiSlotRequest()) > 0 || len(ev.GetSlots()) > 0 {
		return renderSlots(ev)
	}
	if len(ev.GetRequest()) == 0 {
		return nil, nil
	}
	c, err := RankContext(ev)
	if err != nil {
		return nil, err
	}
	ev.Context, ev.Request = c, nil
	return nil, nil
}

// renderSlots gives a multi-slot rank record the DSJson "c" object of its
// request instead of the request ([features.AppendSlotsContext]: the
// context, every action, the slots) and returns its slots. It checks what
// the joined line is written from: the request decodes; every slot has an
// id of its own, excludes and names as baseline only actions the request
// has; the record has one decision per slot, each a ranking of distinct
// actions of the request with a probability each, whose logged action
// (the first, with a probability in (0, 1]) the slot may take and no
// earlier slot logged. Anything else is an error, and so is a record that
// carries a single-slot context, request or ranking as well.
func renderSlots(ev *eventsv1.RankEvent) ([]Slot, error) {
	if len(ev.GetContext()) > 0 || len(ev.GetRequest()) > 0 || len(ev.GetRanking()) > 0 || len(ev.GetProbabilities()) > 0 {
		return nil, errors.New("the record carries a multi-slot request and a single-slot context, request or ranking")
	}
	var req personalizerv1.MultiSlotRankRequest
	if err := proto.Unmarshal(ev.GetMultiSlotRequest(), &req); err != nil {
		return nil, fmt.Errorf("multi-slot request: %w", err)
	}
	actions, slots, decisions := req.GetActions(), req.GetSlots(), ev.GetSlots()
	if len(slots) == 0 || len(slots) != len(decisions) {
		return nil, fmt.Errorf("multi-slot request has %d slots, the record %d slot decisions", len(slots), len(decisions))
	}
	excluded, k, unknown := features.SlotExcluded(nil, actions, slots)
	if k >= 0 {
		return nil, fmt.Errorf("multi-slot request: slot %d's excluded_actions[%d] names no action", k, unknown)
	}
	out := make([]Slot, len(slots))
	logged := make([]bool, len(actions)) // by earlier slots
	seen := make([]bool, len(actions))
	for k, s := range slots {
		id := s.GetId()
		if id == "" {
			return nil, fmt.Errorf("multi-slot request: slot %d has no id", k)
		}
		if i := slices.IndexFunc(out[:k], func(o Slot) bool { return o.ID == id }); i >= 0 {
			return nil, fmt.Errorf("multi-slot request: slots %d and %d have the same id %q", i, k, id)
		}
		b := slices.IndexFunc(actions, func(a *personalizerv1.Action) bool { return a.GetId() == s.GetBaselineAction() })
		if b < 0 {
			return nil, fmt.Errorf("multi-slot request: slot %q's baseline_action %q names no action", id, s.GetBaselineAction())
		}
		out[k] = Slot{ID: id, Baseline: uint32(b)}
		ranking, probs := decisions[k].GetRanking(), decisions[k].GetProbabilities()
		switch {
		case len(ranking) == 0 || len(probs) != len(ranking):
			return nil, fmt.Errorf("slot %q: %d ranked actions, %d probabilities", id, len(ranking), len(probs))
		case !(probs[0] > 0 && probs[0] <= 1):
			return nil, fmt.Errorf("slot %q: logged action has probability %v", id, probs[0])
		}
		clear(seen)
		for i, a := range ranking {
			if int(a) >= len(actions) || seen[a] {
				return nil, fmt.Errorf("slot %q: ranking names action %d of %d twice or out of range", id, a, len(actions))
			}
			seen[a] = true
			if !finite(probs[i]) || probs[i] < 0 || probs[i] > 1 {
				return nil, fmt.Errorf("slot %q: probability %v", id, probs[i])
			}
		}
		switch a := ranking[0]; {
		case excluded[k][a]:
			return nil, fmt.Errorf("slot %q logged action %d, which it excludes", id, a)
		case logged[a]:
			return nil, fmt.Errorf("slot %q logged action %d, which an earlier slot logged", id, a)
		default:
			logged[a] = true
		}
	}
	ev.Context = features.AppendSlotsContext(nil, req.GetContextFeatures(), actions, slots, excluded)
	ev.MultiSlotRequest = nil
	return out, nil
}

// renderScratch is RankContext's reused memory.
type renderScratch struct {
	wire     features.WireContext
	blocks   vtcodec.Blocks
	req      personalizerv1.RankRequest
	excluded []bool
	eligible []*personalizerv1.Action
	context  []byte
}

const (
	keepRenderBytes    = 1 << 16
	keepRenderFeatures = 1 << 12
)

var renderPool = sync.Pool{New: func() any { return new(renderScratch) }}
