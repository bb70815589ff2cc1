package features

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/open-personalizer/personalizer/bandit"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func str(name, v string) *personalizerv1.Feature {
	return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_StringValue{StringValue: v}}
}
func num(name string, v float64) *personalizerv1.Feature {
	return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_NumberValue{NumberValue: v}}
}
func boolean(name string, v bool) *personalizerv1.Feature {
	return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_BoolValue{BoolValue: v}}
}

// request has every kind of feature and the awkward strings: JSON escapes,
// characters VW replaces in values, digits-only names, unicode.
func request() ([]*personalizerv1.Namespace, []*personalizerv1.Action) {
	context := []*personalizerv1.Namespace{
		{Features: []*personalizerv1.Feature{str("timeOfDay", "Morning"), num("hour", 9.25)}},
		{Name: "User", Features: []*personalizerv1.Feature{str("tier", `go"ld\ `), num("age", 0.1), boolean("mobile", true), boolean("tablet", false), num("zero", 0)}},
		{Name: "Umlaut", Features: []*personalizerv1.Feature{str("city", "Zürich:a|b\tc"), num("7", 1e-7), str("ctl", "a\x01b\n")}},
	}
	actions := []*personalizerv1.Action{
		{Id: "news", Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{str("type", "News"), num("len", 0.3)}}}},
		{Id: "sport s", Features: []*personalizerv1.Namespace{
			{Features: []*personalizerv1.Feature{str("type", "Sports")}},
			{Name: "Meta", Features: []*personalizerv1.Feature{num("pop", math.MaxFloat64), num("tiny", math.SmallestNonzeroFloat64)}},
		}},
		{Id: "123"},
	}
	return context, actions
}

// TestBuildMatchesDSJSON checks that scoring a request and learning from
// its logged DSJson see the same hashed features.
func TestBuildMatchesDSJSON(t *testing.T) {
	context, actions := request()
	policy, err := bandit.ParsePolicy(bandit.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	var built bandit.Event
	Build(&built, context, actions)

	c := AppendContext(nil, context, actions)
	if !json.Valid(c) {
		t.Fatalf("invalid JSON: %s", c)
	}
	line := append([]byte(`{"_label_cost":-1,"_label_probability":0.5,"_label_Action":1,"_labelIndex":0,"a":[1,2,3],"c":`), c...)
	line = append(line, `,"p":[0.5,0.25,0.25]}`...)
	var parsed bandit.Event
	var parser bandit.DSJSONParser
	if err := parser.Parse(line, &parsed); err != nil {
		t.Fatalf("parse %s: %v", line, err)
	}
	if got, want := bandit.Features(&parsed, policy), bandit.Features(&built, policy); !equal(got, want) {
		t.Errorf("features differ\nbuilt:  %v\nparsed: %v", want, got)
	}
}

func equal(a, b [][]bandit.HashedFeature) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				return false
			}
		}
	}
	return true
}

func TestAppendString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `q"b\s`, "tab\tnl\ncr\r", "\x00\x1f\x7f", "ünï©ode ✓", "bad\xffutf8"} {
		var got string
		if err := json.Unmarshal(AppendString(nil, s), &got); err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		if want := string([]rune(s)); got != want && s != "bad\xffutf8" {
			t.Errorf("%q round-trips to %q", s, got)
		}
	}
}

// TestContextBound checks that the bound is never under the context's
// length, for the awkward request and for strings and numbers at their
// longest escaped and shortest forms.
func TestContextBound(t *testing.T) {
	t.Parallel()
	context, actions := request()
	worst := []*personalizerv1.Feature{str("\x01\x02", "\x00\x1f\xff\xfe"), num("\x7f", -2.2250738585072014e-308),
		num("n", -1.2345678901234567e+308), num("f", -0.00012345678901234567), boolean("b", false)}
	cases := [][2]any{
		{context, actions},
		{[]*personalizerv1.Namespace{{Name: "\x01", Features: worst}, {Features: worst}}, []*personalizerv1.Action{
			{Id: "\x01\xff", Features: []*personalizerv1.Namespace{{Features: worst}, {Name: "\x02", Features: worst}}}}},
		{[]*personalizerv1.Namespace(nil), []*personalizerv1.Action{{Id: "a"}}},
	}
	for i, c := range cases {
		ctx, acts := c[0].([]*personalizerv1.Namespace), c[1].([]*personalizerv1.Action)
		n, bound := len(AppendContext(nil, ctx, acts)), ContextBound(ctx, acts)
		if bound < n {
			t.Errorf("case %d: bound %d, context %d bytes", i, bound, n)
		}
	}
}

