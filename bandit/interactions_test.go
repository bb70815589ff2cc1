package bandit

import (
	"reflect"
	"strings"
	"testing"
)

// TestCompileTerms checks wildcard expansion as VW's generate_interactions
// does it: ':' ranges over the namespaces (' ' to '~') with repetition, the
// result is sorted by length then bytes, and terms over the same namespaces
// are kept once.
func TestCompileTerms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args    string
		present string
		want    string
	}{
		{"-q ::", " AU", "  , A, U,AA,AU,UU"},
		{"-q ::", "U", "UU"},
		// "UA" names the same namespaces as "AU" from '::', which sorts first.
		{"-q :: -q UA", "AU", "AA,AU,UU"},
		// A partial wildcard keeps the fixed namespace in place.
		{"-q A:", "ABU", "AA,AB,AU"},
		{"-q :A", "ABU", "AA,BA,UA"},
		{"-q :A -q ::", "AB", "AA,AB,BB"},
		{"--cubic :::", "AB", "AAA,AAB,ABB,BBB"},
		// "BAB" repeats a namespace among others, so VW sorts it.
		{"--interactions :A:", "AB", "AAA,AAB,ABB"},
		// Terms without wildcards pass through (and are sorted with the rest).
		{"-q :: --cubic UUA", "AU", "AA,AU,UU,AUU"},
		// Namespaces outside ' '..'~' are never wildcard-expanded; with no
		// namespace at all VW generates no interaction.
		{"-q :: -q AB", "", ""},
	}
	for _, tt := range tests {
		pol := mustPolicy(t, "--cb_explore_adf "+tt.args)
		var set nsSet
		for _, c := range []byte(tt.present) {
			set.add(c)
		}
		var c termCache
		got := strings.Join(termStrings(c.compile(pol, set)), ",")
		if got != tt.want {
			t.Errorf("%s over %q: %q, want %q", tt.args, tt.present, got, tt.want)
		}
		// The cache gives the same answer for the same namespaces.
		if again := strings.Join(termStrings(c.compile(pol, set)), ","); again != got {
			t.Errorf("%s: cached %q, first %q", tt.args, again, got)
		}
	}
}

