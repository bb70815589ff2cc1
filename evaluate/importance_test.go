package evaluate

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/open-personalizer/personalizer/learner"
)

// TestImportanceNamespaces finds the namespaces of VW's reference data
// and of the handmade file (namespaces "User" and "i").
func TestImportanceNamespaces(t *testing.T) {
	for path, want := range map[string][]string{vwData: {"A", "U"}, tinyData: {"U", "i"}} {
		src, err := learner.OpenExamples(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Namespaces(context.Background(), src, ImportanceLines)
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: namespaces %q, want %q", path, got, want)
		}
	}
}

// TestImportanceEqualsIgnore checks that each "without" row is exactly
// the evaluation of the policy with --ignore as a plain custom policy,
// that Current is the plain policy, and the change and score arithmetic.
func TestImportanceEqualsIgnore(t *testing.T) {
	ctx := context.Background()
	const policy = "--cb_explore_adf --epsilon 0.2 --cb_type ips -q UA -l 0.1"
	res, err := ImportanceFile(ctx, Config{}, policy, 0, vwData)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Namespaces) != 2 || res.Namespaces[0].Namespace != "A" || res.Namespaces[1].Namespace != "U" {
		t.Fatalf("namespaces %+v", res.Namespaces)
	}
	if res.Evaluated != 4000 {
		t.Fatalf("evaluated %d events, want 4000", res.Evaluated)
	}
	plain := func(args string) Summary {
		r, err := File(ctx, Config{Custom: []Policy{{Arguments: args}}}, vwData)
		if err != nil {
			t.Fatal(err)
		}
		return r.Policies[3].TotalSummary
	}
	cur := res.Policies[3]
	if cur.Name != CurrentName || cur.Arguments != policy || !reflect.DeepEqual(cur.TotalSummary, plain(policy)) {
		t.Fatalf("current %+v differs from the plain policy", cur.Policy)
	}
	top := 0.0
	for _, imp := range res.Namespaces {
		args := policy + " --ignore " + imp.Namespace
		p := res.Policies[imp.Policy]
		if p.Name != "Without "+imp.Namespace || p.Arguments != args || imp.Arguments != args {
			t.Errorf("%s: policy %+v", imp.Namespace, p.Policy)
		}
		if !reflect.DeepEqual(p.TotalSummary, plain(args)) {
			t.Errorf("%s: without-row %+v differs from the plain custom policy %q", imp.Namespace, p.TotalSummary, args)
		}
		if want := cur.TotalSummary.AverageReward - p.TotalSummary.AverageReward; imp.Change != want {
			t.Errorf("%s: change %v, want %v", imp.Namespace, imp.Change, want)
		}
		if imp.Interval == nil || !(imp.Interval.Lower < imp.Change && imp.Change < imp.Interval.Upper) {
			t.Errorf("%s: interval %+v around %v", imp.Namespace, imp.Interval, imp.Change)
		}
		top = max(top, imp.Change)
		t.Logf("%s: change %v interval %+v score %v", imp.Namespace, imp.Change, imp.Interval, imp.Score)
	}
	// The interval from the per-event differences, recomputed from a plain
	// evaluation of the three policies.
	var n, sx, sx2 [2]float64
	w := func(ev *Event, p int) float64 {
		pi := 0.0
		for _, ap := range ev.PMF[p] {
			if ap.Action == ev.Chosen {
				pi += float64(ap.Prob)
			}
		}
		return pi / ev.Prob
	}
	cfg := Config{Custom: []Policy{{Arguments: policy}, {Arguments: policy + " --ignore A"}, {Arguments: policy + " --ignore U"}},
		OnEvent: func(ev *Event) {
			for k := range 2 {
				x := (w(ev, 3) - w(ev, 4+k)) * ev.Reward
				n[k] += ev.Count
				sx[k] += ev.Count * x
				sx2[k] += ev.Count * x * x
			}
		}}
	if _, err := File(ctx, cfg, vwData); err != nil {
		t.Fatal(err)
	}
	for k, imp := range res.Namespaces {
		half, _ := gaussian(n[k], sx[k], sx2[k])
		if want := (Interval{imp.Change - half, imp.Change + half}); *imp.Interval != want {
			t.Errorf("%s: interval %+v, want %+v", imp.Namespace, *imp.Interval, want)
		}
	}
	for _, imp := range res.Namespaces {
		want := 0.0
		if imp.Change > 0 {
			want = imp.Change / top
		}
		if imp.Score != want {
			t.Errorf("%s: score %v, want %v", imp.Namespace, imp.Score, want)
		}
	}
}

