package evaluate

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

// OfflineExperimentation is the policySource of the policies a search
// discovered, Personalizer's name.
const OfflineExperimentation = "OfflineExperimentation"

// DefaultBudget is how many candidates a search evaluates by default;
// MaxBudget is the most it allows. A search evaluates all its candidates
// in one pass (the custom-policy cap, MaxCustom, does not apply to them),
// each learned by one of Config.Workers goroutines; each candidate's
// model takes bandit.Policy.WeightBytes of memory.
const (
	DefaultBudget = 10
	MaxBudget     = 32
)

// vwDefaultLearningRate is VW's -l when none is given.
const vwDefaultLearningRate = 0.5

// Candidates returns the policies around current, a VW argument string,
// that a search evaluates: first each single change of it, in this
// order — the learning rate (-l) ×10, ÷10, ×3, ÷3; --power_t 0.5 or 0
// (the one current does not use); the other two --cb_type of mtr, ips
// and dr; -q :: added (when current has no interaction) or every
// interaction removed; --l1 1e-6; --l2 1e-6 — then the learning-rate
// changes combined with each other change, in the same order. Candidates
// equal to current or to an earlier one, or that do not parse, are left
// out; at most budget are returned, named "Search N" in order.
func Candidates(current string, budget int) ([]Policy, error) {
	if budget < 1 || budget > MaxBudget {
		return nil, fmt.Errorf("search budget %d: want 1 to %d", budget, MaxBudget)
	}
	if _, err := bandit.ParsePolicy(current); err != nil {
		return nil, err
	}
	base := splitArgs(current)
	lr := vwDefaultLearningRate
	if v, ok := base.value("learning_rate"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("policy %q: learning rate %q is not a number", current, v)
		}
		lr = f
	}
	var rates []args
	for _, f := range []float64{10, 0.1, 3, 1.0 / 3} {
		rates = append(rates, base.with("learning_rate", "-l", strconv.FormatFloat(lr*f, 'g', 6, 64)))
	}
	others := func(a args) []args {
		var out []args
		if v, _ := a.value("power_t"); v == "0" || v == "0.0" {
			out = append(out, a.with("power_t", "--power_t", "0.5"))
		} else {
			out = append(out, a.with("power_t", "--power_t", "0"))
		}
		cb, ok := a.value("cb_type")
		if !ok {
			cb = "mtr"
		}
		for _, t := range []string{"mtr", "ips", "dr"} {
			if t != cb {
				out = append(out, a.with("cb_type", "--cb_type", t))
			}
		}
		if a.has("quadratic") || a.has("cubic") || a.has("interactions") {
			out = append(out, a.without("quadratic").without("cubic").without("interactions"))
		} else {
			out = append(out, a.with("quadratic", "-q", "::"))
		}
		out = append(out, a.with("l1", "--l1", "1e-6"), a.with("l2", "--l2", "1e-6"))
		return out
	}
	all := append(append([]args{}, rates...), others(base)...)
	for _, r := range rates {
		all = append(all, others(r)...)
	}
	seen := map[string]bool{strings.Join(strings.Fields(current), " "): true}
	var out []Policy
	for _, a := range all {
		s := a.String()
		if seen[s] {
			continue
		}
		seen[s] = true
		if _, err := bandit.ParsePolicy(s); err != nil {
			continue
		}
		out = append(out, Policy{Name: fmt.Sprintf("Search %d", len(out)+1), Arguments: s, Source: OfflineExperimentation})
		if len(out) == budget {
			break
		}
	}
	return out, nil
}

// args is a VW command line as options, each its tokens (the option and
// its value, if separate) and its long name.
type args []arg

type arg struct {
	name   string // long name, "" for a token that is not an option
	value  string
	tokens []string
}

var longNames = map[string]string{"q": "quadratic", "l": "learning_rate", "b": "bit_precision"}

// splitArgs splits s as bandit.ParsePolicy reads it: "--name=value",
// "-lVALUE", or an option followed by its value (a token that does not
// start with '-').
func splitArgs(s string) args {
	f := strings.Fields(s)
	var out args
	for i := 0; i < len(f); i++ {
		t := f[i]
		a := arg{tokens: []string{t}}
		switch {
		case strings.HasPrefix(t, "--"):
			var has bool
			a.name, a.value, has = strings.Cut(t[2:], "=")
			if !has && i+1 < len(f) && !strings.HasPrefix(f[i+1], "-") {
				i++
				a.value, a.tokens = f[i], append(a.tokens, f[i])
			}
		case strings.HasPrefix(t, "-") && len(t) >= 2:
			a.name = t[1:2]
			if len(t) > 2 {
				a.value = t[2:]
			} else if i+1 < len(f) && !strings.HasPrefix(f[i+1], "-") {
				i++
				a.value, a.tokens = f[i], append(a.tokens, f[i])
			}
			if long, ok := longNames[a.name]; ok {
				a.name = long
			}
		}
		out = append(out, a)
	}
	return out
}

