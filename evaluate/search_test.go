package evaluate

import (
	"context"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestCandidates(t *testing.T) {
	t.Parallel()
	cur := vwPolicy("mtr", "0.001")
	got, err := Candidates(cur, MaxBudget)
	if err != nil {
		t.Fatal(err)
	}
	const b = "--cb_explore_adf --epsilon 0.2"
	want := []string{
		b + " --power_t 0 -l 0.01 --cb_type mtr -q :: --dsjson",
		b + " --power_t 0 -l 0.0001 --cb_type mtr -q :: --dsjson",
		b + " --power_t 0 -l 0.003 --cb_type mtr -q :: --dsjson",
		b + " --power_t 0 -l 0.000333333 --cb_type mtr -q :: --dsjson",
		b + " --power_t 0.5 -l 0.001 --cb_type mtr -q :: --dsjson",
		b + " --power_t 0 -l 0.001 --cb_type ips -q :: --dsjson",
		b + " --power_t 0 -l 0.001 --cb_type dr -q :: --dsjson",
		b + " --power_t 0 -l 0.001 --cb_type mtr --dsjson",
		b + " --power_t 0 -l 0.001 --cb_type mtr -q :: --dsjson --l1 1e-6",
		b + " --power_t 0 -l 0.001 --cb_type mtr -q :: --dsjson --l2 1e-6",
		b + " --power_t 0.5 -l 0.01 --cb_type mtr -q :: --dsjson",
		b + " --power_t 0 -l 0.01 --cb_type ips -q :: --dsjson",
	}
	if len(got) != MaxBudget {
		t.Fatalf("%d candidates, want the budget %d", len(got), MaxBudget)
	}
	seen := map[string]bool{cur: true}
	for i, p := range got {
		if i < len(want) && p.Arguments != want[i] {
			t.Errorf("candidate %d: %q, want %q", i+1, p.Arguments, want[i])
		}
		if p.Name != "Search "+strconv.Itoa(i+1) || p.Source != OfflineExperimentation {
			t.Errorf("candidate %d: name %q source %q", i+1, p.Name, p.Source)
		}
		if seen[p.Arguments] {
			t.Errorf("candidate %d repeats %q", i+1, p.Arguments)
		}
		seen[p.Arguments] = true
	}
	again, _ := Candidates(cur, 5)
	if !reflect.DeepEqual(again, got[:5]) {
		t.Errorf("budget 5 gives %v, want the first 5", again)
	}

	// No -l, default power_t and cb_type, no interaction; --name=value and
	// -lVALUE forms; an option given twice.
	got, err = Candidates("--cb_explore_adf --power_t=0.5 -l0.2 -l 0.3 --epsilon 0.1", 12)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"--cb_explore_adf --power_t=0.5 -l 2 --epsilon 0.1",
		"--cb_explore_adf --power_t=0.5 -l 0.02 --epsilon 0.1",
		"--cb_explore_adf --power_t=0.5 -l 0.6 --epsilon 0.1",
		"--cb_explore_adf --power_t=0.5 -l 0.0666667 --epsilon 0.1",
		"--cb_explore_adf --power_t 0 -l0.2 -l 0.3 --epsilon 0.1",
		"--cb_explore_adf --power_t=0.5 -l0.2 -l 0.3 --epsilon 0.1 --cb_type ips",
		"--cb_explore_adf --power_t=0.5 -l0.2 -l 0.3 --epsilon 0.1 --cb_type dr",
		"--cb_explore_adf --power_t=0.5 -l0.2 -l 0.3 --epsilon 0.1 -q ::",
		"--cb_explore_adf --power_t=0.5 -l0.2 -l 0.3 --epsilon 0.1 --l1 1e-6",
		"--cb_explore_adf --power_t=0.5 -l0.2 -l 0.3 --epsilon 0.1 --l2 1e-6",
		"--cb_explore_adf --power_t 0 -l 2 --epsilon 0.1",
		"--cb_explore_adf --power_t=0.5 -l 2 --epsilon 0.1 --cb_type ips",
	}
	var args []string
	for _, p := range got {
		args = append(args, p.Arguments)
	}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("candidates\n%s\nwant\n%s", strings.Join(args, "\n"), strings.Join(want, "\n"))
	}

	for _, bad := range []struct {
		cur    string
		budget int
	}{{cur, 0}, {cur, MaxBudget + 1}, {"--cb_explore_adf --nope", 3}} {
		if _, err := Candidates(bad.cur, bad.budget); err == nil {
			t.Errorf("Candidates(%q, %d): no error", bad.cur, bad.budget)
		}
	}
}