func TestExcludedEligible(t *testing.T) {
	t.Parallel()
	acts := []*personalizerv1.Action{{Id: "a"}, {Id: "b"}, {Id: "c"}}
	ex, n, unknown := Excluded([]bool{true, true, true, true}, acts, []string{"c", "a", "c"})
	if len(ex) != 3 || ex[0] != true || ex[1] != false || ex[2] != true || n != 1 || unknown != -1 {
		t.Errorf("Excluded: %v %d %d", ex, n, unknown)
	}
	if el := Eligible(nil, acts, ex); len(el) != 1 || el[0].Id != "b" {
		t.Errorf("Eligible: %v", el)
	}
	if _, n, unknown := Excluded(nil, acts, []string{"b", "x", "y"}); n != 2 || unknown != 1 {
		t.Errorf("an unknown id: %d eligible, unknown %d", n, unknown)
	}
}

// TestShapeCountsBuild: the features a policy makes of a request, counted
// from its Shape (no hashing), are exactly those it generates from the
// event Build makes, for random requests with the awkward cases: numbers
// that are 0 as a float32 (0, -0, 1e-50, 5e-324), false, empty strings,
// namespaces sharing a first byte (with each other and with the actions'
// "i" and "j"), a NUL in a name, non-ASCII names, features without a value.
func TestShapeCountsBuild(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	names := []string{"", "", "i", "id", "j", "jj", "User", "Us", "a", "b\x00c", "\x00", "é", "~"}
	values := []func(name string) *personalizerv1.Feature{
		func(n string) *personalizerv1.Feature { return str(n, "v") },
		func(n string) *personalizerv1.Feature { return str(n, "") },
		func(n string) *personalizerv1.Feature { return num(n, 1.5) },
		func(n string) *personalizerv1.Feature { return num(n, 0) },
		func(n string) *personalizerv1.Feature { return num(n, math.Copysign(0, -1)) },
		func(n string) *personalizerv1.Feature { return num(n, 1e-50) },
		func(n string) *personalizerv1.Feature { return num(n, math.SmallestNonzeroFloat64) },
		func(n string) *personalizerv1.Feature { return num(n, -math.MaxFloat64) },
		func(n string) *personalizerv1.Feature { return boolean(n, true) },
		func(n string) *personalizerv1.Feature { return boolean(n, false) },
		func(n string) *personalizerv1.Feature { return &personalizerv1.Feature{Name: n} },
	}
	namespaces := func() []*personalizerv1.Namespace {
		nss := make([]*personalizerv1.Namespace, r.IntN(4))
		for i := range nss {
			ns := &personalizerv1.Namespace{Name: names[r.IntN(len(names))]}
			for range r.IntN(5) {
				ns.Features = append(ns.Features, values[r.IntN(len(values))](fmt.Sprint("f", r.IntN(3))))
			}
			nss[i] = ns
		}
		return nss
	}
	// VW counts --ignore_linear'd features, which it does not generate:
	// the last policy's count is checked against the event's only.
	policies := []string{bandit.DefaultPolicy, "--cb_explore_adf", "--cb_explore_adf -q UA --cubic AAU --cubic :::",
		"--cb_explore_adf --ignore U -q :: --noconstant", "--cb_explore_adf -q ij --interactions jjU", "--cb_explore_adf -q ij --ignore_linear i"}
	var s bandit.Shape
	var p bandit.Prediction
	for i := range 2000 {
		context := namespaces()
		actions := make([]*personalizerv1.Action, 1+r.IntN(4))
		for k := range actions {
			actions[k] = &personalizerv1.Action{Id: fmt.Sprint("a", k), Features: namespaces()}
		}
		var e bandit.Event
		Build(&e, context, actions)
		Shape(&s, context, actions)
		for k, args := range policies {
			pol, err := bandit.ParsePolicy(args)
			if err != nil {
				t.Fatal(err)
			}
			generated := 0
			for _, fs := range bandit.Features(&e, pol) {
				generated += len(fs)
			}
			if k == len(policies)-1 {
				generated = pol.CountFeatures(&e, &p)
			}
			if got, want := pol.CountShape(&s, &p), pol.CountFeatures(&e, &p); got != want || got != generated {
				t.Fatalf("request %d, %s: counted %d features from the shape, %d from the event, %d generated\ncontext %v\nactions %v", i, args, got, want, generated, context, actions)
			}
		}
	}
}