// value returns the first value of the option (VW's rule for overridable
// options).
func (a args) value(name string) (string, bool) {
	for _, o := range a {
		if o.name == name {
			return o.value, true
		}
	}
	return "", false
}

func (a args) has(name string) bool { _, ok := a.value(name); return ok }

// without returns a without the option.
func (a args) without(name string) args {
	var out args
	for _, o := range a {
		if o.name != name {
			out = append(out, o)
		}
	}
	return out
}

// with returns a with the option set to value: in place of its first
// occurrence (the others removed), or at the end.
func (a args) with(name, flag, value string) args {
	var out args
	set := arg{name: name, value: value, tokens: []string{flag, value}}
	done := false
	for _, o := range a {
		switch {
		case o.name != name:
			out = append(out, o)
		case !done:
			out, done = append(out, set), true
		}
	}
	if !done {
		out = append(out, set)
	}
	return out
}

func (a args) String() string {
	var t []string
	for _, o := range a {
		t = append(t, o.tokens...)
	}
	return strings.Join(t, " ")
}

// SearchResult is a search's evaluation and its pick.
type SearchResult struct {
	*Result // Online, Baseline, Random, Config.Custom, then the candidates (policySource OfflineExperimentation)
	// Current is the policy searched around.
	Current string `json:"current"`
	// Best is the index in Policies of the candidate with the highest
	// lower bound, if that bound is above Online's; -1 otherwise.
	Best int `json:"best"`
	// Bound names the lower bound compared.
	Bound string `json:"bound"`
	// OptimalPolicy is the arguments of the best candidate, "" if none
	// beats Online (Personalizer's optimalPolicy).
	OptimalPolicy string `json:"optimalPolicy"`
}

// SearchBound is the bound a search compares: the lower end of the 95%
// Cressie-Read interval of the total (valid with heavy importance
// weights, unlike the Gaussian interval of IPS), -Inf when undefined.
const SearchBound = "lower end of the 95% Cressie-Read (CR) interval"

// LowerBound returns a summary's SearchBound.
func LowerBound(s Summary) float64 {
	if e := CREstimate(s); e != nil && e.Robust != nil {
		return e.Robust.Lower
	}
	return math.Inf(-1)
}

// CREstimate returns the Cressie-Read estimate of s, the one a search
// picks by, or nil if s has none.
func CREstimate(s Summary) *Estimate {
	for i := range s.Estimates {
		if s.Estimates[i].Estimator == CR {
			return &s.Estimates[i]
		}
	}
	return nil
}

// Search evaluates cfg's policies and budget candidates around current
// (see Candidates) on src in one pass, and picks the candidate with the
// highest SearchBound (the first on ties) if it is above Online's.
func Search(ctx context.Context, cfg Config, current string, budget int, src learner.Examples) (*SearchResult, error) {
	cands, err := Candidates(current, budget)
	if err != nil {
		return nil, err
	}
	if len(cfg.Custom) > MaxCustom {
		return nil, fmt.Errorf("a maximum of %d custom policies are allowed, got %d", MaxCustom, len(cfg.Custom))
	}
	user := len(cfg.Custom)
	cfg.Custom = append(append([]Policy{}, cfg.Custom...), cands...)
	e, err := newEvaluatorLimit(cfg, MaxCustom+MaxBudget)
	if err != nil {
		return nil, err
	}
	res, err := e.run(ctx, src)
	if err != nil {
		return nil, err
	}
	out := &SearchResult{Result: res, Current: current, Best: -1, Bound: SearchBound}
	first := 3 + user
	best := LowerBound(res.Policies[0].TotalSummary)
	for i := first; i < len(res.Policies); i++ {
		res.Policies[i].Source = OfflineExperimentation
		if lb := LowerBound(res.Policies[i].TotalSummary); lb > best {
			out.Best, best = i, lb
		}
	}
	if out.Best >= 0 {
		out.OptimalPolicy = res.Policies[out.Best].Arguments
	}
	return out, nil
}

// SearchFile is Search on a DSJson file, gzip-compressed or not.
func SearchFile(ctx context.Context, cfg Config, current string, budget int, path string) (*SearchResult, error) {
	if _, err := Candidates(current, budget); err != nil { // a bad policy before a bad file
		return nil, err
	}
	src, err := learner.OpenExamples(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	res, err := Search(ctx, cfg, current, budget, src)
	if err != nil {
		return nil, fmt.Errorf("search %s: %w", path, err)
	}
	return res, nil
}
