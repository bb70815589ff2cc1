package features

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Awkward parts of generated requests: JSON escapes, control characters,
// unicode beyond the BMP and separators, and floats at the edges of their
// shortest text (NaN and infinities are refused upstream, and render as 0).
var (
	wireStrings = []string{"", "plain", "7", "-1.5", `q"b\s`, "tab\tnl\ncr\r", "\x00\x1f\x7f", "\x08\x0c", "ünï©ode ✓",
		"😀 emoji", "\u2028\u2029", "a:b|c d", "_multi", "j", "i", "\ufffd", "é" + string(rune(0x10ffff))}
	wireNumbers = []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 0.1 + 0.2, 1e21, 1e20, 999999, 1e6, 1234567, 123456789012345678,
		1e-4, 1e-5, 1e-7, 1e-300, 5e-324, -5e-324, math.MaxFloat64, -math.MaxFloat64, 2.2250738585072014e-308,
		-2.2250738585072014e-308, 1.0 / 3, 100, 0.5, 9007199254740993, math.NaN(), math.Inf(1), math.Inf(-1)}
)

func wireFeature(r *rand.Rand) *personalizerv1.Feature {
	f := &personalizerv1.Feature{Name: wireStrings[r.IntN(len(wireStrings))]}
	switch r.IntN(5) {
	case 0:
		f.Value = &personalizerv1.Feature_StringValue{StringValue: wireStrings[r.IntN(len(wireStrings))]}
	case 1:
		f.Value = &personalizerv1.Feature_NumberValue{NumberValue: wireNumbers[r.IntN(len(wireNumbers))]}
	case 2:
		f.Value = &personalizerv1.Feature_NumberValue{NumberValue: math.Float64frombits(r.Uint64())}
	case 3:
		f.Value = &personalizerv1.Feature_BoolValue{BoolValue: r.IntN(2) == 0}
	} // else no value
	return f
}

func wireNamespaces(r *rand.Rand) []*personalizerv1.Namespace {
	var nss []*personalizerv1.Namespace
	for range r.IntN(4) {
		ns := &personalizerv1.Namespace{}
		if r.IntN(3) > 0 {
			ns.Name = wireStrings[r.IntN(len(wireStrings))]
		}
		for range r.IntN(6) {
			ns.Features = append(ns.Features, wireFeature(r))
		}
		nss = append(nss, ns)
	}
	return nss
}

// wireRequest is a random request made of the awkward parts: namespaces
// unnamed, empty or without features, features without a value, actions
// without features or with the same id, excluded actions (some named
// twice, some all of them).
func wireRequest(r *rand.Rand) *personalizerv1.RankRequest {
	req := &personalizerv1.RankRequest{ContextFeatures: wireNamespaces(r), DeferActivation: r.IntN(2) == 0}
	if r.IntN(2) == 0 {
		req.EventId = proto.String(wireStrings[r.IntN(len(wireStrings))])
	}
	for i := range r.IntN(6) {
		a := &personalizerv1.Action{Id: fmt.Sprint(i), Features: wireNamespaces(r)}
		if r.IntN(4) == 0 {
			a.Id = wireStrings[r.IntN(len(wireStrings))]
		}
		req.Actions = append(req.Actions, a)
	}
	for range r.IntN(3) {
		if len(req.Actions) > 0 {
			req.ExcludedActions = append(req.ExcludedActions, req.Actions[r.IntN(len(req.Actions))].Id)
		}
	}
	return req
}

