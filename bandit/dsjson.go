package bandit

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// ErrSkip reports a DSJson line that VW silently drops: a blank line, an
// event without actions ("a" missing or empty) or one with "_skipLearn":true
// ([ErrSkipLearn]). Test for it with errors.Is.
var ErrSkip = errors.New("event skipped")

// ErrSkipLearn reports an event marked "_skipLearn":true (a deferred event
// that was never activated): a normal part of Personalizer logs, which VW
// drops without a word. It wraps [ErrSkip].
var ErrSkipLearn = fmt.Errorf(`%w: "_skipLearn" is true`, ErrSkip)

var (
	errBlank     = fmt.Errorf("%w: blank line", ErrSkip)
	errNoActions = fmt.Errorf(`%w: "a" is missing or empty`, ErrSkip)
	errSkipLearn = ErrSkipLearn
)

// maxDepth bounds the nesting of a DSJson line, so hostile input cannot
// exhaust the stack.
const maxDepth = 256

// DSJSONParser reads Decision Service JSON lines ("DSJson", what vw --dsjson
// reads) into events with VW 9.11.2's rules: features as [Example] describes
// them, a label only from "_label_cost", "_label_probability" and
// "_labelIndex" given before "c", numbers converted exactly as VW's
// RapidJSON does. Keys VW ignores are skipped (but must be valid JSON). The
// zero value is ready to use; a parser is not safe for concurrent use.
type DSJSONParser struct {
	// KeepNames makes the parsed events keep every feature's name, which
	// [Names] needs (vw --invert_hash). It costs allocations.
	KeepNames bool
	// CCB reads multi-slot lines ("_slots" in "c", "_outcomes" after it),
	// what vw --ccb_explore_adf --dsjson reads, instead of single-slot
	// ones: see [DSJSONParser.Parse].
	CCB bool

	s     []byte
	pos   int
	depth int
	str   []byte // unescaped string value
	key   []byte // unescaped key

	label     dsLabel
	cDone     bool
	slot      *slot // the slot whose object is being parsed
	outcomes  bool  // "_outcomes" was read
	outA      []int
	outP      []float32
	nActions  int // length of "a"
	skipLearn bool

	// The logged decision, for Logged.
	ids       []int
	probs     []float32
	timestamp []byte
	hasTime   bool
}

// dsLabel collects the "_label*" keys until "c" ends, where VW applies them.
type dsLabel struct {
	index            int // -1 if absent
	cost, prob       float32
	hasCost, hasProb bool
}

// Parse parses one DSJson line into e (which it resets). It returns an error
// that wraps [ErrSkip] for events VW drops, and a descriptive error, with the
// byte offset, for malformed lines.
//
// With CCB set, a line is a multi-slot event: "c" holds "_slots", an array
// of slot objects (features; "_inc", the actions the slot may take; "_tag";
// other "_" keys ignored), and "_outcomes", after "c", gives the i-th slot
// the i-th outcome ("_label_cost", "_a" and "_p": the first action and
// probability are the logged ones; other "_" keys ignored; an outcome
// without actions or probabilities leaves its slot unlabelled). Like VW, it
// drops events marked "_skipLearn" and events without any outcome
// (wrapping [ErrSkip]); a line without slots, with more slots than actions,
// with more outcomes than slots or with a malformed outcome is an error.
func (d *DSJSONParser) Parse(line []byte, e *Event) error {
	e.Reset()
	e.SetKeepNames(d.KeepNames)
	*d = DSJSONParser{KeepNames: d.KeepNames, CCB: d.CCB, s: line, str: d.str[:0], key: d.key[:0], label: dsLabel{index: -1},
		ids: d.ids[:0], probs: d.probs[:0], timestamp: d.timestamp[:0], outA: d.outA[:0], outP: d.outP[:0]}
	d.ws()
	if d.pos == len(d.s) {
		return errBlank
	}
	if d.s[d.pos] != '{' || d.pos != 0 {
		return d.errorf("a DSJson line must start with '{'")
	}
	if err := d.event(e); err != nil {
		return err
	}
	if d.ws(); d.pos != len(d.s) {
		return d.errorf("unexpected data after the event object")
	}
	if d.skipLearn {
		e.SkipLearn = true
		return errSkipLearn
	}
	if d.CCB {
		return d.checkSlots(e)
	}
	if d.nActions == 0 {
		return errNoActions
	}
	if !d.cDone {
		return errors.New(`missing "c"`)
	}
	if e.n == 0 {
		return errors.New(`"c" has no actions in "_multi"`)
	}
	return nil
}

