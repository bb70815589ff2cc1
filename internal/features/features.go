// Package features maps the typed API features onto Vowpal Wabbit's JSON
// feature semantics, once for scoring ([Build], hashed into a bandit.Event)
// and once for the log ([AppendContext], the DSJson "c" object; the
// joiner renders it with [WireContext] from the request's wire bytes, to
// the same bytes). The two must agree feature for feature: the learner
// reads the log and the server scores with what the learner learned.
//
// The mapping is Personalizer's: context namespaces become namespaces of
// "c" (the unnamed one is VW's default namespace); each action becomes an
// element of "_multi" with "_tag" set to its id, namespace "i" holding
// {"constant":1,"id":<id>}, its unnamed namespace under "j" and its named
// namespaces as they are.
//
// features performs no I/O.
package features

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/open-personalizer/personalizer/bandit"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// ActionNamespace is where an action's unnamed features go, as in Personalizer.
const ActionNamespace = "j"

// idNamespace holds the action id features Personalizer added to every action.
const idNamespace = "i"

// Build fills e with the shared features of context and one action example
// per action, in order. e must be empty.
func Build(e *bandit.Event, context []*personalizerv1.Namespace, actions []*personalizerv1.Action) {
	sh := e.Shared()
	for _, ns := range context {
		sh.Namespace(ns.GetName())
		addFeatures(sh, ns.GetFeatures())
	}
	for _, a := range actions {
		x := e.AddAction()
		x.Namespace(idNamespace)
		x.Number("constant", 1)
		x.String("id", a.GetId())
		for _, ns := range a.GetFeatures() {
			name := ns.GetName()
			if name == "" {
				name = ActionNamespace
			}
			x.Namespace(name)
			addFeatures(x, ns.GetFeatures())
		}
	}
}

func addFeatures(x *bandit.Example, fs []*personalizerv1.Feature) {
	for _, f := range fs {
		switch v := f.GetValue().(type) {
		case *personalizerv1.Feature_StringValue:
			x.String(f.GetName(), v.StringValue)
		case *personalizerv1.Feature_NumberValue:
			x.Number(f.GetName(), v.NumberValue)
		case *personalizerv1.Feature_BoolValue:
			x.Bool(f.GetName(), v.BoolValue)
		}
	}
}

// Shape fills s with the shape of the event [Build] makes of context and
// actions: how many features each namespace of each example gets (Build
// drops numbers that are 0 as a float32, and false), without hashing any.
// The features a policy makes of a request are counted from it
// ([bandit.Policy.CountShape]) for what building the event would cost.
func Shape(s *bandit.Shape, context []*personalizerv1.Namespace, actions []*personalizerv1.Action) {
	s.Reset()
	for _, ns := range context {
		s.AddShared(bandit.NamespaceIndex(ns.GetName()), countFeatures(ns.GetFeatures()))
	}
	for _, a := range actions {
		s.AddAction()
		s.AddToAction(bandit.NamespaceIndex(idNamespace), 2) // "constant":1 and the id
		for _, ns := range a.GetFeatures() {
			name := ns.GetName()
			if name == "" {
				name = ActionNamespace
			}
			s.AddToAction(bandit.NamespaceIndex(name), countFeatures(ns.GetFeatures()))
		}
	}
}

// countFeatures is how many features addFeatures adds of fs.
func countFeatures(fs []*personalizerv1.Feature) int {
	n := 0
	for _, f := range fs {
		switch v := f.GetValue().(type) {
		case *personalizerv1.Feature_StringValue:
			n++
		case *personalizerv1.Feature_NumberValue:
			if float32(v.NumberValue) != 0 {
				n++
			}
		case *personalizerv1.Feature_BoolValue:
			if v.BoolValue {
				n++
			}
		}
	}
	return n
}