// TestWireContextIsAppendContext checks that the context rendered from a
// request's wire bytes is, byte for byte, the one AppendContext renders
// from the decoded request and its eligible actions, for 20,000 random
// awkward requests, with the same WireContext throughout and the output
// appended to bytes already there.
func TestWireContextIsAppendContext(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	var w WireContext
	prefix := []byte("prefix")
	for i := range 20000 {
		req := wireRequest(r)
		wire, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		excluded, eligible, unknown := Excluded(nil, req.Actions, req.ExcludedActions)
		if unknown >= 0 {
			t.Fatalf("request %d: excluded id %d names no action", i, unknown)
		}
		want := AppendContext(bytes.Clone(prefix), req.ContextFeatures, Eligible(nil, req.Actions, excluded))
		got, n, ok := w.Append(bytes.Clone(prefix), wire)
		if !ok || n != eligible || !bytes.Equal(got, want) {
			t.Fatalf("request %d (%v): ok %v, %d eligible (want %d)\ngot  %s\nwant %s", i, req, ok, n, eligible, got, want)
		}
	}
}

// TestWireContextDeclines checks that bytes a protobuf encoder does not
// write for a valid request, or that the rendering cannot tell the
// meaning of without decoding, are declined, b left as it was: malformed
// or truncated bytes, unknown or mistyped fields, a field given twice or
// out of order, invalid UTF-8 anywhere, an excluded id naming no action.
func TestWireContextDeclines(t *testing.T) {
	t.Parallel()
	tag := protowire.AppendTag
	str := func(b []byte, num protowire.Number, s string) []byte {
		return protowire.AppendString(tag(b, num, protowire.BytesType), s)
	}
	msg := func(b []byte, num protowire.Number, m []byte) []byte {
		return protowire.AppendBytes(tag(b, num, protowire.BytesType), m)
	}
	number := func(b []byte, v float64) []byte {
		return protowire.AppendFixed64(tag(b, 3, protowire.Fixed64Type), math.Float64bits(v))
	}
	feature := str(number(nil, 1.5), 1, "f") // value before name
	okFeature := number(str(nil, 1, "f"), 1.5)
	okNS := msg(str(nil, 1, "N"), 2, okFeature)
	okAction := msg(str(nil, 1, "a"), 2, msg(nil, 2, okFeature))
	okReq := msg(msg(nil, 1, okNS), 2, okAction)
	var w WireContext
	if _, n, ok := w.Append(nil, okReq); !ok || n != 1 {
		t.Fatalf("the good request is declined")
	}
	cases := map[string][]byte{
		"truncated":                  okReq[:len(okReq)-1],
		"length past the end":        append(tag(nil, 1, protowire.BytesType), 0x7f, 1),
		"bad varint":                 append(tag(nil, 5, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"field 0":                    {0x02, 0x00},
		"unknown request field":      append(okReq, str(nil, 9, "x")...),
		"mistyped request field":     protowire.AppendVarint(tag(okReq, 4, protowire.VarintType), 1),
		"unknown namespace field":    msg(nil, 1, str(okNS, 3, "x")),
		"namespace name twice":       msg(nil, 1, str(okNS, 1, "M")),
		"namespace name after":       msg(nil, 1, str(msg(nil, 2, okFeature), 1, "N")),
		"feature value before name":  msg(nil, 1, msg(nil, 2, feature)),
		"feature with two values":    msg(nil, 1, msg(nil, 2, number(okFeature, 2))),
		"feature name twice":         msg(nil, 1, msg(nil, 2, str(str(nil, 1, "f"), 1, "g"))),
		"feature mistyped value":     msg(nil, 1, msg(nil, 2, protowire.AppendVarint(tag(str(nil, 1, "f"), 3, protowire.VarintType), 1))),
		"feature truncated number":   msg(nil, 1, msg(nil, 2, okFeature[:len(okFeature)-1])),
		"feature unknown field":      msg(nil, 1, msg(nil, 2, str(okFeature, 7, "x"))),
		"action id twice":            msg(nil, 2, str(okAction, 1, "b")),
		"action unknown field":       msg(nil, 2, str(okAction, 3, "x")),
		"invalid UTF-8 feature name": msg(nil, 1, msg(nil, 2, str(nil, 1, "\xff"))),
		"invalid UTF-8 value":        msg(nil, 1, msg(nil, 2, str(str(nil, 1, "f"), 2, "a\xc3"))),
		"invalid UTF-8 namespace":    msg(nil, 1, str(nil, 1, "\xed\xa0\x80")),
		"invalid UTF-8 action id":    msg(nil, 2, str(nil, 1, "\xff")),
		"invalid UTF-8 excluded id":  str(okReq, 3, "\xff"),
		"invalid UTF-8 event id":     str(okReq, 4, "\xff"),
		"invalid UTF-8 in excluded":  str(msg(okReq, 2, msg(str(nil, 1, "x"), 2, msg(nil, 2, str(nil, 1, "\xff")))), 3, "x"),
		"malformed in excluded":      str(msg(okReq, 2, msg(str(nil, 1, "x"), 2, []byte{0x12, 0x05})), 3, "x"),
		"excluded id names nothing":  str(okReq, 3, "zz"),
		"a group":                    append(tag(nil, 6, protowire.StartGroupType), tag(nil, 6, protowire.EndGroupType)...),
	}
	for name, req := range cases {
		prefix := []byte("prefix")
		if got, _, ok := w.Append(prefix, req); ok || string(got) != "prefix" {
			t.Errorf("%s: ok %v, %q", name, ok, got)
		}
	}
	if _, n, ok := w.Append(nil, okReq); !ok || n != 1 {
		t.Fatalf("the good request is declined after the others")
	}
}

// BenchmarkWireContext renders the context of the seed's request shape
// (10 actions x 45 features, 50 context features; a third strings) from
// its wire bytes, and for comparison decodes it and renders it from the
// messages.
func BenchmarkWireContext(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	req := &personalizerv1.RankRequest{ContextFeatures: []*personalizerv1.Namespace{{Name: "User"}}}
	feats := func(prefix string, n int) (fs []*personalizerv1.Feature) {
		for i := range n {
			if i%3 == 0 {
				fs = append(fs, str(fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("v%d", r.IntN(100))))
			} else {
				fs = append(fs, num(fmt.Sprintf("%s%d", prefix, i), r.Float64()))
			}
		}
		return fs
	}
	req.ContextFeatures[0].Features = feats("u", 50)
	for i := range 10 {
		req.Actions = append(req.Actions, &personalizerv1.Action{Id: fmt.Sprintf("action-%d", i),
			Features: []*personalizerv1.Namespace{{Name: "Item", Features: feats("f", 45)}}})
	}
	wire, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("wire", func(b *testing.B) {
		var w WireContext
		var out []byte
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			out, _, _ = w.Append(out[:0], wire)
		}
	})
	b.Run("decoded", func(b *testing.B) {
		var out []byte
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			var m personalizerv1.RankRequest
			if err := proto.Unmarshal(wire, &m); err != nil {
				b.Fatal(err)
			}
			out = AppendContext(out[:0], m.ContextFeatures, m.Actions)
		}
	})
}

// TestWireContextLetsGoOfLargeRequests checks that a WireContext does not
// keep the memory a request of many actions made it take, and renders
// the next request as before.
func TestWireContextLetsGoOfLargeRequests(t *testing.T) {
	t.Parallel()
	large := &personalizerv1.RankRequest{}
	for i := range 1000 {
		large.Actions = append(large.Actions, &personalizerv1.Action{Id: fmt.Sprint(i)})
	}
	wire, err := proto.Marshal(large)
	if err != nil {
		t.Fatal(err)
	}
	var w WireContext
	if _, n, ok := w.Append(nil, wire); !ok || n != 1000 {
		t.Fatalf("ok %v, %d eligible", ok, n)
	}
	if cap(w.actions) != 0 || cap(w.bodies) != 0 || cap(w.ptrs) != 0 {
		t.Errorf("kept room for %d actions", cap(w.actions))
	}
	small, err := proto.Marshal(&personalizerv1.RankRequest{Actions: large.Actions[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if got, n, ok := w.Append(nil, small); !ok || n != 1 || string(got) != `{"_multi":[{"_tag":"0","i":{"constant":1,"id":"0"}}]}` {
		t.Errorf("then %s, %d, %v", got, n, ok)
	}
}