// Logged returns the logged decision of the line Parse read last, which VW
// does not use: "a" (1-based indices into "_multi", the chosen action
// first), "p" (their probabilities, aligned with "a") and "Timestamp"
// (nil if absent or null). The slices are valid until the next Parse.
func (d *DSJSONParser) Logged() (actions []int, probs []float32, timestamp []byte) {
	if d.hasTime {
		timestamp = d.timestamp
	}
	return d.ids, d.probs, timestamp
}

func (d *DSJSONParser) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", d.pos, fmt.Sprintf(format, args...))
}

// event parses the top-level object (VW's DecisionServiceState).
func (d *DSJSONParser) event(e *Event) error {
	return d.members(func(key []byte) error {
		switch string(key) {
		case "a":
			return d.actionIDs()
		case "p", "_p":
			return d.numbers(&d.probs)
		case "c":
			if d.cDone {
				return d.errorf(`"c" appears twice`)
			}
			if d.peek() != '{' {
				return d.errorf(`"c" must be an object`)
			}
			if err := d.object(e, &e.shared, ctxShared); err != nil {
				return err
			}
			d.cDone = true
			return d.applyLabel(e)
		case "pdrop":
			n, null, err := d.number()
			if err != nil || null {
				return err
			}
			if !(n.value >= 0 && n.value < 1) {
				return d.errorf("pdrop %v is not in [0, 1)", n.value)
			}
			e.SetPdrop(n.value)
			return nil
		case "EventId":
			s, null, err := d.stringOrNull()
			if err == nil && !null {
				e.eventID = append(e.eventID[:0], s...)
			}
			return err
		case "Timestamp":
			s, null, err := d.stringOrNull()
			if err == nil && !null {
				d.timestamp, d.hasTime = append(d.timestamp[:0], s...), true
			}
			return err
		case "_skipLearn":
			b, err := d.boolean()
			d.skipLearn = b
			return err
		case "_original_label_cost":
			_, _, err := d.number()
			return err
		case "_ba":
			return d.numbers(nil)
		case "_outcomes":
			if !d.CCB {
				return d.errorf(`"_outcomes" (a multi-slot event) needs a --ccb_explore_adf policy`)
			}
			return d.slotOutcomes(e)
		case "pdf":
			return d.errorf("%q is not supported (continuous actions are not)", key)
		}
		if bytes.HasPrefix(key, []byte("_label")) {
			if err, ok := d.labelKey(key); ok {
				return err
			}
		}
		return d.skip() // VW ignores every other key
	})
}

// labelKey handles the "_label*" keys. ok is false for "_label..." keys VW
// ignores at the top level.
func (d *DSJSONParser) labelKey(key []byte) (err error, ok bool) {
	switch {
	case len(key) > 7 && key[6] == '_':
		return d.labelProperty(key[7:]), true
	case len(key) == 6:
		return d.errorf(`"_label" is not supported; use "_label_cost" and "_label_probability"`), true
	case bytesEqualFold(key, "_labelIndex"):
		if d.peek() == 'n' {
			return d.null(), true
		}
		n, err := d.uint()
		d.label.index = n
		return err, true
	}
	return nil, false
}

// labelProperty parses "_label_<prop>" (prop compared case-insensitively,
// as VW).
func (d *DSJSONParser) labelProperty(prop []byte) error {
	if len(prop) >= 2 && string(prop[:2]) == "ca" {
		return d.errorf("_label_%s is not supported (continuous actions are not)", prop)
	}
	if d.peek() == 'n' {
		return d.null()
	}
	if d.peek() == '"' {
		return d.errorf("_label_%s is a string; VW only accepts \"NaN\" there, which cannot be learned", prop)
	}
	n, _, err := d.number()
	if err != nil {
		return err
	}
	switch {
	case bytesEqualFold(prop, "cost"):
		if math.IsInf(float64(n.value), 0) {
			return d.errorf("_label_cost %v overflows float32", n.value)
		}
		d.label.cost, d.label.hasCost = n.value, true
	case bytesEqualFold(prop, "probability"):
		if !(n.value > 0 && n.value <= 1) {
			return d.errorf("_label_probability %v is not in (0, 1]", n.value)
		}
		d.label.prob, d.label.hasProb = n.value, true
	case bytesEqualFold(prop, "action"):
		// VW keeps it but cb_explore_adf uses _labelIndex.
	default:
		return d.errorf("label property _label_%s is not supported", prop)
	}
	return nil
}

