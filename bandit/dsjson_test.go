package bandit

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// TestBuilderMatchesParser builds events with the builder API and parses
// the equivalent DSJson: the hashed features, interactions included, must be
// identical bit for bit.
func TestBuilderMatchesParser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		c     string // the "c" object
		build func(e *Event)
	}{
		{
			name: "personalizer shape",
			c: `{"FromUrl":[{"timeofday":"Afternoon","weather":"Sunny"}],"_multi":[` +
				`{"_tag":"Cappucino","i":{"constant":1,"id":"Cappucino"},"j":[{"type":"hot","organic":"yes"}]},` +
				`{"_tag":"Cold brew","i":{"constant":1,"id":"Cold brew"},"j":[{"type":"cold","organic":"no"}]}]}`,
			build: func(e *Event) {
				sh := e.Shared()
				sh.Namespace("FromUrl")
				sh.String("timeofday", "Afternoon")
				sh.String("weather", "Sunny")
				for _, a := range []struct{ id, typ, organic string }{{"Cappucino", "hot", "yes"}, {"Cold brew", "cold", "no"}} {
					x := e.AddAction()
					x.Namespace("i")
					x.Number("constant", 1)
					x.String("id", a.id)
					x.Namespace("j")
					x.String("type", a.typ)
					x.String("organic", a.organic)
				}
			},
		},
		{
			// The default namespace closes last in JSON, whatever the key order.
			name: "default namespace, shared namespace index, every value kind",
			c: `{"hour":9.25,"User":{"tier":"go\"ld\\ x","age":0.1,"mobile":true,"tablet":false,"zero":0,"none":null},` +
				`"Umlaut":{"city":"Z\u00fcrich:a|b\tc","7":1e-7," pad ":2},"day":"Mon day",` +
				`"_multi":[{"a":1,"A":{"len":0.3}},{"B":{"x":-2.5}}]}`,
			build: func(e *Event) {
				sh := e.Shared()
				sh.Number("hour", 9.25)
				sh.Namespace("User")
				sh.String("tier", `go"ld\ x`)
				sh.Number("age", 0.1)
				sh.Bool("mobile", true)
				sh.Bool("tablet", false)
				sh.Number("zero", 0)
				sh.Namespace("Umlaut")
				sh.String("city", "Zürich:a|b\tc")
				sh.Number("7", 1e-7)
				sh.Number(" pad ", 2)
				sh.Namespace("")
				sh.String("day", "Mon day")
				x := e.AddAction()
				x.Number("a", 1)
				x.Namespace("A")
				x.Number("len", 0.3)
				e.AddAction().Namespace("B")
				e.Action(1).Number("x", -2.5)
			},
		},
		{
			// _text words are bare features: the hash of the word, value 1.
			name: "_text",
			c:    `{"T":{"_text":"red  big:box|x\tend"},"_multi":[{"_text":"one"}]}`,
			build: func(e *Event) {
				e.Shared().Namespace("T")
				for _, w := range []string{"red", "big_box_x", "end"} {
					e.Shared().Bool(w, true)
				}
				e.AddAction().Bool("one", true)
			},
		},
		{
			name: "action and shared share a namespace",
			c:    `{"A":{"s":"1"},"_multi":[{"A":{"a":"2"}},{"C":{"c":3}}]}`,
			build: func(e *Event) {
				e.Shared().Namespace("A")
				e.Shared().String("s", "1")
				e.AddAction().Namespace("A")
				e.Action(0).String("a", "2")
				e.AddAction().Namespace("C")
				e.Action(1).Number("c", 3)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var built Event
			tt.build(&built)
			parsed := parseLine(t, []byte(`{"a":[1,2],"c":`+tt.c+`}`))
			for _, args := range []string{DefaultPolicy, "--cb_explore_adf -q UA -q A: --cb_type dr -b 20"} {
				p := mustPolicy(t, args)
				if got, want := Features(parsed, p), Features(&built, p); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: parsed features\n%v\nbuilt\n%v", args, got, want)
				}
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	t.Parallel()
	const c = `"c":{"U":{"x":1},"_multi":[{"A":{"a":1}},{"A":{"b":1}}]}`
	tests := []struct {
		name    string
		line    string
		labeled bool
		chosen  int
		cost    float32
		prob    float32
		weight  float32
	}{
		{"label before c", `{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":1,"a":[2,1],` + c + `}`, true, 1, -1, 0.5, 1},
		{"label keys are case-insensitive", `{"_label_COST":0.5,"_label_Probability":1,"_labelindex":0,"a":[1],` + c + `}`, true, 0, 0.5, 1, 1},
		{"label after c is ignored, as VW", `{"a":[2,1],` + c + `,"_label_cost":-1,"_label_probability":0.5,"_labelIndex":1}`, false, 0, 0, 0, 1},
		{"labelIndex alone is no label", `{"_labelIndex":0,"a":[1],` + c + `}`, false, 0, 0, 0, 1},
		{"label inside c", `{"a":[1],"c":{"_label_cost":2,"_label_probability":0.25,"_labelIndex":0,"_multi":[{"A":{"a":1}}]}}`, true, 0, 2, 0.25, 1},
		{"no label", `{"a":[1],` + c + `}`, false, 0, 0, 0, 1},
		{"pdrop weighs the event", `{"pdrop":0.5,"a":[1],` + c + `}`, false, 0, 0, 0, 2},
	}
	for _, tt := range tests {
		e := parseLine(t, []byte(tt.line))
		chosen, cost, prob, ok := e.Label()
		if ok != tt.labeled || (ok && (chosen != tt.chosen || cost != tt.cost || prob != tt.prob)) {
			t.Errorf("%s: label %v %d %v %v, want %v %d %v %v", tt.name, ok, chosen, cost, prob, tt.labeled, tt.chosen, tt.cost, tt.prob)
		}
		if w := e.Weight(); w != tt.weight {
			t.Errorf("%s: weight %v, want %v", tt.name, w, tt.weight)
		}
	}
}

// TestParseArrays checks VW's numeric arrays: element i is feature
// hash(key)+i, unmasked; zeros are dropped but counted, nulls skipped.
func TestParseArrays(t *testing.T) {
	t.Parallel()
	e := parseLine(t, []byte(`{"a":[1],"c":{"_multi":[{"v":[1.5,0,null,-2]}]}}`))
	p := mustPolicy(t, "--cb_explore_adf -b 4")
	h := uint64(hashString("v", 0))
	want := []HashedFeature{{(h * 4 & (64 - 1)) >> 2, 1.5}, {((h + 2) * 4 & (64 - 1)) >> 2, -2}, {(constantIndex * 4 & 63) >> 2, 1}}
	if got := Features(e, p)[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("features %v, want %v", got, want)
	}
}

// TestParseMinimal parses the smallest line VW accepts as a labelled event.
func TestParseMinimal(t *testing.T) {
	t.Parallel()
	e := parseLine(t, readLines(t, "../testdata/vw/minimal_accepted.dsjson")[0])
	if chosen, cost, prob, ok := e.Label(); !ok || chosen != 1 || cost != -1 || prob != 0.8 || e.NumActions() != 3 {
		t.Errorf("label %d %v %v %v with %d actions, want 1 -1 0.8 true with 3", chosen, cost, prob, ok, e.NumActions())
	}
}

func TestParseEventIDAndTag(t *testing.T) {
	t.Parallel()
	e := parseLine(t, []byte(`{"EventId":"e\u00e9","Timestamp":null,"a":[1],"c":{"_tag":"t1","_multi":[{"_tag":"x","A":{"a":1}}]},"o":[{"v":1}],"VWState":{"m":"N/A"}}`))
	if e.EventID() != "eé" || e.Tag() != "t1" {
		t.Errorf("EventId %q tag %q, want \"eé\" \"t1\"", e.EventID(), e.Tag())
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	const c = `"c":{"_multi":[{"A":{"a":1}}]}`
	tests := []struct {
		name string
		line string
		want string // error substring; "" means ErrSkip
	}{
		{"blank line", "  \t", ""},
		{"a missing", `{` + c + `}`, ""},
		{"a empty", `{"a":[],` + c + `}`, ""},
		{"a null", `{"a":null,` + c + `}`, ""},
		{"skipLearn", `{"_skipLearn":true,"a":[1],` + c + `}`, ""},
		{"not an object", `[1]`, "must start with '{'"},
		{"leading space", ` {"a":[1],` + c + `}`, "must start with '{'"},
		{"truncated", `{"a":[1],"c":{"_multi":[{"A":{"a":1}`, "unexpected end of line"},
		{"trailing data", `{"a":[1],` + c + `} x`, "unexpected data after"},
		{"trailing comma", `{"a":[1],` + c + `,}`, "expected a key"},
		{"missing colon", `{"a" [1]}`, "expected ':'"},
		{"bad literal", `{"a":[1],"x":tru,` + c + `}`, "expected true or false"},
		{"bad escape", `{"a":[1],"x":"\q",` + c + `}`, `invalid escape`},
		{"lone surrogate", `{"a":[1],"x":"\ud800",` + c + `}`, "surrogate"},
		{"control character", "{\"a\":[1],\"x\":\"a\x01b\"," + c + `}`, "control character"},
		{"NaN number", `{"a":[1],"x":NaN,` + c + `}`, "expected a number"},
		{"leading zero", `{"a":[1],"x":01,` + c + `}`, "expected ','"},
		{"number too big", `{"a":[1],"c":{"n":1e400,"_multi":[{"A":{"a":1}}]}}`, "too big"},
		{"missing fraction", `{"a":[1],"c":{"n":1.,"_multi":[{"A":{"a":1}}]}}`, "decimal point"},
		{"missing exponent", `{"a":[1],"c":{"n":1e,"_multi":[{"A":{"a":1}}]}}`, "exponent"},
		{"c missing", `{"a":[1]}`, `missing "c"`},
		{"c not an object", `{"a":[1],"c":[1]}`, `"c" must be an object`},
		{"c twice", `{"a":[1],` + c + `,` + c + `}`, "appears twice"},
		{"no actions", `{"a":[1],"c":{"U":{"x":1}}}`, `no actions`},
		{"action not an object", `{"a":[1],"c":{"_multi":[1]}}`, "must be objects"},
		{"nested _multi", `{"a":[1],"c":{"_multi":[{"_multi":[]}]}}`, "at the top of"},
		{"a holds a string", `{"a":["1"],` + c + `}`, "unsigned integer"},
		{"a holds a negative", `{"a":[-1],` + c + `}`, "unsigned integer"},
		{"labelIndex is a float", `{"_labelIndex":1.0,"a":[1],` + c + `}`, "unsigned integer"},
		{"labelIndex out of range", `{"_label_cost":1,"_label_probability":0.5,"_labelIndex":1,"a":[1],` + c + `}`, "out of range"},
		{"labelIndex out of range without cost", `{"_labelIndex":3,"a":[1],` + c + `}`, "out of range"},
		{"label without labelIndex", `{"_label_cost":1,"_label_probability":0.5,"a":[1],` + c + `}`, "_labelIndex"},
		{"labelIndex after c", `{"_label_cost":1,"_label_probability":0.5,"a":[1],` + c + `,"_labelIndex":0}`, "_labelIndex"},
		{"cost without probability", `{"_label_cost":1,"_labelIndex":0,"a":[1],` + c + `}`, "needs both"},
		{"probability 0", `{"_label_cost":1,"_label_probability":0,"_labelIndex":0,"a":[1],` + c + `}`, "not in (0, 1]"},
		{"probability above 1", `{"_label_cost":1,"_label_probability":1.5,"_labelIndex":0,"a":[1],` + c + `}`, "not in (0, 1]"},
		{"NaN cost", `{"_label_cost":"NaN","_label_probability":0.5,"_labelIndex":0,"a":[1],` + c + `}`, "NaN"},
		{"cost overflows float32", `{"_label_cost":1e39,"_label_probability":0.5,"_labelIndex":0,"a":[1],` + c + `}`, "overflows float32"},
		{"cost is a bool", `{"_label_cost":true,"_label_probability":0.5,"_labelIndex":0,"a":[1],` + c + `}`, "expected a number"},
		{"unknown label property", `{"_label_foo":1,"a":[1],` + c + `}`, "not supported"},
		{"plain _label", `{"_label":"0:1:0.5","a":[1],` + c + `}`, "not supported"},
		{"pdrop 1", `{"pdrop":1,"a":[1],` + c + `}`, "pdrop"},
		{"pdrop negative", `{"pdrop":-0.5,"a":[1],` + c + `}`, "pdrop"},
		{"skipLearn not a bool", `{"_skipLearn":1,"a":[1],` + c + `}`, "true or false"},
		{"EventId not a string", `{"EventId":5,"a":[1],` + c + `}`, "expected a string"},
		{"continuous actions", `{"_label_ca":{"cost":1},"a":[1],` + c + `}`, "not supported"},
		{"CCB outcomes", `{"_outcomes":[],"a":[1],` + c + `}`, "needs a --ccb_explore_adf policy"},
		{"slots", `{"a":[1],"c":{"_slots":[],"_multi":[{"A":{"a":1}}]}}`, "needs a --ccb_explore_adf policy"},
		{"nested arrays", `{"a":[1],"c":{"v":[[1]],"_multi":[{"A":{"a":1}}]}}`, "nested arrays"},
		{"string in a feature array", `{"a":[1],"c":{"v":["x"],"_multi":[{"A":{"a":1}}]}}`, "numbers or objects"},
		{"_text not a string", `{"a":[1],"c":{"_text":1,"_multi":[{"A":{"a":1}}]}}`, "expected a string"},
		{"too deep", `{"a":[1],"c":{"_multi":[{"A":` + strings.Repeat(`{"x":`, 300) + `1` + strings.Repeat(`}`, 300) + `}]}}`, "nesting deeper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var e Event
			var d DSJSONParser
			err := d.Parse([]byte(tt.line), &e)
			switch {
			case err == nil:
				t.Fatalf("Parse(%s) succeeded", tt.line)
			case tt.want == "" && !errors.Is(err, ErrSkip):
				t.Fatalf("Parse(%s) = %v, want ErrSkip", tt.line, err)
			case tt.want != "" && (errors.Is(err, ErrSkip) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse(%s) = %v, want an error containing %q", tt.line, err, tt.want)
			}
		})
	}
}

func TestParseNumber(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		kind  numKind
		value float32
	}{
		{"0", numUint, 0},
		{"-0", numInt, 0},
		{"4294967295", numUint, 4294967295},
		{"4294967296", numUint64, 4294967296},
		{"-2147483648", numInt, -2147483648},
		{"-2147483649", numInt64, -2147483649},
		{"18446744073709551615", numUint64, 18446744073709551615},
		{"18446744073709551616", numDouble, 18446744073709551616},
		{"16777217", numUint, 16777216}, // float32 rounding of a uint32
		{"0.1", numDouble, 0.1},
		{"-0.41476", numDouble, -0.41476},
		{"1.5e3", numDouble, 1500},
		{"25E-1", numDouble, 2.5},
		{"1e-400", numDouble, 0},
		{"3.4028236e38", numDouble, float32(math.Inf(1))}, // beyond float32, as VW's cast
		{"0.000000000000000000000000000000000000000000001401298464324817", numDouble, 1e-45},
	}
	for _, tt := range tests {
		n, used, err := parseNumber([]byte(tt.in + ","))
		if err != nil || used != len(tt.in) || n.kind != tt.kind || n.value != tt.value {
			t.Errorf("parseNumber(%s) = %+v, %d, %v; want kind %d value %v", tt.in, n, used, err, tt.kind, tt.value)
		}
	}
}

// FuzzParseDSJSON checks that no line makes the parser panic, that what it
// accepts can be predicted and learned, and that a prepared event predicts
// as the unprepared one.
func FuzzParseDSJSON(f *testing.F) {
	for _, path := range []string{"../testdata/vw/tiny.dsjson", "../testdata/vw/minimal_accepted.dsjson"} {
		for _, line := range readLines(f, path) {
			f.Add(line)
		}
	}
	f.Add([]byte(`{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1],"c":{"FromUrl":[{"t":"x"}],"v":[1,2],"_text":"a b:c","_multi":[{"_tag":"x","i":{"constant":1,"id":"x"}}]},"p":[1],"pdrop":0.1}`))
	policy, err := ParsePolicy("--cb_explore_adf -q :: -b 10 --cb_type dr")
	if err != nil {
		f.Fatal(err)
	}
	m := NewModel(policy)
	f.Fuzz(func(t *testing.T, line []byte) {
		var e Event
		var d DSJSONParser
		if err := d.Parse(line, &e); err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("accepted an invalid event: %v\n%s", err, line)
		}
		var p, q Prediction
		m.Predict(&e, &p)
		e.Prepare(policy)
		m.Predict(&e, &q)
		if !reflect.DeepEqual(p.PMF(), q.PMF()) || p.NumFeatures() != q.NumFeatures() {
			t.Fatalf("prepared event predicts %v, unprepared %v\n%s", q.PMF(), p.PMF(), line)
		}
		m.Learn(&e, &p)
		if len(p.PMF()) != e.NumActions() {
			t.Fatalf("PMF has %d entries for %d actions", len(p.PMF()), e.NumActions())
		}
	})
}

// FuzzParseNumber checks the fast path for short numbers against RapidJSON's
// algorithm: whenever it accepts a number, the result is the same bit for
// bit.
func FuzzParseNumber(f *testing.F) {
	for _, s := range []string{"0", "-0", "0.1", "-0.41476", "123456789012345", "1.5e3", "2147483647", "-2147483648",
		"4294967295", "0.000000000000001", "999999999999999", "9007199254740993", "01", "1.", "-", "3.4028236e38"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		fast, used, ok := parseShortNumber(s)
		if v, n, ok2 := shortFeatureValue(s); ok2 != ok || (ok && (n != used || math.Float32bits(v) != math.Float32bits(fast.value))) {
			t.Fatalf("%q: shortFeatureValue %v %d %v, parseShortNumber %+v %d %v", s, v, n, ok2, fast, used, ok)
		}
		if !ok {
			return
		}
		slow, slowUsed, err := parseRapidJSON(s)
		if err != nil || used != slowUsed || fast.kind != slow.kind || math.Float32bits(fast.value) != math.Float32bits(slow.value) || fast.u != slow.u {
			t.Fatalf("%q: fast %+v (%d bytes), RapidJSON %+v (%d bytes, %v)", s, fast, used, slow, slowUsed, err)
		}
	})
}
