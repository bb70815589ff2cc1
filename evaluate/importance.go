package evaluate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

// ImportanceLines is how many lines ImportanceFile reads to find the
// namespaces.
const ImportanceLines = 1000

// Namespace importance policy names: the policy evaluated, and each copy
// without one namespace ("Without U" for namespace index 'U').
const (
	CurrentName = "Current"
	WithoutName = "Without "
)

// NamespaceImportance is what leaving one namespace out of a policy
// changes.
type NamespaceImportance struct {
	Namespace string `json:"namespace"` // VW's namespace index: the first byte of the names
	Arguments string `json:"arguments"` // the policy with "--ignore <namespace>"
	Policy    int    `json:"policy"`    // its index in Result.Policies
	// Change is the policy's IPS estimate (AverageReward) minus the one
	// without the namespace, over the whole run: positive when the
	// namespace helps.
	Change float64 `json:"change"`
	// Interval is the 95% Gaussian interval of Change, from the per-event
	// differences c·(w−w')·r of the two policies on the same events; nil
	// with fewer than two events.
	Interval *Interval `json:"interval"`
	// Score is max(Change, 0) divided by the largest such drop of the
	// run: 1 for the namespace whose removal costs most, 0 for those
	// whose removal costs nothing (or all, when none costs anything).
	Score float64 `json:"score"`
}

// ImportanceResult is a leave-one-namespace-out evaluation.
type ImportanceResult struct {
	*Result // Online, Baseline, Random, Config.Custom, Current, then "Without X" per namespace
	// Current is the policy evaluated.
	Current    string                `json:"current"`
	Namespaces []NamespaceImportance `json:"namespaces"`
}

// Namespaces returns the namespace indices found in the first lines
// lines of src (malformed or dropped lines are passed over), sorted: the
// first bytes of the namespace names of the shared and action features,
// without the default namespace ' ' (features outside any namespace),
// which --ignore cannot name.
func Namespaces(ctx context.Context, src learner.Examples, lines int) ([]string, error) {
	var (
		parser bandit.DSJSONParser
		ev     bandit.Event
		seen   []byte
	)
	for i := 0; i < lines; i++ {
		x, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if parser.Parse(x.Data, &ev) != nil {
			continue
		}
		seen = ev.Namespaces(seen)
	}
	var out []string
	for _, ns := range seen {
		if ns != ' ' {
			out = append(out, string([]byte{ns}))
		}
	}
	sort.Strings(out)
	return out, nil
}

// withoutArgs is policy with namespace ns ignored.
func withoutArgs(policy, ns string) string {
	return strings.TrimSpace(policy + " --ignore " + ns)
}

// Importance evaluates cfg's policies, policy (named Current) and, in
// the same pass, one copy of policy per namespace with "--ignore <ns>"
// added, each a custom policy learned as any other; it reports per
// namespace what leaving it out changes. The MaxCustom cap applies to
// cfg.Custom only.
func Importance(ctx context.Context, cfg Config, policy string, namespaces []string, src learner.Examples) (*ImportanceResult, error) {
	if _, err := bandit.ParsePolicy(policy); err != nil {
		return nil, err
	}
	if len(cfg.Custom) > MaxCustom {
		return nil, fmt.Errorf("a maximum of %d custom policies are allowed, got %d", MaxCustom, len(cfg.Custom))
	}
	first := 3 + len(cfg.Custom)
	pols := append(append([]Policy{}, cfg.Custom...), Policy{Name: CurrentName, Arguments: policy})
	for _, ns := range namespaces {
		if len(ns) != 1 || ns == " " {
			return nil, fmt.Errorf("namespace %q: want one non-space byte", ns)
		}
		pols = append(pols, Policy{Name: WithoutName + ns, Arguments: withoutArgs(policy, ns)})
	}
	// The paired differences: Σc, Σ c·x and Σ c·x² with x = (w−w')·r.
	n := 0.0
	sx := make([]float64, len(namespaces))
	sx2 := make([]float64, len(namespaces))
	weight := func(pmf []bandit.ActionProb, ev *Event) float64 {
		pi := 0.0
		for _, ap := range pmf {
			if ap.Action == ev.Chosen {
				pi += float64(ap.Prob)
			}
		}
		return pi / ev.Prob
	}
	user := cfg.OnEvent
	cfg.OnEvent = func(ev *Event) {
		n += ev.Count
		w := weight(ev.PMF[first], ev)
		for k := range namespaces {
			x := (w - weight(ev.PMF[first+1+k], ev)) * ev.Reward
			sx[k] += ev.Count * x
			sx2[k] += ev.Count * x * x
		}
		if user != nil {
			user(ev)
		}
	}
	cfg.Custom = pols
	e, err := newEvaluatorLimit(cfg, len(pols))
	if err != nil {
		return nil, err
	}
	res, err := e.run(ctx, src)
	if err != nil {
		return nil, err
	}
	out := &ImportanceResult{Result: res, Current: policy, Namespaces: []NamespaceImportance{}}
	cur := res.Policies[first].TotalSummary.AverageReward
	top := 0.0
	for k, ns := range namespaces {
		p := first + 1 + k
		imp := NamespaceImportance{Namespace: ns, Arguments: res.Policies[p].Arguments, Policy: p,
			Change: cur - res.Policies[p].TotalSummary.AverageReward}
		if half, ok := gaussian(n, sx[k], sx2[k]); ok {
			imp.Interval = &Interval{imp.Change - half, imp.Change + half}
		}
		top = math.Max(top, imp.Change)
		out.Namespaces = append(out.Namespaces, imp)
	}
	for k := range out.Namespaces {
		out.Namespaces[k].Score = score(out.Namespaces[k].Change, top)
	}
	return out, nil
}

// score is a namespace's score: max(change, 0)/top, where top is the
// largest change of the run; 0 when top is not positive.
func score(change, top float64) float64 {
	if !(top > 0) || !(change > 0) {
		return 0
	}
	return change / top
}

// ImportanceFile is Importance on a DSJson file, gzip-compressed or not,
// with the namespaces of its first ImportanceLines lines.
func ImportanceFile(ctx context.Context, cfg Config, policy, path string) (*ImportanceResult, error) {
	if _, err := bandit.ParsePolicy(policy); err != nil { // a bad policy before a bad file
		return nil, err
	}
	src, err := learner.OpenExamples(path)
	if err != nil {
		return nil, err
	}
	ns, err := Namespaces(ctx, src, ImportanceLines)
	src.Close()
	if err != nil {
		return nil, fmt.Errorf("importance %s: %w", path, err)
	}
	if src, err = learner.OpenExamples(path); err != nil {
		return nil, err
	}
	defer src.Close()
	res, err := Importance(ctx, cfg, policy, ns, src)
	if err != nil {
		return nil, fmt.Errorf("importance %s: %w", path, err)
	}
	return res, nil
}