// applyLabel labels e at the end of "c", where VW injects the label: labels
// given after "c" are never applied.
func (d *DSJSONParser) applyLabel(e *Event) error {
	l := d.label
	if l.index >= e.n {
		return fmt.Errorf("_labelIndex %d is out of range: %d actions", l.index, e.n)
	}
	if !l.hasCost && !l.hasProb {
		return nil
	}
	if l.index < 0 {
		return errors.New(`the label has no "_labelIndex" before "c" (VW: only one cost can be known)`)
	}
	if !l.hasCost || !l.hasProb {
		return errors.New(`a label needs both "_label_cost" and "_label_probability"`)
	}
	e.SetLabel(l.index, l.cost, l.prob)
	return nil
}

// Where an object is: it decides which "_" keys mean something.
const (
	ctxShared    = iota // the top of "c"
	ctxAction           // the top of a "_multi" element
	ctxSlot             // the top of a "_slots" element
	ctxNamespace        // any nested object
)

// object parses a JSON object of features into x (VW's DefaultState).
func (d *DSJSONParser) object(e *Event, x *Example, where int) error {
	if err := d.open('{', "'{'"); err != nil {
		return err
	}
	defer func() { d.depth-- }()
	if d.ws(); d.peek() == '}' {
		d.pos++
		return nil
	}
	for {
		if done := d.flatMembers(x); done {
			return nil
		}
		// A member flatMembers leaves to the general path, which also
		// reports every syntax error.
		if d.ws(); d.peek() != '"' {
			return d.errorf("expected a key")
		}
		key, err := d.string(&d.key)
		if err != nil {
			return err
		}
		if err := d.expect(':', "':' after the key"); err != nil {
			return err
		}
		d.ws()
		if err := d.member(e, x, where, key); err != nil {
			return err
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			return d.errorf("expected ',' or '}' in object%s", d.atEnd())
		}
	}
}

// flatMembers is the fast path of object for the members that make up most
// of a DSJson line: "key":"string" and "key":number without escapes or
// whitespace surprises. It adds them to x and stops, with d.pos at the next
// member, at anything else, which object parses; done reports that it
// consumed the closing '}'. It never fails: malformed input is left to the
// general path to report.
func (d *DSJSONParser) flatMembers(x *Example) (done bool) {
	s, pos := d.s, d.pos
	for {
		pos = skipWS(s, pos)
		if pos >= len(s) || s[pos] != '"' {
			return false
		}
		start := pos
		i := pos + 1
		for i < len(s) && !strStop[s[i]] {
			i++
		}
		if i == len(s) || s[i] != '"' || i == pos+1 || s[pos+1] == '_' {
			return false // an escape, an empty or special key, or the end
		}
		key := s[pos+1 : i]
		pos = skipWS(s, i+1)
		if pos >= len(s) || s[pos] != ':' {
			d.pos = start
			return false
		}
		pos = skipWS(s, pos+1)
		if pos >= len(s) {
			d.pos = start
			return false
		}
		switch c := s[pos]; {
		case c == '"':
			j := pos + 1
			for j < len(s) && !strStop[s[j]] {
				j++
			}
			if j == len(s) || s[j] != '"' {
				d.pos = start
				return false
			}
			addString(x, key, s[pos+1:j], false)
			pos = j + 1
		case c == '-' || c-'0' <= 9:
			v, used, ok := shortFeatureValue(s[pos:])
			if !ok {
				d.pos = start
				return false
			}
			addNumber(x, key, v, false)
			pos += used
		default:
			d.pos = start
			return false
		}
		pos = skipWS(s, pos)
		if pos >= len(s) {
			d.pos = pos
			return false
		}
		switch s[pos] {
		case ',':
			pos++
			d.pos = pos
		case '}':
			d.pos = pos + 1
			return true
		default:
			d.pos = pos
			return false
		}
	}
}

