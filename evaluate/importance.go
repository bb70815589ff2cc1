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
// namespaces and the most frequent features.
const ImportanceLines = 1000

// DefaultFeatures is how many of the most frequent features the
// importance commands leave out one at a time by default.
const DefaultFeatures = 20

// Importance policy names: the policy evaluated, each copy without one
// namespace ("Without U" for namespace index 'U') and each copy without
// one feature ("Without feature User^agey").
const (
	CurrentName        = "Current"
	WithoutName        = "Without "
	WithoutFeatureName = "Without feature "
)

// Effect is what leaving something out of a policy changes.
type Effect struct {
	Policy int `json:"policy"` // the index of the policy without it in Result.Policies
	// Change is the policy's IPS estimate (AverageReward) minus the one
	// without it, over the whole run: positive when it helps.
	Change float64 `json:"change"`
	// Interval is the 95% Gaussian interval of Change, from the per-event
	// differences c·(w−w')·r of the two policies on the same events; nil
	// with fewer than two events.
	Interval *Interval `json:"interval"`
	// Score is max(Change, 0) divided by the largest such drop among the
	// rows of its kind (namespaces, or features): 1 for the one whose
	// removal costs most, 0 for those whose removal costs nothing (or
	// all, when none costs anything).
	Score float64 `json:"score"`
}

// NamespaceImportance is what leaving one namespace out of a policy
// changes.
type NamespaceImportance struct {
	Namespace string `json:"namespace"` // VW's namespace index: the first byte of the names
	Arguments string `json:"arguments"` // the policy with "--ignore <namespace>"
	Effect
}

// Feature is a feature, as VW's audit and --invert_hash name it.
type Feature struct {
	Name        string `json:"name"`        // "Namespace^name", or "name" in the default namespace
	Namespace   string `json:"namespace"`   // the namespace's name (Name before the first '^'), "" for the default one
	FeatureName string `json:"featureName"` // Name after the first '^': a string feature's key and value, a number's key
	// Events counts the events of the sample that have the feature.
	Events int               `json:"events"`
	Key    bandit.FeatureKey `json:"-"`
}

// FeatureImportance is what leaving one feature out of a policy's events
// changes: each event is learned and scored as if its line did not have
// the feature.
type FeatureImportance struct {
	Feature
	Effect
}

// ImportanceResult is a leave-one-out evaluation.
type ImportanceResult struct {
	*Result // Online, Baseline, Random, Config.Custom, Current, then "Without X" per namespace and per feature
	// Current is the policy evaluated.
	Current    string                `json:"current"`
	Namespaces []NamespaceImportance `json:"namespaces"`
	Features   []FeatureImportance   `json:"features"`
	// FeatureImportance is Personalizer's featureImportance: the
	// features' names by score tiers (see Tiers), most important first.
	FeatureImportance [][]string `json:"featureImportance"`
	// FeatureScores are the rows as an Evaluation's featureScores: the
	// namespaces', then the features'.
	FeatureScores []FeatureScore `json:"featureScores"`
}

// FeatureScore is a row of featureScores: the namespace, featureName and
// score (0 to 1) of Personalizer's FeatureImportance, and what leaving it
// out of the current policy changes.
type FeatureScore struct {
	// Namespace is a namespace row's index (the first letter of its
	// names), or a feature's namespace name ("" for the default one).
	Namespace string `json:"namespace"`
	// FeatureName is "" for a namespace row, else the feature's name in
	// its namespace as VW names it (a string feature's key and value).
	FeatureName string  `json:"featureName"`
	Score       float64 `json:"score"`
	// Change is Current's IPS estimate minus the one without it, and
	// Interval its 95% Gaussian interval.
	Change   float64   `json:"change"`
	Interval *Interval `json:"interval"`
}

// Sample is what the first lines of a log hold, for Importance.
type Sample struct {
	Namespaces []string  // namespace indices, sorted, without ' '
	Features   []Feature // the most frequent features, most frequent first
}

