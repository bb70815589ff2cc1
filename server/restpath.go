package server

import (
	"encoding/json"
	"fmt"
	"strings"
)

// typeError reports a JSON value of the wrong type in body, as found by
// encoding/json, naming it by its full path in the request (actions[1].id):
// the error's own Field has no array indices ("actions.id"). body is valid
// JSON, since encoding/json checks the syntax before it decodes anything.
func typeError(body []byte, e *json.UnmarshalTypeError) error {
	path := valuePath(body, int(e.Offset))
	want := jsonKind(e.Type.Kind().String())
	var reason string
	switch {
	case strings.HasPrefix(e.Value, "number ") && want == "a number": // too large for a float64
		reason = fmt.Sprintf("%s is out of range", e.Value)
	case path == "":
		reason = fmt.Sprintf("the request body must be %s, not a JSON %s", want, e.Value)
	default:
		reason = fmt.Sprintf("must be %s, not a JSON %s", want, e.Value)
	}
	return invalid(path, "%s", reason)
}

// valuePath returns the path, in JSON's spelling (actions[1].id; "" for
// the whole body), of the innermost value of the valid JSON b that
// contains offset off, that is whose first byte is before off and whose
// last byte is at or before it. That is the value an
// [json.UnmarshalTypeError]'s Offset points into: just past a literal, or
// just past the opening bracket of an array or object.
func valuePath(b []byte, off int) string {
	p := pathFinder{w: walker{b: b}, off: off}
	p.w.skipSpace()
	p.value("")
	return p.path
}

// pathFinder walks one JSON value with a walker, which reads JSON that is
// known to be valid.
type pathFinder struct {
	w     walker
	off   int
	path  string
	found bool
}

// value reads the value at w, whose path is path, and stops as soon as the
// value containing off is found.
func (p *pathFinder) value(path string) {
	w := &p.w
	start := w.i
	switch w.b[w.i] {
	case '{':
		w.i++
		for w.skipSpace() != '}' {
			if w.b[w.i] == ',' {
				w.i++
				w.skipSpace()
			}
			key := w.str()
			w.skipSpace() // before ':'
			w.i++
			w.skipSpace()
			if path != "" {
				key = path + "." + key
			}
			if p.value(key); p.found {
				return
			}
		}
		w.i++
	case '[':
		w.i++
		for i := 0; w.skipSpace() != ']'; i++ {
			if w.b[w.i] == ',' {
				w.i++
				w.skipSpace()
			}
			if p.value(fmt.Sprintf("%s[%d]", path, i)); p.found {
				return
			}
		}
		w.i++
	case '"':
		w.str()
	default: // number, true, false, null
		for w.i < len(w.b) && !strings.ContainsRune(",]} \t\n\r", rune(w.b[w.i])) {
			w.i++
		}
	}
	if start < p.off && p.off <= w.i {
		p.path, p.found = path, true
	}
}