// skipWS returns the position of the first non-whitespace byte of s from
// pos on.
func skipWS(s []byte, pos int) int {
	for pos < len(s) {
		if c := s[pos]; c > ' ' || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			return pos
		}
		pos++
	}
	return pos
}

// member parses the value of one member of a feature object.
func (d *DSJSONParser) member(e *Event, x *Example, where int, key []byte) error {
	if len(key) > 0 && key[0] == '_' {
		return d.special(e, x, where, key)
	}
	switch c := d.peek(); {
	case c == '{':
		x.pushBytes(key)
		err := d.object(e, x, ctxNamespace)
		x.pop()
		return err
	case c == '[':
		return d.array(e, x, key)
	case c == '"':
		v, err := d.string(&d.str)
		if err == nil {
			addString(x, key, v, true)
		}
		return err
	case c == 't' || c == 'f':
		b, err := d.boolean()
		if b {
			addNumber(x, key, 1, true)
		}
		return err
	case c == 'n':
		return d.null()
	}
	// Like VW, a number beyond float32 becomes an infinite feature.
	n, _, err := d.number()
	if err == nil {
		addNumber(x, key, n.value, true)
	}
	return err
}

// special handles keys starting with '_' inside "c".
func (d *DSJSONParser) special(e *Event, x *Example, where int, key []byte) error {
	switch {
	case bytes.HasPrefix(key, []byte("_label")):
		if err, ok := d.labelKey(key); ok {
			return err
		}
		return d.errorf("unsupported key %q", key)
	case string(key) == "_text":
		v, err := d.string(&d.str)
		if err == nil {
			x.text(v)
		}
		return err
	case string(key) == "_multi":
		if where != ctxShared {
			return d.errorf(`"_multi" must be at the top of "c"`)
		}
		if e.n > 0 {
			return d.errorf(`"_multi" appears twice`)
		}
		return d.elements(func() error {
			if d.peek() != '{' {
				return d.errorf(`"_multi" elements must be objects`)
			}
			return d.object(e, e.AddAction(), ctxAction)
		})
	case bytesEqualFold(key, "_tag"):
		v, err := d.string(&d.str)
		switch {
		case err != nil:
		case x == &e.shared:
			e.tag = append(e.tag, v...)
		case where == ctxSlot:
			d.slot.tag = append(d.slot.tag, v...)
		}
		return err
	case string(key) == "_slots":
		if !d.CCB {
			return d.errorf(`"_slots" (a multi-slot event) needs a --ccb_explore_adf policy`)
		}
		if where != ctxShared {
			return d.errorf(`"_slots" must be at the top of "c"`)
		}
		if e.nslots > 0 {
			return d.errorf(`"_slots" appears twice`)
		}
		return d.elements(func() error {
			if d.peek() != '{' {
				return d.errorf(`"_slots" elements must be objects`)
			}
			e.AddSlot()
			d.slot = e.slots[e.nslots-1]
			err := d.object(e, &d.slot.x, ctxSlot)
			d.slot = nil
			return err
		})
	case bytesEqualFold(key, "_inc") && where == ctxSlot:
		return d.uints(&d.slot.inc)
	case string(key) == "_graph", string(key) == "_slot_id", bytesEqualFold(key, "__aid"):
		return d.errorf("%q is not supported", key)
	}
	return d.skip()
}

// array parses "key":[...] (VW's ArrayState): numbers become features of
// namespace key indexed by position, objects are namespaces named key.
func (d *DSJSONParser) array(e *Event, x *Example, key []byte) error {
	x.pushBytes(key)
	defer x.pop()
	i := 0
	return d.elements(func() error {
		switch c := d.peek(); {
		case c == '{':
			f := x.top()
			x.pushFrame(*f)
			err := d.object(e, x, ctxNamespace)
			x.pop()
			return err
		case c == 'n':
			return d.null()
		case c == '[':
			return d.errorf("nested arrays are not supported")
		case c == '"' || c == 't' || c == 'f':
			return d.errorf("feature arrays hold numbers or objects")
		}
		n, _, err := d.number()
		if err == nil {
			x.arrayNumber(i, n.value)
			i++
		}
		return err
	})
}

