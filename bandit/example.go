package bandit

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Event is one decision: a shared (context) example, one example per action
// and, once the outcome is known, a label; or, for a --ccb_explore_adf
// policy, one decision per slot ([Event.AddSlot]), each with its outcome. The zero value is an empty event.
// Reuse an Event with [Event.Reset] to avoid allocating.
type Event struct {
	shared  Example
	actions []*Example // grows only; n are in use so Reset keeps the examples
	n       int
	label   label
	pdrop   float32
	eventID []byte
	tag     []byte
	names   bool
	prep    prepared // see Prepare
	changes uint64   // counts changes to the features (see version)
	slots   []*slot  // multi-slot events: grows only; nslots are in use
	nslots  int

	// SkipLearn marks an event that must not be learned from (DSJson
	// "_skipLearn":true, e.g. a deferred event that was never activated).
	SkipLearn bool
}

type label struct {
	set    bool
	chosen int
	cost   float32
	prob   float32
}

// Reset empties e for reuse, keeping its memory.
func (e *Event) Reset() {
	e.own()
	e.shared.reset()
	for _, x := range e.actions[:e.n] {
		x.reset()
	}
	e.n = 0
	for _, s := range e.slots[:e.nslots] {
		s.reset()
	}
	e.nslots = 0
	e.prep.policy = nil
	e.label = label{}
	e.pdrop = 0
	e.eventID = e.eventID[:0]
	e.tag = e.tag[:0]
	e.SkipLearn = false
}

// SetKeepNames makes e keep the name of every feature added from now on
// (VW's audit strings: "Namespace^name"), which [Names] reports. Parsing
// for --invert_hash needs it; it costs allocations.
func (e *Event) SetKeepNames(on bool) {
	if e.names == on && e.shared.names == on {
		return
	}
	e.names = on
	e.shared.names = on
	for _, x := range e.actions {
		x.names = on
	}
}

// Shared returns the shared (context) example whose features every action
// sees.
func (e *Event) Shared() *Example {
	e.own()
	return &e.shared
}

// AddAction appends an action example and returns it. Actions are numbered
// from 0 in the order they are added.
func (e *Event) AddAction() *Example {
	if e.n == len(e.actions) {
		e.actions = append(e.actions, new(Example))
	}
	x := e.actions[e.n]
	x.names = e.names
	x.changes = &e.changes
	e.n++
	return x
}

// NumActions reports how many actions e has.
func (e *Event) NumActions() int { return e.n }

// Action returns action i, 0 <= i < [Event.NumActions].
func (e *Event) Action(i int) *Example { return e.actions[:e.n][i] }

// SetLabel records the outcome: the logged policy chose action chosen
// (0-based) with probability prob and observed cost (VW minimizes cost, so
// cost = -reward).
func (e *Event) SetLabel(chosen int, cost, prob float32) {
	e.label = label{set: true, chosen: chosen, cost: cost, prob: prob}
}

// Label returns the label set by [Event.SetLabel]; ok is false if there is
// none.
func (e *Event) Label() (chosen int, cost, prob float32, ok bool) {
	l := e.label
	return l.chosen, l.cost, l.prob, l.set
}

// SetPdrop records that the event survived subsampling with probability
// 1-pdrop. VW then weighs it by 1/(1-pdrop).
func (e *Event) SetPdrop(pdrop float32) { e.pdrop = pdrop }

// Weight returns the importance weight of the event, 1/(1-pdrop).
func (e *Event) Weight() float32 {
	if e.pdrop == 0 {
		return 1
	}
	return 1 / (1 - e.pdrop) // float32 arithmetic, as VW's "weight /= 1 - pdrop"
}

// SetEventID sets the event id (used to seed sampling, see [SampleIndex]).
func (e *Event) SetEventID(id string) { e.eventID = append(e.eventID[:0], id...) }

// EventID returns the event id.
func (e *Event) EventID() string { return string(e.eventID) }