// Namespaces returns the namespace indices found in the first lines
// lines of src (malformed or dropped lines are passed over), sorted: the
// first bytes of the namespace names of the shared and action features,
// without the default namespace ' ' (features outside any namespace),
// which --ignore cannot name.
func Namespaces(ctx context.Context, src learner.Examples, lines int) ([]string, error) {
	s, err := SampleLines(ctx, src, lines, 0)
	if err != nil {
		return nil, err
	}
	return s.Namespaces, nil
}

// SampleLines reads the first lines lines of src (malformed or dropped
// lines are passed over) for their namespaces (as Namespaces) and their
// top most frequent features, by the number of events that have them
// (ties by name).
func SampleLines(ctx context.Context, src learner.Examples, lines, top int) (*Sample, error) {
	parser := bandit.DSJSONParser{KeepNames: top > 0}
	var (
		ev    bandit.Event
		seen  []byte
		count = map[bandit.FeatureKey]*Feature{}
		in    = map[bandit.FeatureKey]bool{} // in the event
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
		if top == 0 {
			continue
		}
		clear(in)
		ev.Features(func(k bandit.FeatureKey, name string) {
			if in[k] || name == "" {
				return
			}
			in[k] = true
			f := count[k]
			if f == nil {
				f = &Feature{Name: name, Key: k, FeatureName: name}
				if ns, feat, ok := strings.Cut(name, "^"); ok {
					f.Namespace, f.FeatureName = ns, feat
				}
				count[k] = f
			}
			f.Events++
		})
	}
	out := &Sample{}
	for _, ns := range seen {
		if ns != ' ' {
			out.Namespaces = append(out.Namespaces, string([]byte{ns}))
		}
	}
	sort.Strings(out.Namespaces)
	for _, f := range count {
		out.Features = append(out.Features, *f)
	}
	sort.Slice(out.Features, func(i, j int) bool {
		a, b := &out.Features[i], &out.Features[j]
		if a.Events != b.Events {
			return a.Events > b.Events
		}
		return a.Name < b.Name
	})
	out.Features = out.Features[:min(top, len(out.Features))]
	return out, nil
}

// withoutArgs is policy with namespace ns ignored.
func withoutArgs(policy, ns string) string {
	return strings.TrimSpace(policy + " --ignore " + ns)
}

