package features

import (
	"strconv"

	"github.com/open-personalizer/personalizer/bandit"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// A multi-slot request maps onto VW's conditional contextual bandit
// (--ccb_explore_adf) DSJson: "c" holds the context, every action under
// "_multi" (slots exclude actions each for itself) and the slots under
// "_slots", each {"_id":<id>, its unnamed features, its named namespaces,
// "_inc":[the 0-based indices of the actions it may take]}, "_inc" only
// when it excludes some.

// BuildSlots fills e with the event of a multi-slot request: what [Build]
// makes of context and every action, then one slot per slot of slots,
// restricted to the actions it does not exclude (excluded[k] marks slot
// k's, see [SlotExcluded]) and seeded as Personalizer's client seeded
// each slot, "seed=<eventID><slot id>". e must be empty.
func BuildSlots(e *bandit.Event, context []*personalizerv1.Namespace, actions []*personalizerv1.Action, slots []*personalizerv1.Slot, excluded [][]bool, eventID string) {
	Build(e, context, actions)
	var inc []int
	for k, s := range slots {
		x := e.AddSlot()
		for _, ns := range s.GetFeatures() {
			x.Namespace(ns.GetName())
			addFeatures(x, ns.GetFeatures())
		}
		if inc = included(inc[:0], excluded[k]); inc != nil {
			e.SetSlotInclude(k, inc)
		}
		e.SetSlotTag(k, "seed="+eventID+s.GetId())
	}
}

// included appends to dst the indices excluded does not mark, or returns
// nil when it marks none (the slot may take every action).
func included(dst []int, excluded []bool) []int {
	some := false
	for i, x := range excluded {
		if x {
			some = true
		} else {
			dst = append(dst, i)
		}
	}
	if !some {
		return nil
	}
	return dst
}

// SlotExcluded marks, per slot, the actions its excluded_actions name
// (dst reused). It returns the index of the first slot with an id that
// names no action, and that id's index, or -1, -1.
func SlotExcluded(dst [][]bool, actions []*personalizerv1.Action, slots []*personalizerv1.Slot) (excluded [][]bool, slot, unknown int) {
	excluded = dst[:0]
	for k, s := range slots {
		var ex []bool
		if k < cap(dst) {
			ex = dst[:k+1][k]
		}
		ex, _, u := Excluded(ex, actions, s.GetExcludedActions())
		excluded = append(excluded, ex)
		if u >= 0 {
			return excluded, k, u
		}
	}
	return excluded, -1, -1
}

// AppendSlotsContext appends the DSJson "c" object of a multi-slot
// request: [AppendContext] of context and every action, with "_slots"
// after "_multi". excluded is [SlotExcluded]'s. Parsing it with the bandit
// DSJson reader under a --ccb_explore_adf policy gives the features
// [BuildSlots] gives (tags apart: a logged event is labelled, not sampled).
func AppendSlotsContext(b []byte, context []*personalizerv1.Namespace, actions []*personalizerv1.Action, slots []*personalizerv1.Slot, excluded [][]bool) []byte {
	b = AppendContext(b, context, actions)
	b = b[:len(b)-1] // the closing brace
	b = append(b, `,"_slots":[`...)
	for k, s := range slots {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"_id":`...)
		b = AppendString(b, s.GetId())
		for _, ns := range s.GetFeatures() {
			if ns.GetName() == "" {
				b, _ = appendFeatures(b, ns.GetFeatures(), false)
				continue
			}
			b, _ = appendNamespace(b, ns.GetName(), ns.GetFeatures(), false)
		}
		if k < len(excluded) {
			if inc := included(nil, excluded[k]); inc != nil {
				b = append(b, `,"_inc":[`...)
				for i, a := range inc {
					if i > 0 {
						b = append(b, ',')
					}
					b = strconv.AppendInt(b, int64(a), 10)
				}
				b = append(b, ']')
			}
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// SlotsBound is at least what "_slots" adds to [ContextBound] in
// [AppendSlotsContext], found without writing it.
func SlotsBound(actions []*personalizerv1.Action, slots []*personalizerv1.Slot) int {
	n := len(`,"_slots":[]`)
	for _, s := range slots {
		n += len(`,{"_id":,"_inc":[]}`) + stringBound(s.GetId()) + 3*len(actions)
		for _, ns := range s.GetFeatures() {
			n += namespaceBound(ns.GetName(), ns.GetFeatures())
		}
	}
	return n
}

// ShapeSlots fills s as [Shape] does for a multi-slot request, with every
// slot's features added to the shared example: each slot is scored with
// the shared features and its own, so this bounds any one slot's.
func ShapeSlots(s *bandit.Shape, context []*personalizerv1.Namespace, actions []*personalizerv1.Action, slots []*personalizerv1.Slot) {
	Shape(s, context, actions)
	for _, sl := range slots {
		for _, ns := range sl.GetFeatures() {
			s.AddShared(bandit.NamespaceIndex(ns.GetName()), countFeatures(ns.GetFeatures()))
		}
	}
}