// SetTag sets the tag VW prints after the event's prediction (DSJson "_tag"
// at the top of "c").
func (e *Event) SetTag(tag string) { e.tag = append(e.tag[:0], tag...) }

// Tag returns the tag set by [Event.SetTag].
func (e *Event) Tag() string { return string(e.tag) }

// Validate reports whether e can be predicted and learned: it needs at least
// one action and, if labelled, a chosen action in range, a finite cost and a
// probability in (0, 1]. The weight must be finite and positive. A
// multi-slot event needs at least as many actions as slots, and each slot
// outcome a finite cost and a probability in (0, 1].
func (e *Event) Validate() error {
	if e.n == 0 {
		return errors.New("event has no actions")
	}
	if w := e.Weight(); !(w > 0) || math.IsInf(float64(w), 0) {
		return fmt.Errorf("pdrop %v gives weight %v; need 0 <= pdrop < 1", e.pdrop, w)
	}
	if e.nslots > 0 {
		return e.validateSlots()
	}
	l := e.label
	if !l.set {
		return nil
	}
	if l.chosen < 0 || l.chosen >= e.n {
		return fmt.Errorf("label chooses action %d of %d", l.chosen, e.n)
	}
	if math.IsNaN(float64(l.cost)) || math.IsInf(float64(l.cost), 0) {
		return fmt.Errorf("label cost %v is not finite", l.cost)
	}
	if !(l.prob > 0 && l.prob <= 1) {
		return fmt.Errorf("label probability %v is not in (0, 1]", l.prob)
	}
	return nil
}

// Example holds the features of the shared context or of one action, built
// with VW's JSON semantics: [Example.Namespace] opens a namespace as a JSON
// object key would, and [Example.String], [Example.Number] and [Example.Bool]
// add what "key":"value", "key":number and "key":true add in it.
//
// VW keys namespaces by the first byte of their name and orders them by the
// moment their JSON object closes, with the default namespace (the keys at
// the top of the object) closing last. Example keeps that order so the
// features are summed exactly as VW sums them.
type Example struct {
	groups  []group     // one per namespace index, in creation order
	slot    [256]uint16 // namespace index -> 1 + position in groups
	order   []byte      // namespace indices in VW's order, for closed namespaces
	stack   []frame     // open namespaces above the root
	root    frame       // the default namespace ' ' (hash 0), open until the end
	scratch []byte      // key+value bytes of a string feature
	names   bool        // keep feature names (for --invert_hash); allocates
	changes *uint64     // the change counter of the event x belongs to, see Event.Prepare
}

type group struct {
	ns    byte
	feats []feature
	names []string // with Example.names: each feature's name as VW's audit prints it
}

// feature is one parsed feature. hash is its hash under --hash strings (the
// default), alt under --hash all; the two differ only for names that are
// all digits or have surrounding blanks. VW masks the hash to -b bits,
// except for the numbers of a JSON array: their index is the namespace's
// hash plus their position, unmasked, and pos is that position plus 1.
// (16 bytes: parsing writes and preparation reads millions of these.)
type feature struct {
	hash, alt uint32
	value     float32
	pos       uint32
}

// frame is an open namespace: its index, its hashes (the seeds of its
// features' hashes under --hash strings and --hash all) and how many
// features it received, which decides whether closing it registers the
// namespace.
type frame struct {
	ns        byte
	hash, alt uint32
	count     int
	name      string // with Example.names
}

// version counts every change to e's features: it only grows. The
// examples count into e.changes, so that checking it reads e alone (the
// learning goroutine of personalizer train reads no example).
func (e *Event) version() uint64 { return e.changes + uint64(e.n) }

// own makes e's shared example count its changes into e (after e was
// created or copied).
func (e *Event) own() {
	if e.shared.changes != &e.changes {
		e.shared.changes = &e.changes
		e.changes++
	}
}