// actionIDs parses "a": VW only checks that it is not empty.
func (d *DSJSONParser) actionIDs() error {
	if d.peek() != '[' {
		if d.peek() == 'n' {
			return d.null()
		}
		id, err := d.uint()
		d.nActions++
		d.ids = append(d.ids, id)
		return err
	}
	return d.elements(func() error {
		id, err := d.uint()
		d.nActions++
		d.ids = append(d.ids, id)
		return err
	})
}

// numbers parses an array of numbers (or one number, or null), as VW's
// ArrayToVectorState; VW does not use the values, which are appended to
// *dst unless dst is nil.
func (d *DSJSONParser) numbers(dst *[]float32) error {
	one := func() error {
		n, null, err := d.number()
		if err == nil && !null && dst != nil {
			*dst = append(*dst, n.value)
		}
		return err
	}
	if d.peek() != '[' {
		return one()
	}
	return d.elements(one)
}

// --- JSON scanning -------------------------------------------------------

func (d *DSJSONParser) peek() byte {
	if d.pos < len(d.s) {
		return d.s[d.pos]
	}
	return 0
}

// ws skips JSON whitespace.
func (d *DSJSONParser) ws() {
	for d.pos < len(d.s) {
		if c := d.s[d.pos]; c > ' ' || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			return
		}
		d.pos++
	}
}

// atEnd explains an error at the end of the line.
func (d *DSJSONParser) atEnd() string {
	if d.pos >= len(d.s) {
		return " (unexpected end of line)"
	}
	return ""
}

func (d *DSJSONParser) expect(c byte, what string) error {
	d.ws()
	if d.peek() != c {
		if d.pos >= len(d.s) {
			return d.errorf("unexpected end of line, expected %s", what)
		}
		return d.errorf("expected %s, found %q", what, d.s[d.pos])
	}
	d.pos++
	return nil
}

// open consumes the opening c of an object or array and checks the
// nesting depth, which the caller decrements when it is done.
func (d *DSJSONParser) open(c byte, what string) error {
	if err := d.expect(c, what); err != nil {
		return err
	}
	if d.depth++; d.depth > maxDepth {
		return d.errorf("nesting deeper than %d", maxDepth)
	}
	return nil
}

// members parses an object, calling member with each key; member must parse
// the value. The key is valid until the value is parsed.
func (d *DSJSONParser) members(member func(key []byte) error) error {
	if err := d.open('{', "'{'"); err != nil {
		return err
	}
	defer func() { d.depth-- }()
	if d.ws(); d.peek() == '}' {
		d.pos++
		return nil
	}
	for {
		if d.ws(); d.peek() != '"' {
			return d.errorf("expected a key")
		}
		key, err := d.string(&d.key)
		if err != nil {
			return err
		}
		if err := d.expect(':', "':' after the key"); err != nil {
			return err
		}
		d.ws()
		if err := member(key); err != nil {
			return err
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			return d.errorf("expected ',' or '}' in object%s", d.atEnd())
		}
	}
}

// elements parses an array, calling element for each value.
func (d *DSJSONParser) elements(element func() error) error {
	if err := d.expect('[', "'['"); err != nil {
		return err
	}
	if d.depth++; d.depth > maxDepth {
		return d.errorf("nesting deeper than %d", maxDepth)
	}
	defer func() { d.depth-- }()
	if d.ws(); d.peek() == ']' {
		d.pos++
		return nil
	}
	for {
		d.ws()
		if err := element(); err != nil {
			return err
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			return nil
		default:
			return d.errorf("expected ',' or ']' in array%s", d.atEnd())
		}
	}
}

// skip parses and discards any JSON value.
func (d *DSJSONParser) skip() error {
	switch c := d.peek(); {
	case c == '{':
		return d.members(func([]byte) error { return d.skip() })
	case c == '[':
		return d.elements(d.skip)
	case c == '"':
		_, err := d.string(&d.str)
		return err
	case c == 't' || c == 'f':
		_, err := d.boolean()
		return err
	case c == 'n':
		return d.null()
	}
	_, _, err := d.number()
	return err
}

func (d *DSJSONParser) literal(word string) bool {
	if bytes.HasPrefix(d.s[d.pos:], []byte(word)) {
		d.pos += len(word)
		return true
	}
	return false
}