// TestSearch searches around -l 0.01 on the VW reference log in one pass
// with a custom policy: the first two candidates (-l 0.1 and -l 0.001)
// are VW reference runs, so their IPS is minus VW's average loss; the
// pick is the argmax of the candidates' CR lower bounds, above Online's.
func TestSearch(t *testing.T) {
	t.Parallel()
	cur := vwPolicy("mtr", "0.01")
	src := func() *SearchResult {
		t.Helper()
		res, err := SearchFile(context.Background(), Config{Custom: []Policy{{Name: "mine", Arguments: vwPolicy("ips", "0.1")}}, Workers: 2},
			cur, 10, vwData)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := src()
	if len(res.Policies) != 3+1+10 {
		t.Fatalf("%d policies", len(res.Policies))
	}
	cands, _ := Candidates(cur, 10)
	for i, p := range res.Policies {
		want := []string{Online, Baseline, Random, Custom}
		if i < 4 && p.Source != want[i] || i >= 4 && (p.Source != OfflineExperimentation || p.Arguments != cands[i-4].Arguments) {
			t.Errorf("policy %d: %s %q %s", i, p.Name, p.Arguments, p.Source)
		}
	}
	ips := func(i int) string {
		return strconv.FormatFloat(-*res.Policies[i].TotalSummary.Estimates[0].Value, 'f', 6, 64)
	}
	if got := ips(3); got != "-0.522200" { // ips 0.1
		t.Errorf("mine: -IPS %s, VW's -0.522200", got)
	}
	if got := ips(4); got != "-0.580200" { // mtr 0.1
		t.Errorf("Search 1: -IPS %s, VW's -0.580200", got)
	}
	if got := ips(5); got != "-0.428200" { // mtr 0.001
		t.Errorf("Search 2: -IPS %s, VW's -0.428200", got)
	}
	best, bound := -1, LowerBound(res.Policies[0].TotalSummary)
	for i := 4; i < len(res.Policies); i++ {
		lb := *res.Policies[i].TotalSummary.Estimates[3].Robust
		if lb.Lower != LowerBound(res.Policies[i].TotalSummary) || math.IsInf(lb.Lower, 0) {
			t.Errorf("%s: bound %v, CR interval %v", res.Policies[i].Name, LowerBound(res.Policies[i].TotalSummary), lb)
		}
		if lb.Lower > bound {
			best, bound = i, lb.Lower
		}
	}
	if res.Best != best || best < 0 || res.OptimalPolicy != res.Policies[best].Arguments {
		t.Fatalf("best %d (%q), want %d", res.Best, res.OptimalPolicy, best)
	}
	t.Logf("Online CR lower %v; best %s %q lower %v", LowerBound(res.Policies[0].TotalSummary), res.Policies[best].Name, res.OptimalPolicy, bound)
	if res.OptimalPolicy != cands[0].Arguments {
		t.Errorf("optimal %q, want -l 0.1 (%q)", res.OptimalPolicy, cands[0].Arguments)
	}
	if again := src(); again.Best != res.Best || again.OptimalPolicy != res.OptimalPolicy {
		t.Errorf("a second search picks %d", again.Best)
	}
}

// TestSearchKeepsOnline: when no candidate's lower bound is above
// Online's, there is no pick.
func TestSearchKeepsOnline(t *testing.T) {
	t.Parallel()
	res, err := SearchFile(context.Background(), Config{}, vwPolicy("mtr", "0.1"), 2, tinyData)
	if err != nil {
		t.Fatal(err)
	}
	on := LowerBound(res.Policies[0].TotalSummary)
	for _, p := range res.Policies[3:] {
		if LowerBound(p.TotalSummary) > on {
			t.Fatalf("%s's bound %v is above Online's %v", p.Name, LowerBound(p.TotalSummary), on)
		}
	}
	if res.Best != -1 || res.OptimalPolicy != "" {
		t.Errorf("best %d %q, want none", res.Best, res.OptimalPolicy)
	}
}