// TestImportanceScore checks the score arithmetic: drops divided by the
// largest, negatives and no drop at all give 0.
func TestImportanceScore(t *testing.T) {
	for _, c := range []struct{ change, top, want float64 }{
		{0.2, 0.4, 0.5}, {0.4, 0.4, 1}, {-0.1, 0.4, 0}, {0, 0.4, 0}, {-0.1, 0, 0}, {0, 0, 0},
	} {
		if got := score(c.change, c.top); got != c.want {
			t.Errorf("score(%v, %v) = %v, want %v", c.change, c.top, got, c.want)
		}
	}
}

// TestImportanceErrors rejects a bad policy and a bad namespace.
func TestImportanceErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := ImportanceFile(ctx, Config{}, "--no_such_option", 0, vwData); err == nil {
		t.Error("a bad policy was accepted")
	}
	src := learner.ReadExamples("x", strings.NewReader(""))
	if _, err := Importance(ctx, Config{}, "--cb_explore_adf", Sample{Namespaces: []string{"AB"}}, src); err == nil || !strings.Contains(err.Error(), `namespace "AB"`) {
		t.Errorf("namespace AB: %v", err)
	}
}

// TestImportanceOnEvent checks that Config.OnEvent still sees every
// evaluated event, with every policy's PMF.
func TestImportanceOnEvent(t *testing.T) {
	events := 0
	cfg := Config{OnEvent: func(ev *Event) {
		if len(ev.PMF) != 6 {
			t.Fatalf("%d PMFs, want 6", len(ev.PMF))
		}
		events++
	}}
	res, err := ImportanceFile(context.Background(), cfg, "--cb_explore_adf", 0, vwData)
	if err != nil {
		t.Fatal(err)
	}
	if events != 4000 || res.Evaluated != 4000 {
		t.Errorf("OnEvent saw %d events, evaluated %d; want 4000", events, res.Evaluated)
	}
}

// TestImportanceSimulated ranks the namespaces of a simulated world whose
// reward depends on the user's segment (U) and the action (A) but not on
// a noise namespace (N, a random value per event): U's removal costs
// significantly, N's does not (its interval holds 0, its score is 0).
func TestImportanceSimulated(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 12))
	data, _ := simWorld.log(r, 20000)
	var b strings.Builder
	for _, line := range strings.SplitAfter(data, "\n") {
		b.WriteString(strings.Replace(line, `"_multi"`, fmt.Sprintf(`"N":{"n":"x%d"},"_multi"`, r.IntN(10)), 1))
	}
	s, err := SampleLines(context.Background(), learner.ReadExamples("sim", strings.NewReader(b.String())), ImportanceLines, DefaultFeatures)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Importance(context.Background(), Config{}, "--cb_explore_adf --epsilon 0.2 -q UA -q NA",
		*s, learner.ReadExamples("sim", strings.NewReader(b.String())))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Features {
		t.Logf("%s (%d events): change %.6f interval %+v score %.3f", f.Name, f.Events, f.Change, *f.Interval, f.Score)
	}
	a, n, u := res.Namespaces[0], res.Namespaces[1], res.Namespaces[2]
	for _, x := range res.Namespaces {
		t.Logf("%s: change %.6f interval %+v score %.3f", x.Namespace, x.Change, *x.Interval, x.Score)
	}
	if !(u.Change > n.Change) || !(u.Interval.Lower > 0) || n.Score != 0 || !(n.Interval.Lower < 0 && 0 < n.Interval.Upper) || max(a.Score, u.Score) != 1 {
		t.Errorf("A %+v, N %+v, U %+v", a, n, u)
	}
}