func (d *DSJSONParser) null() error {
	if !d.literal("null") {
		return d.errorf("invalid value")
	}
	return nil
}

func (d *DSJSONParser) boolean() (bool, error) {
	switch {
	case d.literal("true"):
		return true, nil
	case d.literal("false"):
		return false, nil
	}
	return false, d.errorf("expected true or false")
}

// number parses a number, or null (null is true then).
func (d *DSJSONParser) number() (n jsonNumber, null bool, err error) {
	if d.peek() == 'n' {
		return n, true, d.null()
	}
	if c := d.peek(); c != '-' && (c < '0' || c > '9') {
		return n, false, d.errorf("expected a number")
	}
	n, used, err := parseNumber(d.s[d.pos:])
	d.pos += used
	if err != nil {
		return n, false, d.errorf("%v", err)
	}
	return n, false, nil
}

// uint parses an unsigned 32-bit integer, which VW's uint-only keys
// ("_labelIndex", action ids) require.
func (d *DSJSONParser) uint() (int, error) {
	start := d.pos
	if c := d.peek(); c < '0' || c > '9' {
		return 0, d.errorf("expected an unsigned integer")
	}
	n, _, err := d.number()
	if err != nil {
		return 0, err
	}
	if n.kind != numUint {
		d.pos = start
		return 0, d.errorf("expected an unsigned integer")
	}
	return int(n.u), nil
}

func (d *DSJSONParser) stringOrNull() ([]byte, bool, error) {
	if d.peek() == 'n' {
		return nil, true, d.null()
	}
	s, err := d.string(&d.str)
	return s, false, err
}

// strStop marks the bytes that end the fast scan of a JSON string: the
// closing quote, an escape and the control characters JSON forbids.
var strStop = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// string parses a JSON string. Without escapes it returns a slice of the
// line; otherwise it unescapes into *buf.
func (d *DSJSONParser) string(buf *[]byte) ([]byte, error) {
	if d.peek() != '"' {
		return nil, d.errorf("expected a string")
	}
	s := d.s
	start := d.pos + 1
	i := start
	for i < len(s) && !strStop[s[i]] {
		i++
	}
	switch {
	case i == len(s):
		d.pos = i
		return nil, d.errorf("unterminated string")
	case s[i] == '"':
		d.pos = i + 1
		return s[start:i], nil
	case s[i] == '\\':
		d.pos = i
		*buf = append((*buf)[:0], s[start:i]...)
		return d.unescape(buf)
	}
	d.pos = i
	return nil, d.errorf("control character in string")
}

func (d *DSJSONParser) unescape(buf *[]byte) ([]byte, error) {
	b := *buf
	defer func() { *buf = b }()
	for d.pos < len(d.s) {
		c := d.s[d.pos]
		d.pos++
		switch {
		case c == '"':
			return b, nil
		case c < 0x20:
			return nil, d.errorf("control character in string")
		case c != '\\':
			b = append(b, c)
			continue
		}
		if d.pos >= len(d.s) {
			break
		}
		c = d.s[d.pos]
		d.pos++
		switch c {
		case '"', '\\', '/':
			b = append(b, c)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return nil, d.errorf("invalid \\u escape")
			}
			if r >= 0xD800 && r <= 0xDFFF {
				// Only a high surrogate followed by a low one is valid.
				if r > 0xDBFF || !d.literal(`\u`) {
					return nil, d.errorf("invalid surrogate in \\u escape")
				}
				r2, ok := d.hex4()
				if !ok || r2 < 0xDC00 || r2 > 0xDFFF {
					return nil, d.errorf("invalid surrogate in \\u escape")
				}
				r = (r-0xD800)<<10 | (r2 - 0xDC00) + 0x10000
			}
			b = utf8.AppendRune(b, r)
		default:
			return nil, d.errorf("invalid escape \\%c", c)
		}
	}
	return nil, d.errorf("unterminated string")
}

func (d *DSJSONParser) hex4() (rune, bool) {
	if d.pos+4 > len(d.s) {
		return 0, false
	}
	var r rune
	for _, c := range d.s[d.pos : d.pos+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	d.pos += 4
	return r, true
}

// bytesEqualFold compares ASCII case-insensitively, as C's strcasecmp.
func bytesEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