func (x *Example) reset() {
	if x.changes != nil {
		*x.changes++
	}
	for _, g := range x.groups {
		x.slot[g.ns] = 0
	}
	for i := range x.groups {
		x.groups[i].feats = x.groups[i].feats[:0]
		x.groups[i].names = x.groups[i].names[:0]
	}
	x.groups = x.groups[:0]
	x.order = x.order[:0]
	x.stack = x.stack[:0]
	x.root = frame{}
}

// Namespace closes the namespace opened by the previous call, if any, and
// opens the namespace name, as the JSON key "name":{...} would. The empty
// name returns to the default namespace (VW's ' ', hash 0), where the keys at
// the top of a JSON object go.
func (x *Example) Namespace(name string) {
	for len(x.stack) > 0 {
		x.pop()
	}
	if name != "" {
		x.push(name)
	}
}

func (x *Example) push(name string) { pushName(x, name) }

func (x *Example) pushBytes(name []byte) { pushName(x, name) }

func pushName[T stringish](x *Example, name T) {
	name = cstring(name)
	h, alt := hashBoth(name, 0, 0)
	f := frame{ns: namespaceIndex(name), hash: h, alt: alt}
	if x.names {
		f.name = string(cstring(name))
	}
	x.stack = append(x.stack, f)
}

// pushFrame opens a namespace like f (the objects of a JSON array of
// namespaces share the array's namespace).
func (x *Example) pushFrame(f frame) {
	f.count = 0
	x.stack = append(x.stack, f)
}

// pop closes the innermost namespace. Like VW, it registers the namespace
// index only if this object added features and the index is new.
func (x *Example) pop() {
	f := x.stack[len(x.stack)-1]
	x.stack = x.stack[:len(x.stack)-1]
	if f.count > 0 {
		x.register(f.ns)
	}
}

func (x *Example) register(ns byte) {
	for _, o := range x.order {
		if o == ns {
			return
		}
	}
	x.order = append(x.order, ns)
}

var defaultNamespaceAll = murmur3(" ", 0)

func (x *Example) top() *frame {
	if len(x.stack) == 0 {
		// Set here so that the zero Example is ready to use. VW names the
		// default namespace " ": its hash is 0 under --hash strings (blanks
		// are trimmed) but murmur3(" ") under --hash all.
		x.root.ns, x.root.alt = ' ', defaultNamespaceAll
		return &x.root
	}
	return &x.stack[len(x.stack)-1]
}

// add appends a feature to the innermost open namespace.
func (x *Example) add(hash, alt uint32, value float32, pos uint32) {
	if x.changes != nil {
		*x.changes++
	}
	f := x.top()
	f.count++
	s := x.slot[f.ns]
	if s == 0 {
		if n := len(x.groups); n < cap(x.groups) {
			x.groups = x.groups[:n+1] // reuse the feature slice kept by reset
			x.groups[n].ns = f.ns
		} else {
			x.groups = append(x.groups, group{ns: f.ns})
		}
		s = uint16(len(x.groups))
		x.slot[f.ns] = s
	}
	g := &x.groups[s-1]
	g.feats = append(g.feats, feature{hash: hash, alt: alt, value: value, pos: pos})
}

// addName records the name of the feature just added, as VW's audit
// prints it: "Namespace^name", or just "name" in the default namespace.
func (x *Example) addName(name []byte) {
	f := x.top()
	g := &x.groups[x.slot[f.ns]-1]
	if f.name == "" {
		g.names = append(g.names, string(name))
	} else {
		g.names = append(g.names, f.name+"^"+string(name))
	}
}

// String adds the feature VW's JSON parser makes of "key":"value": the hash of
// key and value concatenated, with ' ', '\t', '|' and ':' in the value
// replaced by '_', and value 1.
func (x *Example) String(key, value string) { addString(x, key, value, true) }

