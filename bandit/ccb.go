package bandit

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Multi-slot events (VW's conditional contextual bandit, --ccb_explore_adf):
// an event has slots besides its shared example and actions, and the model
// decides one action per slot, in slot order, each action at most once. VW
// turns every slot into a single-slot event and runs its cb_explore_adf
// (predict, learn, explore) on it; so does this file, with the same Model
// code as single-slot events. What the slot's event is:
//
//   - its shared example is the event's shared namespaces, then the slot's
//     (a slot's default namespace becomes namespace 139), then, once the
//     model has seen a multi-slot event, the slot-index feature
//     "_ccb_slot_index^index<k>" in namespace 140;
//   - its actions are the event's actions that the slot may take: those in
//     its "_inc" list (all if there is none) not taken by an earlier slot;
//   - its label is the slot's outcome if the logged action is one of them,
//     otherwise the slot is unlabelled.
//
// Each slot is learned before the next one is predicted. The policy's
// interactions gain copies with namespace 140 appended and ":" x 140
// ([ccbTerms]); they generate nothing until the slot-index feature exists,
// exactly as VW adds them only when it turns the feature on.

// Namespaces VW's CCB reduction adds to a slot's shared example.
const (
	ccbSlotNamespace = 139 // a slot's default namespace
	ccbIDNamespace   = 140 // the slot-index feature
)

// ccbTerms is VW's insert_ccb_interactions: every term, once more with the
// slot-index namespace appended, and every namespace with it.
func ccbTerms(terms [][]byte) [][]byte {
	out := make([][]byte, 0, 3*len(terms)+1)
	out = append(out, terms...)
	for _, t := range terms {
		out = append(out, append(slices.Clone(t), ccbIDNamespace), t)
	}
	return append(out, []byte{':', ccbIDNamespace})
}

// checkCCB checks the options that only make sense with, or cannot be used
// with, --ccb_explore_adf.
func (p *Policy) checkCCB(st *parsed) error {
	if !p.ccb {
		for _, name := range []string{"all_slots_loss", "ccb_no_slot_index"} {
			if st.given[name] {
				return fmt.Errorf("--%s is only used with --ccb_explore_adf", name)
			}
		}
		return nil
	}
	for _, name := range []string{"first", "bag", "squarecb", "softmax"} {
		if st.given[name] {
			return fmt.Errorf("--%s is not supported with --ccb_explore_adf (it explores epsilon-greedy)", name)
		}
	}
	return nil
}

// CCB reports whether the policy is VW's --ccb_explore_adf: its model
// learns and ranks multi-slot events ([Event.AddSlot]).
func (p *Policy) CCB() bool { return p.ccb }

// slot is one slot of a multi-slot event.
type slot struct {
	x   Example
	inc []int  // the actions it may take ("_inc"); all if empty
	tag []byte // "_tag": "seed=<s>" seeds its sampling
	out outcome
}

// outcome is a slot's label: the logged action, its cost and probability.
type outcome struct {
	set    bool
	action int
	cost   float32
	prob   float32
}

func (s *slot) reset() {
	s.x.reset()
	s.inc = s.inc[:0]
	s.tag = s.tag[:0]
	s.out = outcome{}
}

// AddSlot appends a slot to a multi-slot event (one for a policy with
// --ccb_explore_adf) and returns the example of its features: a namespace
// it opens keeps its name, features at its top level go to VW's slot
// namespace. Slots are numbered from 0 in the order they are added; the
// model fills them in that order.
func (e *Event) AddSlot() *Example {
	if e.nslots == len(e.slots) {
		e.slots = append(e.slots, new(slot))
	}
	s := e.slots[e.nslots]
	s.x.names = e.names
	e.nslots++
	return &s.x
}

// NumSlots reports how many slots e has (0 for a single-slot event).
func (e *Event) NumSlots() int { return e.nslots }

// Slot returns the features of slot k, 0 <= k < [Event.NumSlots].
func (e *Event) Slot(k int) *Example { return &e.slots[:e.nslots][k].x }

// SetSlotInclude restricts slot k to the given actions (0-based; DSJson
// "_inc"). Actions beyond the event's are ignored, as VW ignores them.
func (e *Event) SetSlotInclude(k int, actions []int) {
	s := e.slots[:e.nslots][k]
	s.inc = append(s.inc[:0], actions...)
}

// SetSlotTag sets slot k's tag (DSJson "_tag"): with "seed=<s>" the slot's
// action is sampled with seed MurmurHash3(s), which is how Personalizer's
// client seeds each slot of a multi-slot rank ("seed=<eventId><slotId>").
func (e *Event) SetSlotTag(k int, tag string) {
	s := e.slots[:e.nslots][k]
	s.tag = append(s.tag[:0], tag...)
}

// SetSlotOutcome labels slot k: the logged policy chose action (0-based
// into the event's actions) with probability prob and observed cost.
func (e *Event) SetSlotOutcome(k, action int, cost, prob float32) {
	e.slots[:e.nslots][k].out = outcome{set: true, action: action, cost: cost, prob: prob}
}

// SlotOutcome returns slot k's outcome; ok is false if it has none.
func (e *Event) SlotOutcome(k int) (action int, cost, prob float32, ok bool) {
	o := e.slots[:e.nslots][k].out
	return o.action, o.cost, o.prob, o.set
}

// validateSlots is [Event.Validate] of a multi-slot event.
func (e *Event) validateSlots() error {
	if e.nslots > e.n {
		return fmt.Errorf("%d slots but only %d actions: every slot needs its own action", e.nslots, e.n)
	}
	for k, s := range e.slots[:e.nslots] {
		o := s.out
		if !o.set {
			continue
		}
		switch {
		case o.action < 0:
			return fmt.Errorf("slot %d: logged action %d is negative", k, o.action)
		case math.IsNaN(float64(o.cost)) || math.IsInf(float64(o.cost), 0):
			return fmt.Errorf("slot %d: cost %v is not finite", k, o.cost)
		case !(o.prob > 0 && o.prob <= 1):
			return fmt.Errorf("slot %d: probability %v is not in (0, 1]", k, o.prob)
		}
	}
	return nil
}

// ccbScratch is the memory a [Prediction] needs for multi-slot events.
type ccbScratch struct {
	ev        Event  // one slot's single-slot event; its actions are the multi-slot event's
	cand      []int  // ev's actions' indices in the multi-slot event
	exclude   []bool // actions taken by earlier slots
	include   []bool
	ord       []byte // the namespaces of VW's shared example, see slotEvent
	idx       []byte
	id        [1]feature
	none      slot           // a slot without features
	decisions [][]ActionProb // per slot, grows only
	n         int            // decisions in use
}

// Slots returns the decision of each slot of the multi-slot event last
// predicted or learned into p: the action it took first (in learning, the
// logged action if the slot had one among its candidates, otherwise the
// one sampled), then its other candidates, as VW's -p lists them
// (actions are 0-based indices into the event's actions; see
// [Model.Predict] for the order). A slot without candidates has an empty
// decision. It is nil after a single-slot event (even under a
// --ccb_explore_adf policy, see [Model.Predict]); the slices are
// overwritten by the next prediction.
func (p *Prediction) Slots() [][]ActionProb {
	if p.ccb == nil || p.ccb.n == 0 {
		return nil
	}
	return p.ccb.decisions[:p.ccb.n]
}

// runCCB predicts, and with write learns, the multi-slot event e slot by
// slot as VW's ccb_explore_adf learn_or_predict; see the top of the file.
// Without write it only reads m: the slots without a seed then sample
// from a copy of the model's random state. It returns VW's progressive loss of
// the event and whether any slot has an outcome.
func (m *Model) runCCB(e *Event, p *Prediction, eps float32, mode Mode, write bool) (loss float64, labeled bool) {
	if p.ccb == nil {
		p.ccb = new(ccbScratch)
	}
	c := p.ccb
	c.n = 0
	p.pmf, p.ranked = p.pmf[:0], p.ranked[:0]
	p.nfeat = 0
	if e.nslots == 0 && e.n > 0 {
		// A single-slot event: decided as one slot without features (not
		// learned: VW drops events without slots).
		c.ord = e.shared.indices(c.ord[:0])
		c.exclude = zeroBools(c.exclude, e.n)
		m.slotEvent(e, nil, 0, m.ccbMulti && !m.policy.noSlotIndex, c)
		m.predictCB(&c.ev, p, eps)
		return 0, false
	}
	if e.nslots == 0 || e.Validate() != nil {
		return 0, false
	}
	pol := m.policy
	// VW turns on the slot-index feature, for good, at the first event with
	// several slots or with slot features.
	multi := m.ccbMulti || e.nslots > 1 || len(e.slots[0].x.indices(c.idx[:0])) > 0
	if write {
		m.ccbMulti = multi
	}
	addIndex := multi && !pol.noSlotIndex
	c.exclude = zeroBools(c.exclude, e.n)
	c.ord = e.shared.indices(c.ord[:0])
	w := e.Weight()
	rng := m.rand // VW's random state, for the slots without a seed
	var loss32 float32
	nfeat, outcomes := 0, 0
	for k := range e.nslots {
		s := e.slots[k]
		m.slotEvent(e, s, k, addIndex, c)
		dec := c.next()
		if c.ev.n > 0 {
			m.predictCB(&c.ev, p, eps)
			nfeat += p.nfeat
			chosen := -1
			if write && mode != ModeTest && c.ev.label.set {
				m.learn(&c.ev, p)
				for i, ap := range p.pmf {
					if ap.Action == c.ev.label.chosen {
						chosen = i
					}
				}
			} else {
				var seed uint64
				if t := s.tag; len(t) > len("seed=") && string(t[:5]) == "seed=" {
					seed = uint64(murmur3(t[5:], 0))
				} else {
					seed = rng
					rng = 0xeece66d5deece66d*rng + 2147483647
				}
				chosen = sampleNormalized(seed, p.pmf)
			}
			p.pmf[0], p.pmf[chosen] = p.pmf[chosen], p.pmf[0]
			for _, ap := range p.pmf {
				dec = append(dec, ActionProb{Action: c.cand[ap.Action], Prob: ap.Prob})
			}
			c.exclude[dec[0].Action] = true
			c.decisions[c.n-1] = dec
		}
		if o := s.out; o.set {
			outcomes++
			if len(dec) > 0 && (k == 0 || pol.allSlotsLoss) {
				var l float32 // VW's get_cost_estimate
				if dec[0].Action == o.action {
					l = o.cost / o.prob
				}
				loss32 += l * dec[0].Prob * w
			}
		}
		c.endSlot(e, s, addIndex)
	}
	p.nfeat = nfeat
	if write {
		m.rand = rng
		m.t += float64(w)
		if outcomes == 0 {
			m.tUnlabeled += float64(w)
		}
	}
	return float64(loss32), outcomes > 0
}

// endSlot is VW's removal of slot s's features from its shared example
// (remove_slot_features): it forgets a namespace only when it is the last
// one and only the slot's features are in it, which never happens with the
// slot index (last) on; where the others stay decides the order of the
// next slot's namespaces.
func (c *ccbScratch) endSlot(e *Event, s *slot, addIndex bool) {
	if addIndex {
		return
	}
	for _, ns := range s.x.indices(c.idx[:0]) {
		t := sharedNS(ns)
		if n := len(c.ord); n > 0 && c.ord[n-1] == t && len(e.shared.group(t)) == 0 {
			c.ord = c.ord[:n-1]
		}
	}
}

// namesCCB is [Model.Names] of the multi-slot event e, whose decisions
// (which decide each slot's candidates) p holds.
func (m *Model) namesCCB(e *Event, p *Prediction, visit func(slot uint64, name string)) {
	slots := p.Slots()
	if len(slots) != e.nslots {
		return
	}
	c := new(ccbScratch)
	c.exclude = zeroBools(nil, e.n)
	c.ord = e.shared.indices(nil)
	addIndex := m.ccbMulti && !m.policy.noSlotIndex
	var q Prediction
	for k, s := range e.slots[:e.nslots] {
		m.slotEvent(e, s, k, addIndex, c)
		if c.ev.n > 0 {
			m.Names(&c.ev, &q, visit)
			c.exclude[slots[k][0].Action] = true
		}
		c.endSlot(e, s, addIndex)
	}
}

// zeroBools returns s resized to n false values, reusing its memory.
func zeroBools(s []bool, n int) []bool {
	s = slices.Grow(s[:0], n)[:n]
	clear(s)
	return s
}

// next returns the decision of the next slot, empty.
func (c *ccbScratch) next() []ActionProb {
	if c.n == len(c.decisions) {
		c.decisions = append(c.decisions, nil)
	}
	c.n++
	c.decisions[c.n-1] = c.decisions[c.n-1][:0]
	return c.decisions[c.n-1]
}

// sharedNS is the namespace of a slot's namespace ns in VW's shared
// example.
func sharedNS(ns byte) byte {
	if ns == ' ' {
		return ccbSlotNamespace
	}
	return ns
}

// slotEvent makes c.ev the single-slot event of slot s, the k-th of e
// (VW's build_cb_example with the slot's features injected; s nil is a
// slot without features), and c.cand its actions' indices in e.
// c.exclude holds the actions earlier slots took and c.ord the namespaces
// of VW's shared example so far: VW appends a slot's namespace to the
// shared example when it is new and adds to it in place when not.
func (m *Model) slotEvent(e *Event, s *slot, k int, addIndex bool, c *ccbScratch) {
	if s == nil {
		s = &c.none
	}
	x := &c.ev.shared
	x.reset()
	for _, ns := range s.x.indices(c.idx[:0]) {
		if t := sharedNS(ns); !slices.Contains(c.ord, t) {
			c.ord = append(c.ord, t)
		}
	}
	x.names = e.names
	add := func(t byte, from *Example, ns byte) {
		if !x.names {
			x.appendGroup(t, from.group(ns), nil)
			return
		}
		x.appendGroup(t, from.group(ns), from.groupNames(ns))
	}
	for _, t := range c.ord {
		add(t, &e.shared, t)
		switch t {
		case ccbSlotNamespace:
			add(t, &s.x, ' ')
		case ' ':
		default:
			add(t, &s.x, t)
		}
	}
	if addIndex {
		// VW's slot-index feature: "index<k>" hashed in namespace "_id".
		name := strconv.AppendInt(append(c.idx[:0], "index"...), int64(k), 10)
		seed, seedAll := hashBoth("_id", 0, 0)
		h, alt := hashBoth(name, seed, seedAll)
		c.id[0] = feature{hash: h, alt: alt, value: 1}
		var names []string
		if x.names {
			names = []string{"_ccb_slot_index^" + string(name)}
		}
		x.appendGroup(ccbIDNamespace, c.id[:], names)
	}

	c.include = zeroBools(c.include, e.n)
	for _, a := range s.inc {
		if a >= 0 && a < e.n {
			c.include[a] = true
		}
	}
	c.cand = c.cand[:0]
	c.ev.actions = c.ev.actions[:0]
	c.ev.label = label{}
	for a := range e.n {
		if (len(s.inc) > 0 && !c.include[a]) || c.exclude[a] {
			continue
		}
		if o := s.out; o.set && o.action == a {
			c.ev.label = label{set: true, chosen: len(c.cand), cost: o.cost, prob: o.prob}
		}
		c.cand = append(c.cand, a)
		c.ev.actions = append(c.ev.actions, e.actions[a])
	}
	c.ev.n = len(c.cand)
	c.ev.pdrop = e.pdrop
}

// appendGroup adds the features fs to namespace ns of x, which is built
// from other examples' namespaces rather than parsed; names are their
// names if x keeps names.
func (x *Example) appendGroup(ns byte, fs []feature, names []string) {
	if len(fs) == 0 {
		return
	}
	s := x.slot[ns]
	if s == 0 {
		if n := len(x.groups); n < cap(x.groups) {
			x.groups = x.groups[:n+1]
			x.groups[n].ns = ns
		} else {
			x.groups = append(x.groups, group{ns: ns})
		}
		s = uint16(len(x.groups))
		x.slot[ns] = s
		x.register(ns)
	}
	g := &x.groups[s-1]
	g.feats = append(g.feats, fs...)
	if x.names {
		g.names = append(g.names, names...)
	}
}

// SampleSlot draws an entry of pmf as VW samples a multi-slot event's slot
// tagged "seed=<seed>" ([Event.SetSlotTag]), normalizing pmf in place:
// what a model's prediction does for each slot, for slots decided without
// a model (every candidate equally likely).
func SampleSlot(seed string, pmf []ActionProb) int {
	return sampleNormalized(uint64(murmur3(seed, 0)), pmf)
}

// sampleNormalized is VW's sample_after_normalizing: it draws an entry of
// pmf with seed, as [SampleIndex] does, and divides the probabilities by
// their sum in place (negative ones become 0).
func sampleNormalized(seed uint64, pmf []ActionProb) int {
	var total float32
	for i := range pmf {
		if pmf[i].Prob < 0 {
			pmf[i].Prob = 0
		}
		total += pmf[i].Prob
	}
	if total == 0 {
		pmf[0].Prob = 1
		return 0
	}
	draw := min(total*merand48(seed), total)
	chosen := -1
	var sum float32
	for i := range pmf {
		sum += pmf[i].Prob
		if chosen < 0 && sum > draw {
			chosen = i
		}
		pmf[i].Prob /= total
	}
	if chosen < 0 {
		chosen = len(pmf) - 1
	}
	return chosen
}

// errNoOutcome reports a multi-slot DSJson line without any slot outcome,
// which VW drops.
var errNoOutcome = fmt.Errorf(`%w: no slot has an outcome in "_outcomes"`, ErrSkip)

var errNoSlots = errors.New(`"c" has no "_slots": a --ccb_explore_adf policy needs multi-slot events`)

// uints parses an unsigned integer or an array of them (or null) into
// *dst.
func (d *DSJSONParser) uints(dst *[]int) error {
	one := func() error {
		if d.peek() == 'n' {
			return d.null()
		}
		n, err := d.uint()
		*dst = append(*dst, n)
		return err
	}
	if d.peek() != '[' {
		return one()
	}
	return d.elements(one)
}

// slotOutcomes parses "_outcomes": the i-th object labels the i-th slot.
func (d *DSJSONParser) slotOutcomes(e *Event) error {
	if !d.cDone {
		// VW finds no slots then (vw 9.11.2 crashes).
		return d.errorf(`"_outcomes" must come after "c"`)
	}
	if d.outcomes {
		return d.errorf(`"_outcomes" appears twice`)
	}
	d.outcomes = true
	k := 0
	return d.elements(func() error {
		if d.peek() != '{' {
			return d.errorf(`"_outcomes" elements must be objects`)
		}
		if e.nslots == 0 {
			return errNoSlots
		}
		if k >= e.nslots {
			return d.errorf(`"_outcomes" has more entries than the %d slots`, e.nslots)
		}
		s := e.slots[k]
		k++
		var cost float32
		hasCost := false
		d.outA, d.outP = d.outA[:0], d.outP[:0]
		err := d.members(func(key []byte) error {
			switch {
			case bytesEqualFold(key, "_label_cost"):
				n, null, err := d.number()
				if err != nil || null {
					return err
				}
				if math.IsInf(float64(n.value), 0) {
					return d.errorf("outcome %d: _label_cost %v overflows float32", k-1, n.value)
				}
				cost, hasCost = n.value, true
				return nil
			case string(key) == "_a":
				return d.uints(&d.outA)
			case string(key) == "_p":
				return d.numbers(&d.outP)
			case len(key) > 0 && key[0] == '_':
				return d.skip() // "_id", "_o", "_original_label_cost": VW does not learn from them
			}
			return d.errorf("outcome %d: unexpected key %q", k-1, key)
		})
		if err != nil || len(d.outA) == 0 || len(d.outP) == 0 {
			return err // VW labels a slot only if both are given
		}
		switch p := d.outP[0]; {
		case len(d.outA) != len(d.outP):
			return d.errorf(`outcome %d: "_a" has %d actions but "_p" %d probabilities`, k-1, len(d.outA), len(d.outP))
		case !hasCost:
			return d.errorf(`outcome %d has no "_label_cost"`, k-1)
		case !(p > 0 && p <= 1):
			return d.errorf("outcome %d: probability %v is not in (0, 1]", k-1, p)
		}
		s.out = outcome{set: true, action: d.outA[0], cost: cost, prob: d.outP[0]}
		return nil
	})
}

// checkSlots checks a parsed multi-slot line as VW would read it.
func (d *DSJSONParser) checkSlots(e *Event) error {
	switch {
	case !d.cDone:
		return errors.New(`missing "c"`)
	case e.n == 0:
		return errors.New(`"c" has no actions in "_multi"`)
	case e.nslots == 0:
		return errNoSlots
	case d.label.hasCost || d.label.hasProb || d.label.index >= 0:
		return errors.New(`"_label_*" keys label single-slot events; a multi-slot event's labels are in "_outcomes"`)
	}
	labelled := false
	for _, s := range e.slots[:e.nslots] {
		labelled = labelled || s.out.set
	}
	if !labelled {
		return errNoOutcome
	}
	return e.validateSlots()
}