// TestImportanceFeatures checks that each feature row is exactly the
// evaluation of the policy on the file with that feature removed from
// every line's JSON (a number, a string in the shared namespace, an
// action's string), and the sample's counts.
func TestImportanceFeatures(t *testing.T) {
	ctx := context.Background()
	const policy = "--cb_explore_adf --epsilon 0.2 --cb_type ips -q UA -l 0.1"
	src, err := learner.OpenExamples(vwData)
	if err != nil {
		t.Fatal(err)
	}
	all, err := SampleLines(ctx, src, ImportanceLines, 1000)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Feature{}
	for _, f := range all.Features {
		byName[f.Name] = f
	}
	// Removals from the JSON text, in the order of the rows.
	edits := []struct {
		name string
		re   *regexp.Regexp
	}{
		{"U^u0", regexp.MustCompile(`"u0":[^,}]*,`)},
		{"U^seg2", regexp.MustCompile(`,"seg":"2"`)},
		{"A^id3", regexp.MustCompile(`"id":"3",`)},
	}
	var s Sample
	for _, e := range edits {
		f, ok := byName[e.name]
		if !ok {
			t.Fatalf("no feature %s in the sample", e.name)
		}
		s.Features = append(s.Features, f)
	}
	if f := s.Features[2]; f.Events != ImportanceLines || f.Namespace != "A" || f.FeatureName != "id3" {
		t.Errorf("A^id3: %+v, want in all %d sampled events", f, ImportanceLines)
	}
	if top := all.Features[0]; top.Events != ImportanceLines {
		t.Errorf("most frequent feature %+v", top)
	}
	src, err = learner.OpenExamples(vwData)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Importance(ctx, Config{}, policy, s, src)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	text := string(gunzip(t, vwData))
	cur := res.Policies[3].TotalSummary.AverageReward
	for k, e := range edits {
		edited := e.re.ReplaceAllString(text, "")
		if edited == text {
			t.Fatalf("%s: nothing removed", e.name)
		}
		want, err := Reader(ctx, Config{Custom: []Policy{{Arguments: policy}}}, e.name, strings.NewReader(edited))
		if err != nil {
			t.Fatal(err)
		}
		row := res.Features[k]
		got := res.Policies[row.Policy]
		if row.Name != e.name || got.Name != WithoutFeatureName+e.name || got.Arguments != policy {
			t.Errorf("row %d: %+v, policy %+v", k, row.Feature, got.Policy)
		}
		// All but DR, whose reward model learns from the edited lines there.
		g, w := got.TotalSummary, want.Policies[3].TotalSummary
		g.Estimates = append(g.Estimates[:2:2], g.Estimates[3])
		w.Estimates = append(w.Estimates[:2:2], w.Estimates[3])
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(w)
		if string(gj) != string(wj) || got.TotalSummary.Estimates[2].Estimator != DR {
			t.Errorf("%s: without-row %s differs from the policy on the edited file %s", e.name, gj, wj)
		}
		if row.Change != cur-got.TotalSummary.AverageReward || row.Interval == nil {
			t.Errorf("%s: change %v interval %v", e.name, row.Change, row.Interval)
		}
		t.Logf("%s: change %v interval %+v score %v", e.name, row.Change, row.Interval, row.Score)
	}
	// Scores: by the largest change among the features.
	top := res.Features[0].Change
	for k, want := range []float64{1, 0, res.Features[2].Change / top} {
		if res.Features[k].Score != want {
			t.Errorf("%s: score %v, want %v", res.Features[k].Name, res.Features[k].Score, want)
		}
	}
}

// TestImportanceFeatureSimulated ranks the features of a simulated world
// where the best of 3 actions depends on the sign of the user's number
// "x" (0.8 against 0.2), not at all on "z": U^x's removal costs most, its
// interval is above 0, and U^z's holds 0.
func TestImportanceFeatureSimulated(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	sign := func() int { return 2*r.IntN(2) - 1 }
	for range 6000 {
		x, z := sign(), sign()
		a := r.IntN(3)
		mu := 0.2
		if (x > 0 && a == 0) || (x < 0 && a == 1) {
			mu = 0.8
		}
		cost := 0
		if r.Float64() < mu {
			cost = -1
		}
		ids := []int{a + 1}
		for k := range 3 {
			if k != a {
				ids = append(ids, k+1)
			}
		}
		fmt.Fprintf(&b, `{"_label_cost":%d,"_label_probability":0.333333,"_labelIndex":%d,"a":[%d,%d,%d],"c":{"U":{"x":%d,"z":%d},"_multi":[{"A":{"id":"a0"}},{"A":{"id":"a1"}},{"A":{"id":"a2"}}]},"p":[0.333333,0.333333,0.333333]}`+"\n",
			cost, a, ids[0], ids[1], ids[2], x, z)
	}
	data := b.String()
	s, err := SampleLines(context.Background(), learner.ReadExamples("sim", strings.NewReader(data)), ImportanceLines, DefaultFeatures)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Importance(context.Background(), Config{}, "--cb_explore_adf --epsilon 0.1 -q UA -l 0.1",
		*s, learner.ReadExamples("sim", strings.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]FeatureImportance{}
	for _, f := range res.Features {
		rows[f.Name] = f
		t.Logf("%s (%d events): change %.6f interval %+v score %.3f", f.Name, f.Events, f.Change, *f.Interval, f.Score)
	}
	x, z := rows["U^x"], rows["U^z"]
	if len(res.Features) != 5 || x.Score != 1 || !(x.Interval.Lower > 0) || !(z.Interval.Lower < 0 && 0 < z.Interval.Upper) {
		t.Errorf("U^x %+v, U^z %+v", x, z)
	}
}