// addString adds "key":"value". mayHaveNUL is false when the caller knows
// that neither holds a NUL byte (a JSON string without escapes), which
// spares a scan.
func addString[K, V stringish](x *Example, key K, value V, mayHaveNUL bool) {
	x.scratch = append(x.scratch[:0], key...)
	for i := range len(value) {
		c := value[i]
		switch c {
		case ' ', '\t', '|', ':':
			c = '_'
		}
		x.scratch = append(x.scratch, c)
	}
	f := x.top()
	name := x.scratch
	if mayHaveNUL {
		name = cstring(name)
	}
	h, alt := hashBoth(name, f.hash, f.alt)
	x.add(h, alt, 1, 0)
	if x.names {
		x.addName(name)
	}
}

// Number adds the feature VW's JSON parser makes of "key":v: the hash of key
// with value float32(v). Like VW, it drops features whose float32 value is 0.
// Callers must not pass NaN or infinities (VW would learn garbage from them).
func (x *Example) Number(key string, v float64) { addNumber(x, key, float32(v), true) }

func addNumber[K stringish](x *Example, key K, v float32, mayHaveNUL bool) {
	if v != 0 {
		f := x.top()
		if mayHaveNUL {
			key = cstring(key)
		}
		h, alt := hashBoth(key, f.hash, f.alt)
		x.add(h, alt, v, 0)
		if x.names {
			x.addName([]byte(key))
		}
	}
}

// Bool adds the feature VW's JSON parser makes of "key":true: the hash of
// key with value 1. Like VW, "key":false adds nothing.
func (x *Example) Bool(key string, v bool) {
	if v {
		addNumber(x, key, 1, true)
	}
}

// arrayNumber adds the i-th number of a JSON array "key":[...]: VW indexes it
// by the namespace hash plus i, unmasked, and drops zeros.
func (x *Example) arrayNumber(i int, v float32) {
	if v == 0 {
		return
	}
	f := x.top()
	x.add(f.hash, f.alt, v, uint32(i)+1)
	if x.names {
		x.addName([]byte("[" + strconv.Itoa(i) + "]"))
	}
}

// text adds VW's "_text" features: one value-1 feature per word, words split
// at ' ' and '\t', with ':' and '|' replaced by '_'.
func (x *Example) text(s []byte) {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != ' ' && s[i] != '\t' {
			continue
		}
		if i > start {
			x.scratch = x.scratch[:0]
			for _, c := range s[start:i] {
				if c == ':' || c == '|' {
					c = '_'
				}
				x.scratch = append(x.scratch, c)
			}
			f := x.top()
			h, alt := hashBoth(cstring(x.scratch), f.hash, f.alt)
			x.add(h, alt, 1, 0)
			if x.names {
				x.addName(x.scratch)
			}
		}
		start = i + 1
	}
}

// indices appends to dst the namespace indices of x in VW's order: the
// closed namespaces, then the open ones as VW would close them (innermost
// first, the default namespace last). x is not modified, so a shared Event
// can be read by concurrent predictions.
func (x *Example) indices(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, x.order...)
	for i := len(x.stack) - 1; i >= 0; i-- {
		dst = appendClosed(dst, start, x.stack[i])
	}
	return appendClosed(dst, start, x.root)
}

// appendClosed appends f's namespace to dst[start:] as closing f would.
func appendClosed(dst []byte, start int, f frame) []byte {
	if f.count == 0 {
		return dst
	}
	for _, o := range dst[start:] {
		if o == f.ns {
			return dst
		}
	}
	return append(dst, f.ns)
}

// group returns the features of namespace ns.
func (x *Example) group(ns byte) []feature {
	if s := x.slot[ns]; s != 0 {
		return x.groups[s-1].feats
	}
	return nil
}

// Namespaces appends to dst the namespace indices (VW's: a namespace
// name's first byte) of e's shared and action examples that dst does not
// hold yet, in the order they are met.
func (e *Event) Namespaces(dst []byte) []byte {
	var idx []byte
	for _, x := range append([]*Example{&e.shared}, e.actions[:e.n]...) {
		idx = x.indices(idx[:0])
		for _, ns := range idx {
			if !bytes.Contains(dst, []byte{ns}) {
				dst = append(dst, ns)
			}
		}
	}
	return dst
}