// Importance evaluates cfg's policies, policy (named Current) and, in
// the same pass, one copy of policy per namespace of s with "--ignore
// <ns>" added and one per feature of s learned and scored on the events
// without that feature, each a custom policy learned as any other; it
// reports per namespace and per feature what leaving it out changes. The
// MaxCustom cap applies to cfg.Custom only.
func Importance(ctx context.Context, cfg Config, policy string, s Sample, src learner.Examples) (*ImportanceResult, error) {
	if _, err := bandit.ParsePolicy(policy); err != nil {
		return nil, err
	}
	if len(cfg.Custom) > MaxCustom {
		return nil, fmt.Errorf("a maximum of %d custom policies are allowed, got %d", MaxCustom, len(cfg.Custom))
	}
	first := 3 + len(cfg.Custom)
	pols := append(append([]Policy{}, cfg.Custom...), Policy{Name: CurrentName, Arguments: policy})
	for _, ns := range s.Namespaces {
		if len(ns) != 1 || ns == " " {
			return nil, fmt.Errorf("namespace %q: want one non-space byte", ns)
		}
		pols = append(pols, Policy{Name: WithoutName + ns, Arguments: withoutArgs(policy, ns)})
	}
	for _, f := range s.Features {
		pols = append(pols, Policy{Name: WithoutFeatureName + f.Name, Arguments: policy})
	}
	rows := len(s.Namespaces) + len(s.Features)
	// The paired differences: Σc, Σ c·x and Σ c·x² with x = (w−w')·r.
	n := 0.0
	sx := make([]float64, rows)
	sx2 := make([]float64, rows)
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
		for k := range rows {
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
	for k, f := range s.Features {
		key := f.Key
		e.custom[len(pols)-len(s.Features)+k].without = &key
	}
	res, err := e.run(ctx, src)
	if err != nil {
		return nil, err
	}
	out := &ImportanceResult{Result: res, Current: policy, Namespaces: []NamespaceImportance{}, Features: []FeatureImportance{}}
	cur := res.Policies[first].TotalSummary.AverageReward
	change := func(k int) Effect {
		p := first + 1 + k
		c := Effect{Policy: p, Change: cur - res.Policies[p].TotalSummary.AverageReward}
		if half, ok := gaussian(n, sx[k], sx2[k]); ok {
			c.Interval = &Interval{c.Change - half, c.Change + half}
		}
		return c
	}
	for k, ns := range s.Namespaces {
		out.Namespaces = append(out.Namespaces, NamespaceImportance{Namespace: ns, Arguments: res.Policies[first+1+k].Arguments, Effect: change(k)})
	}
	for k, f := range s.Features {
		out.Features = append(out.Features, FeatureImportance{Feature: f, Effect: change(len(s.Namespaces) + k)})
	}
	top := 0.0
	for _, r := range out.Namespaces {
		top = math.Max(top, r.Change)
	}
	for k := range out.Namespaces {
		out.Namespaces[k].Score = score(out.Namespaces[k].Change, top)
	}
	top = 0
	for _, r := range out.Features {
		top = math.Max(top, r.Change)
	}
	for k := range out.Features {
		out.Features[k].Score = score(out.Features[k].Change, top)
	}
	ranked := append([]FeatureImportance{}, out.Features...)
	sort.SliceStable(ranked, func(i, j int) bool { return ranked[i].Change > ranked[j].Change })
	names, scores := make([]string, len(ranked)), make([]float64, len(ranked))
	for k, f := range ranked {
		names[k], scores[k] = f.Name, f.Score
	}
	out.FeatureImportance = Tiers(names, scores)
	out.FeatureScores = []FeatureScore{}
	for _, n := range out.Namespaces {
		out.FeatureScores = append(out.FeatureScores, FeatureScore{Namespace: n.Namespace, Score: n.Score, Change: n.Change, Interval: n.Interval})
	}
	for _, f := range out.Features {
		out.FeatureScores = append(out.FeatureScores, FeatureScore{Namespace: f.Namespace, FeatureName: f.FeatureName, Score: f.Score, Change: f.Change, Interval: f.Interval})
	}
	return out, nil
}

// score is a row's score: max(change, 0)/top, where top is the largest
// change of its kind; 0 when top is not positive.
func score(change, top float64) float64 {
	if !(top > 0) || !(change > 0) {
		return 0
	}
	return change / top
}

// Open opens the lines of an evaluation from their start; done releases
// them.
type Open func(ctx context.Context) (src learner.Examples, done func(), err error)

// ImportanceOpen is Importance on the lines open opens, with the
// namespaces and the features most frequent features (0 for none) of
// their first ImportanceLines lines: it opens them twice.
func ImportanceOpen(ctx context.Context, cfg Config, policy string, features int, open Open) (*ImportanceResult, error) {
	if _, err := bandit.ParsePolicy(policy); err != nil { // a bad policy before a bad source
		return nil, err
	}
	if features < 0 {
		return nil, fmt.Errorf("%d features: want 0 or more", features)
	}
	src, done, err := open(ctx)
	if err != nil {
		return nil, err
	}
	s, err := SampleLines(ctx, src, ImportanceLines, features)
	done()
	if err != nil {
		return nil, err
	}
	if src, done, err = open(ctx); err != nil {
		return nil, err
	}
	defer done()
	return Importance(ctx, cfg, policy, *s, src)
}

// ImportanceFile is ImportanceOpen on a DSJson file, gzip-compressed or
// not.
func ImportanceFile(ctx context.Context, cfg Config, policy string, features int, path string) (*ImportanceResult, error) {
	if _, err := bandit.ParsePolicy(policy); err != nil { // a bad policy before a bad file
		return nil, err
	}
	res, err := ImportanceOpen(ctx, cfg, policy, features, func(context.Context) (learner.Examples, func(), error) {
		src, err := learner.OpenExamples(path)
		if err != nil {
			return nil, nil, err
		}
		return src, func() { src.Close() }, nil
	})
	if err != nil {
		return nil, fmt.Errorf("importance %s: %w", path, err)
	}
	return res, err
}
