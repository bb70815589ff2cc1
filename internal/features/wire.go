package features

import (
	"encoding/binary"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// WireContext renders the DSJson "c" object of a Rank request straight
// from its protobuf wire bytes, without decoding it into messages: the
// bytes [AppendContext] gives for the request's context features and its
// eligible actions (those [Excluded] leaves). It reuses its memory from
// one request to the next. The zero value is ready to use.
//
// It handles the bytes every protobuf encoder writes for a valid request:
// known fields of the declared wire types, a namespace's name before its
// features, a feature's name before its value, each at most once, every
// string UTF-8. For anything else (malformed or truncated bytes, unknown
// or repeated fields, invalid UTF-8, an excluded id naming no action) it
// declines, and the caller decodes the request to learn what the bytes
// mean: a context rendered from the messages, or an error.
type WireContext struct {
	context  [][]byte                 // the context namespaces' bytes
	bodies   [][]byte                 // the actions' bytes
	actions  []personalizerv1.Action  // the actions, their ids only
	ptrs     []*personalizerv1.Action // pointers to actions, for Excluded
	ids      []string                 // excluded_actions
	excluded []bool
	discard  []byte // where excluded actions are rendered, to check them
}

// Append appends the context of the request whose wire bytes are req to
// b, and returns it with the number of eligible actions; ok is false, and
// b as it was, when it declines req. The result's strings do not point
// into req.
func (w *WireContext) Append(b, req []byte) (out []byte, eligible int, ok bool) {
	defer w.reset()
	if !w.scan(req) {
		return b, 0, false
	}
	excluded, eligible, unknown := Excluded(w.excluded, w.ptrs, w.ids)
	w.excluded = excluded
	if unknown >= 0 {
		return b, 0, false
	}
	start := len(b)
	b = append(b, '{')
	first := true
	for _, ns := range w.context {
		if b, first, ok = appendWireNamespace(b, ns, "", first); !ok {
			return b[:start], 0, false
		}
	}
	if !first {
		b = append(b, ',')
	}
	b = append(b, `"_multi":[`...)
	first = true
	for i, body := range w.bodies {
		if excluded[i] {
			// Not rendered, but checked as decoding would check it.
			if w.discard, ok = appendWireAction(w.discard[:0], body, w.actions[i].Id); !ok {
				return b[:start], 0, false
			}
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		if b, ok = appendWireAction(b, body, w.actions[i].Id); !ok {
			return b[:start], 0, false
		}
	}
	return append(b, "]}"...), eligible, true
}

// scan reads the request's fields: the context namespaces and actions (to
// render afterwards), the actions' ids and the excluded ids, and checks
// the event id.
func (w *WireContext) scan(req []byte) bool {
	for len(req) > 0 {
		num, typ, n := protowire.ConsumeTag(req)
		if n < 0 {
			return false
		}
		req = req[n:]
		if num == 5 { // defer_activation
			if typ != protowire.VarintType {
				return false
			}
			if _, n = protowire.ConsumeVarint(req); n < 0 {
				return false
			}
			req = req[n:]
			continue
		}
		if typ != protowire.BytesType {
			return false
		}
		v, n := protowire.ConsumeBytes(req)
		if n < 0 {
			return false
		}
		req = req[n:]
		switch num {
		case 1:
			w.context = append(w.context, v)
		case 2:
			id, ok := wireActionID(v)
			if !ok {
				return false
			}
			w.bodies = append(w.bodies, v)
			w.actions = append(w.actions, personalizerv1.Action{})
			w.actions[len(w.actions)-1].Id = id
		case 3:
			if !utf8.Valid(v) {
				return false
			}
			w.ids = append(w.ids, wireString(v))
		case 4: // event_id
			if !utf8.Valid(v) {
				return false
			}
		default:
			return false
		}
	}
	for i := range w.actions { // once w.actions has stopped growing
		w.ptrs = append(w.ptrs, &w.actions[i])
	}
	return true
}

// reset drops what points into the last request, and the memory a rare
// large one made it take.
func (w *WireContext) reset() {
	if max(cap(w.context), cap(w.actions), cap(w.ids)) > keepWireItems || cap(w.discard) > keepWireBytes {
		*w = WireContext{}
		return
	}
	clear(w.context)
	clear(w.bodies)
	clear(w.ids)
	for i := range w.actions {
		w.actions[i].Id = ""
	}
	w.context, w.bodies, w.actions, w.ptrs, w.ids = w.context[:0], w.bodies[:0], w.actions[:0], w.ptrs[:0], w.ids[:0]
}

// What a WireContext keeps from one request to the next, at most.
const (
	keepWireItems = 256     // namespaces, actions, excluded ids
	keepWireBytes = 1 << 16 // an excluded action rendered
)

// wireActionID returns the id of the action whose bytes are b, checking
// its fields but not its namespaces' insides.
func wireActionID(b []byte) (id string, ok bool) {
	seen := false
	for len(b) > 0 {
		num, v, n := consumeWireBytes(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		switch {
		case num == 1 && !seen && utf8.Valid(v):
			id, seen = wireString(v), true
		case num != 2:
			return "", false
		}
	}
	return id, true
}

// appendWireAction appends the "_multi" element of the action whose bytes
// are body and whose id is id.
func appendWireAction(b, body []byte, id string) ([]byte, bool) {
	b = append(b, `{"_tag":`...)
	b = AppendString(b, id)
	b = append(b, `,"`+idNamespace+`":{"constant":1,"id":`...)
	b = AppendString(b, id)
	b = append(b, '}')
	for len(body) > 0 {
		num, v, n := consumeWireBytes(body)
		if n < 0 {
			return b, false
		}
		body = body[n:]
		if num == 2 {
			var ok bool
			if b, _, ok = appendWireNamespace(b, v, ActionNamespace, false); !ok {
				return b, false
			}
		}
	}
	return append(b, '}'), true
}

// appendWireNamespace appends the namespace whose bytes are ns as
// AppendContext does: under its name, or under unnamed when it has none;
// a context namespace (unnamed "") without a name puts its features in
// the object itself. first tells whether nothing precedes in the object.
func appendWireNamespace(b, ns []byte, unnamed string, first bool) ([]byte, bool, bool) {
	name := unnamed
	if num, v, n := consumeWireBytes(ns); n > 0 && num == 1 {
		if !utf8.Valid(v) {
			return b, first, false
		}
		if len(v) > 0 {
			name = wireString(v)
		}
		ns = ns[n:]
	}
	inline := name == ""
	if !inline {
		if !first {
			b = append(b, ',')
		}
		b = AppendString(b, name)
		b = append(b, ":{"...)
		first = true
	}
	for len(ns) > 0 {
		num, v, n := consumeWireBytes(ns)
		if n < 0 || num != 2 {
			return b, first, false
		}
		ns = ns[n:]
		if !first {
			b = append(b, ',')
		}
		first = false
		var ok bool
		if b, ok = appendWireFeature(b, v); !ok {
			return b, first, false
		}
	}
	if inline {
		return b, first, true
	}
	return append(b, '}'), false, true
}

// appendWireFeature appends "name":value for the feature whose bytes are
// b: its name first, then at most one value.
func appendWireFeature(b, f []byte) ([]byte, bool) {
	var name []byte
	if num, v, n := consumeWireBytes(f); n > 0 && num == 1 {
		name, f = v, f[n:]
	}
	b, ok := appendWireString(b, name)
	if !ok {
		return b, false
	}
	b = append(b, ':')
	if len(f) == 0 {
		return append(b, "null"...), true
	}
	// One value, nothing after it.
	switch f[0] {
	case byte(3<<3 | protowire.Fixed64Type):
		if len(f) != 9 {
			return b, false
		}
		return AppendNumber(b, math.Float64frombits(binary.LittleEndian.Uint64(f[1:]))), true
	case byte(4<<3 | protowire.VarintType):
		v, n := protowire.ConsumeVarint(f[1:])
		if n < 0 || 1+n != len(f) {
			return b, false
		}
		return strconv.AppendBool(b, v != 0), true
	}
	num, v, n := consumeWireBytes(f)
	if n != len(f) || num != 2 {
		return b, false
	}
	return appendWireString(b, v)
}

// appendWireString appends the string field v as AppendString does, or
// reports false if it is not UTF-8.
func appendWireString(b, v []byte) ([]byte, bool) {
	for _, c := range v {
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			if !utf8.Valid(v) {
				return b, false
			}
			return AppendString(b, wireString(v)), true
		}
	}
	// Printable ASCII, most strings: nothing to escape.
	b = append(b, '"')
	b = append(b, v...)
	return append(b, '"'), true
}

// consumeWireBytes reads a length-delimited field: its number, its bytes
// and how many bytes it took, or n < 0 when b does not start with one.
func consumeWireBytes(b []byte) (num protowire.Number, v []byte, n int) {
	// Most fields have a one-byte tag and length.
	if len(b) >= 2 && b[0]&7 == byte(protowire.BytesType) && b[0] >= 1<<3 && b[0] < 0x80 && b[1] < 0x80 && int(b[1]) <= len(b)-2 {
		return protowire.Number(b[0] >> 3), b[2 : 2+b[1]], 2 + int(b[1])
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || typ != protowire.BytesType {
		return 0, nil, -1
	}
	v, k := protowire.ConsumeBytes(b[n:])
	if k < 0 {
		return 0, nil, -1
	}
	return num, v, n + k
}

// wireString is b as a string sharing its memory, for the time b does not
// change.
func wireString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