// AppendContext appends the DSJson "c" object for context and actions to b.
// Parsing it with the bandit DSJson reader gives the features [Build] gives.
func AppendContext(b []byte, context []*personalizerv1.Namespace, actions []*personalizerv1.Action) []byte {
	b = append(b, '{')
	first := true
	for _, ns := range context {
		if ns.GetName() == "" {
			b, first = appendFeatures(b, ns.GetFeatures(), first)
			continue
		}
		b, first = appendNamespace(b, ns.GetName(), ns.GetFeatures(), first)
	}
	if !first {
		b = append(b, ',')
	}
	b = append(b, `"_multi":[`...)
	for i, a := range actions {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"_tag":`...)
		b = AppendString(b, a.GetId())
		b = append(b, `,"i":{"constant":1,"id":`...)
		b = AppendString(b, a.GetId())
		b = append(b, '}')
		for _, ns := range a.GetFeatures() {
			name := ns.GetName()
			if name == "" {
				name = ActionNamespace
			}
			b, _ = appendNamespace(b, name, ns.GetFeatures(), false)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

func appendNamespace(b []byte, name string, fs []*personalizerv1.Feature, first bool) ([]byte, bool) {
	if !first {
		b = append(b, ',')
	}
	b = AppendString(b, name)
	b = append(b, ":{"...)
	b, _ = appendFeatures(b, fs, true)
	return append(b, '}'), false
}

func appendFeatures(b []byte, fs []*personalizerv1.Feature, first bool) ([]byte, bool) {
	for _, f := range fs {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = AppendString(b, f.GetName())
		b = append(b, ':')
		switch v := f.GetValue().(type) {
		case *personalizerv1.Feature_StringValue:
			b = AppendString(b, v.StringValue)
		case *personalizerv1.Feature_NumberValue:
			b = AppendNumber(b, v.NumberValue)
		case *personalizerv1.Feature_BoolValue:
			b = strconv.AppendBool(b, v.BoolValue)
		default:
			b = append(b, "null"...)
		}
	}
	return b, first
}

// AppendNumber appends v in the shortest form that parses back to the same
// float64, as strconv.AppendFloat(b, v, 'g', -1, 64) does. Non-finite
// values, which validation rejects, become 0.
func AppendNumber(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// AppendString appends s as a JSON string.
func AppendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
				i += size
				start = i
				continue
			}
			i += size
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\t':
			b = append(b, '\\', 't')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Excluded marks in dst (reused, resized to len(actions)) the actions
// whose id ids names. It returns the marks, how many actions are left
// eligible, and the index in ids of the first id that names no action (-1
// when every id names one). The server and the joiner both find a Rank's
// eligible actions with it, so that the ranking the server logs indexes
// the actions the joiner renders.
func Excluded(dst []bool, actions []*personalizerv1.Action, ids []string) (excluded []bool, eligible, unknown int) {
	excluded = append(dst[:0], make([]bool, len(actions))...)
	eligible = len(actions)
	for i, id := range ids {
		k := -1
		for j, a := range actions {
			if a.GetId() == id {
				k = j
				break
			}
		}
		if k < 0 {
			return excluded, eligible, i
		}
		if !excluded[k] {
			excluded[k] = true
			eligible--
		}
	}
	return excluded, eligible, -1
}

// Eligible appends to dst the actions excluded does not mark, in order.
func Eligible(dst []*personalizerv1.Action, actions []*personalizerv1.Action, excluded []bool) []*personalizerv1.Action {
	for i, a := range actions {
		if !excluded[i] {
			dst = append(dst, a)
		}
	}
	return dst
}

// ContextBound is at least len(AppendContext(nil, context, actions)),
// found without writing it: every string at its longest escaped form
// (6 bytes a byte, as control characters and invalid UTF-8 take), every
// number at the longest shortest form of a float64 (24 bytes).
func ContextBound(context []*personalizerv1.Namespace, actions []*personalizerv1.Action) int {
	n := len(`{,"_multi":[]}`)
	for _, ns := range context {
		n += namespaceBound(ns.GetName(), ns.GetFeatures())
	}
	for _, a := range actions {
		// ,{"_tag":<id>,"i":{"constant":1,"id":<id>}} and the namespaces
		n += len(`,{"_tag":,"i":{"constant":1,"id":}}`) + 2*stringBound(a.GetId())
		for _, ns := range a.GetFeatures() {
			n += namespaceBound(ActionNamespace, ns.GetFeatures()) + 6*len(ns.GetName())
		}
	}
	return n
}

// namespaceBound bounds `,<name>:{<features>}`.
func namespaceBound(name string, fs []*personalizerv1.Feature) int {
	n := len(`,:{}`) + stringBound(name)
	for _, f := range fs {
		n += len(`,:`) + stringBound(f.GetName()) + max(stringBound(f.GetStringValue()), len("-2.2250738585072014e-308"), len("false"))
	}
	return n
}

// stringBound bounds len(AppendString(nil, s)).
func stringBound(s string) int { return 6*len(s) + 2 }