// TestLongTerms checks the features of cubic and longer interactions against
// VW's rules written out as loops (interactions_predict.h): the hash is
// chained h = FNV*(h ^ idx) over all but the last index, then XORed with
// the last; values multiply; a namespace repeated next to itself starts at
// the position of the previous one, so combinations come once.
func TestLongTerms(t *testing.T) {
	t.Parallel()
	var e Event
	x := e.AddAction()
	for _, ns := range []struct {
		name  string
		feats []float64
	}{{"A", []float64{1.5, -2}}, {"B", []float64{3}}, {"C", []float64{0.5, 4}}, {"D", []float64{-1}}} {
		x.Namespace(ns.name)
		for i, v := range ns.feats {
			x.Number(string(rune('a'+i)), v)
		}
	}
	lin := Features(&e, mustPolicy(t, "--cb_explore_adf --noconstant"))[0]
	pol := mustPolicy(t, "--cb_explore_adf --noconstant --cubic AAB --interactions ABCD")
	got := Features(&e, pol)[0]

	mult := pol.shape.mult
	mask := pol.shape.mask
	type f struct {
		idx uint64
		x   float32
	}
	ns := func(lo, hi int) []f {
		var out []f
		for _, h := range lin[lo:hi] {
			out = append(out, f{h.Index * mult, h.Value})
		}
		return out
	}
	a, b, c, d := ns(0, 2), ns(2, 3), ns(3, 5), ns(5, 6)
	want := append([]HashedFeature(nil), lin...)
	add := func(idx uint64, x float32) {
		want = append(want, HashedFeature{Index: (idx & mask) >> 2, Value: x})
	}
	for i := range a {
		for j := i; j < len(a); j++ {
			for _, k := range b {
				add(k.idx^fnvPrime*(fnvPrime*a[i].idx^a[j].idx), a[i].x*a[j].x*k.x)
			}
		}
	}
	for _, i := range a {
		for _, j := range b {
			for _, k := range c {
				for _, l := range d {
					add(l.idx^fnvPrime*(fnvPrime*(fnvPrime*i.idx^j.idx)^k.idx), i.x*j.x*k.x*l.x)
				}
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("features\n%v\nwant\n%v", got, want)
	}
	var p Prediction
	NewModel(pol).Predict(&e, &p)
	if p.NumFeatures() != len(want) {
		t.Errorf("NumFeatures %d, want %d", p.NumFeatures(), len(want))
	}
}

// TestSumSq checks plain SGD's total_sum_feat_sq: linear squares per
// namespace plus, per term, the product of the namespaces' sums, or for a
// namespace repeated n times the sum over combinations with repetition.
func TestSumSq(t *testing.T) {
	t.Parallel()
	var e Event
	e.Shared().Namespace("U")
	e.Shared().Number("u", 3)
	x := e.AddAction()
	x.Namespace("A")
	x.Number("a", 1)
	x.Number("b", 2)
	m := NewModel(mustPolicy(t, "--cb_explore_adf --noconstant -q AA -q AU --cubic AAA"))
	var p Prediction
	m.prepare(&e, &p)
	m.expand(&e, 0, &p)
	// Linear 1+4 and 9; AA: 1*1 + 1*4 + 4*4 = 21; AU: 5*9 = 45; AAA:
	// 1*1*1 + 1*1*4 + 1*4*4 + 4*4*4 = 85.
	if got, want := p.sumSq(), float32(5+9+21+45+85); got != want {
		t.Errorf("sumSq %v, want %v", got, want)
	}
}

// TestHashAll checks --hash all: VW's hashall is murmur3 of the name as
// written, where --hash strings trims blanks and hashes names made of digits
// to their value plus the seed.
func TestHashAll(t *testing.T) {
	t.Parallel()
	var e Event
	sh := e.Shared()
	sh.Namespace("7")
	sh.Number("8", 1)
	sh.Number(" pad ", 2)
	sh.String("k", "v")
	e.AddAction().Number("x", 1)
	strs := Features(&e, mustPolicy(t, "--cb_explore_adf --noconstant -b 24"))[0]
	all := Features(&e, mustPolicy(t, "--cb_explore_adf --noconstant -b 24 --hash all"))[0]
	const mask = 1<<24 - 1
	ns := murmur3("7", 0)
	tests := []struct {
		name        string
		strs, all   uint64
		strsV, allV float32
	}{
		// VW names the default namespace " ": hashstring trims it to 0,
		// hashall does not.
		{"x (default namespace)", uint64(murmur3("x", 0)) & mask, uint64(murmur3("x", murmur3(" ", 0))) & mask, 1, 1},
		{"8 in namespace 7", 8 + 7, uint64(murmur3("8", ns)) & mask, 1, 1},
		{`" pad "`, uint64(murmur3("pad", 7)) & mask, uint64(murmur3(" pad ", ns)) & mask, 2, 2},
		{"kv", uint64(murmur3("kv", 7)) & mask, uint64(murmur3("kv", ns)) & mask, 1, 1},
	}
	if len(strs) != len(tests) || len(all) != len(tests) {
		t.Fatalf("features %v and %v", strs, all)
	}
	for i, tt := range tests {
		if strs[i] != (HashedFeature{tt.strs, tt.strsV}) || all[i] != (HashedFeature{tt.all, tt.allV}) {
			t.Errorf("%s: strings %v, all %v; want %d and %d", tt.name, strs[i], all[i], tt.strs, tt.all)
		}
	}
}

// TestIgnore checks --ignore (the namespace is gone, interactions
// included), --ignore_linear (only its linear terms are gone, VW still
// counts them) and --noconstant.
func TestIgnore(t *testing.T) {
	t.Parallel()
	var e Event
	e.Shared().Namespace("User")
	e.Shared().Number("u", 3)
	x := e.AddAction()
	x.Namespace("Action")
	x.Number("a", 2)
	base := Features(&e, mustPolicy(t, "--cb_explore_adf -q ::"))[0]
	// VW's order: Action^a, Constant, User^u, then AA, AU, UU.
	a, c, u, aa, au, uu := base[0], base[1], base[2], base[3], base[4], base[5]
	if len(base) != 6 || c.Index != constantIndex&(1<<18-1) || aa.Value != 4 || au.Value != 6 || uu.Value != 9 {
		t.Fatalf("features %v", base)
	}
	tests := []struct {
		args  string
		want  []HashedFeature
		count int
	}{
		{"--ignore U", []HashedFeature{a, c, aa}, 3},
		{"--ignore UA", []HashedFeature{c}, 1},
		{"--ignore_linear U", []HashedFeature{a, c, aa, au, uu}, 6},
		{"--ignore_linear AU", []HashedFeature{c, aa, au, uu}, 6},
		{"--noconstant", []HashedFeature{a, u, aa, au, uu}, 5},
	}
	for _, tt := range tests {
		pol := mustPolicy(t, "--cb_explore_adf -q :: "+tt.args)
		if got := Features(&e, pol)[0]; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: features %v, want %v", tt.args, got, tt.want)
		}
		var p Prediction
		NewModel(pol).Predict(&e, &p)
		if p.NumFeatures() != tt.count {
			t.Errorf("%s: NumFeatures %d, want %d", tt.args, p.NumFeatures(), tt.count)
		}
	}
}

// TestPrepare checks that a prepared event predicts and learns exactly as
// an unprepared one, and that changing the event drops the preparation.
func TestPrepare(t *testing.T) {
	t.Parallel()
	lines := readLines(t, "../testdata/vw/public_train.dsjson.gz")[:300]
	for _, args := range []string{DefaultPolicy, "--cb_explore_adf --cb_type dr -q UA --cubic AAU --ignore_linear U --power_t 0 -l 0.1"} {
		pol := mustPolicy(t, args)
		plain, prepared := NewModel(pol), NewModel(pol)
		var d DSJSONParser
		var e Event
		var p1, p2 Prediction
		for _, line := range lines {
			if err := d.Parse(line, &e); err != nil {
				t.Fatal(err)
			}
			l1, _ := plain.Learn(&e, &p1)
			e.Prepare(pol)
			if e.preparedFor(pol) == nil {
				t.Fatal("preparation not kept")
			}
			l2, _ := prepared.Learn(&e, &p2)
			if l1 != l2 || !reflect.DeepEqual(p1.PMF(), p2.PMF()) || p1.NumFeatures() != p2.NumFeatures() {
				t.Fatalf("%s: prepared event predicts %v (%d features), unprepared %v (%d)", args, p2.PMF(), p2.NumFeatures(), p1.PMF(), p1.NumFeatures())
			}
		}
		if !reflect.DeepEqual(plain.w, prepared.w) {
			t.Errorf("%s: prepared events learned different weights", args)
		}
		e.Action(0).Number("new", 1)
		if e.preparedFor(pol) != nil {
			t.Error("a preparation survived a change to the event")
		}
		if e.Prepare(pol); e.preparedFor(mustPolicy(t, args)) != nil {
			t.Error("a preparation was used for another policy")
		}
		if c := e; c.preparedFor(pol) != nil {
			t.Error("a copied event kept its preparation")
		}
	}
}

// TestCountFeatures checks that CountFeatures, which reads only namespace
// sizes, counts exactly the features the model generates, and what Predict
// reports, for real events and for repeated namespaces.
func TestCountFeatures(t *testing.T) {
	t.Parallel()
	var small Event
	sh := small.Shared()
	sh.Namespace("User")
	sh.Number("a", 1)
	sh.Number("b", 2)
	sh.Number("c", 3)
	x := small.AddAction()
	x.Namespace("Action")
	x.Number("p", 1)
	x.Number("q", 2)
	tests := []struct {
		args string
		want int // for small: 5 linear features and the constant, then the terms
	}{
		{"--cubic UUU", 6 + 10},                      // 3 multichoose 3
		{"--cubic UUA", 6 + 6*2},                     // (3 multichoose 2) * 2
		{"--interactions UUUA", 6 + 10*2},            // (3 multichoose 3) * 2
		{"-q ::", 6 + 3 + 6 + 6},                     // AA, AU, UU: the wildcard leaves the constant out
		{"-q :: --noconstant", 5 + 3 + 6 + 6},        // AA, AU, UU
		{"--ignore U -q ::", 3 + 3},                  // A and the constant; AA
		{"--interactions UUUUUUUUUUUUUUUU", 6 + 153}, // 3 multichoose 16
	}
	for _, tt := range tests {
		pol := mustPolicy(t, "--cb_explore_adf "+tt.args)
		var p Prediction
		if got := pol.CountFeatures(&small, &p); got != tt.want {
			t.Errorf("%s: CountFeatures %d, want %d", tt.args, got, tt.want)
		}
		if got := len(Features(&small, pol)[0]); got != tt.want {
			t.Errorf("%s: %d features generated, want %d", tt.args, got, tt.want)
		}
	}

	lines := readLines(t, "../testdata/vw/public_train.dsjson.gz")[:100]
	for _, args := range []string{DefaultPolicy, "--cb_explore_adf -q UA --cubic AAU --cubic :::", "--cb_explore_adf --ignore U -q :: --noconstant"} {
		pol := mustPolicy(t, args)
		m := NewModel(pol)
		var d DSJSONParser
		var e Event
		var p Prediction
		for i, line := range lines {
			if err := d.Parse(line, &e); err != nil {
				t.Fatal(err)
			}
			generated := 0
			for _, fs := range Features(&e, pol) {
				generated += len(fs)
			}
			count := pol.CountFeatures(&e, &p)
			m.Predict(&e, &p)
			if count != generated || count != p.NumFeatures() {
				t.Fatalf("%s, line %d: CountFeatures %d, generated %d, Predict counts %d", args, i+1, count, generated, p.NumFeatures())
			}
		}
	}
}
