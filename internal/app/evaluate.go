package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/evaluate"
)

// runEvaluate is `personalizer evaluate`: an offline evaluation of the
// Online, Baseline, Random and custom policies on a DSJson file.
func runEvaluate(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("evaluate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: personalizer evaluate --dsjson FILE [--policy [NAME=]\"VW ARGS\" ...] [--bucket 1h] [--json]\n"+
			"                            [--search [--budget N] | --importance] [--current \"VW ARGS\"]\n\n"+
			"Estimates the average reward the Online (logged), Baseline (first action), Random and custom\n"+
			"policies would have had on the joined events of FILE, in order: IPS, SNIPS and DR with 95%\n"+
			"intervals (Gaussian), and Cressie-Read (CR) with an interval valid with heavy importance weights,\n"+
			"per time bucket and in total.\n\n"+
			"With --search it also evaluates, in the same pass, up to --budget policies around --current (the\n"+
			"learning rate ×10, ÷10, ×3, ÷3, --power_t, --cb_type, -q ::, --l1, --l2, then the learning rate\n"+
			"combined with each other change) and names the one whose 95% Cressie-Read lower bound is the\n"+
			"highest if it is above Online's.\n\n"+
			"With --importance it also evaluates --current (named Current) and, in the same pass, one copy of it\n"+
			"per namespace found in the first 1000 lines with --ignore NAMESPACE added, and prints per namespace\n"+
			"the IPS estimate's change (Current minus the copy) with its 95% interval and a 0-1 score (the\n"+
			"change divided by the largest change; negative changes score 0).\n\n")
		fs.PrintDefaults()
	}
	var (
		cfg      evaluate.Config
		data     string
		custom   policyList
		asJSON   bool
		quiet    bool
		search   bool
		imp      bool
		budget   = evaluate.DefaultBudget
		current  = bandit.DefaultPolicy
		rewardLo = 0.0
		rewardHi = 1.0
	)
	fs.StringVar(&data, "dsjson", "", "DSJson `file` of joined events, gzip-compressed or not")
	fs.Var(&custom, "policy", "a custom policy: Vowpal Wabbit `arguments`, optionally named NAME=ARGS; repeat for up to 10")
	fs.DurationVar(&cfg.Bucket, "bucket", 0, "summarize per time bucket of this `duration` (by the events' Timestamp); 0 for totals only")
	fs.BoolVar(&asJSON, "json", false, "print the whole result as JSON (Personalizer's policyResults, per bucket and total)")
	fs.BoolVar(&quiet, "quiet", false, "print no progress")
	fs.Float64Var(&rewardLo, "reward-min", rewardLo, "the smallest possible reward, for the Cressie-Read interval (rewards seen below widen it)")
	fs.Float64Var(&rewardHi, "reward-max", rewardHi, "the largest possible reward, for the Cressie-Read interval (rewards seen above widen it)")
	fs.BoolVar(&search, "search", false, "also search for a better policy around --current (policySource OfflineExperimentation)")
	fs.IntVar(&budget, "budget", budget, fmt.Sprintf("with --search, how many candidate policies to evaluate (1 to %d)", evaluate.MaxBudget))
	fs.BoolVar(&imp, "importance", false, "also evaluate leaving each namespace out of --current (feature importance)")
	fs.StringVar(&current, "current", current, "with --search or --importance, the current policy's VW `arguments` (the loop's learning policy)")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	rest := fs.Args()
	if data == "" && len(rest) == 1 {
		data, rest = rest[0], nil
	}
	switch {
	case len(rest) > 0:
		return &usageError{cmd: "evaluate", err: fmt.Errorf("unexpected arguments %q", rest)}
	case data == "":
		return &usageError{cmd: "evaluate", err: errors.New("needs --dsjson FILE")}
	case cfg.Bucket < 0:
		return &usageError{cmd: "evaluate", err: fmt.Errorf("--bucket %v must not be negative", cfg.Bucket)}
	case search && (budget < 1 || budget > evaluate.MaxBudget):
		return &usageError{cmd: "evaluate", err: fmt.Errorf("--budget %d: want 1 to %d", budget, evaluate.MaxBudget)}
	case search && imp:
		return &usageError{cmd: "evaluate", err: errors.New("--search and --importance are separate runs")}
	case !(rewardLo < rewardHi):
		return &usageError{cmd: "evaluate", err: fmt.Errorf("--reward-min %v must be below --reward-max %v", rewardLo, rewardHi)}
	}
	cfg.Custom, cfg.RewardMin, cfg.RewardMax = custom, rewardLo, rewardHi
	if !quiet {
		cfg.Progress = progressPrinter(stderr, data)
	}
	var (
		res    *evaluate.Result
		found  *evaluate.SearchResult
		ranked *evaluate.ImportanceResult
		err    error
		result any
	)
	switch {
	case imp:
		ranked, err = evaluate.ImportanceFile(ctx, cfg, current, data)
		if ranked != nil {
			res, result = ranked.Result, ranked
		}
	case search:
		found, err = evaluate.SearchFile(ctx, cfg, current, budget, data)
		if found != nil {
			res, result = found.Result, found
		}
	default:
		res, err = evaluate.File(ctx, cfg, data)
		result = res
	}
	if err != nil {
		return err
	}
	for _, e := range res.Errors {
		fmt.Fprintf(stderr, "warning: skipped %s\n", e)
	}
	if more := res.Malformed + res.NoDecision - int64(len(res.Errors)); more > 0 {
		fmt.Fprintf(stderr, "warning: %d more lines skipped\n", more)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(result)
	}
	if err := printEvaluation(stdout, res); err != nil {
		return err
	}
	if found != nil {
		printSearch(stdout, found)
	}
	if ranked != nil {
		return printImportance(stdout, ranked)
	}
	return nil
}

// printImportance prints a row per namespace, the most important first.
func printImportance(w io.Writer, r *evaluate.ImportanceResult) error {
	fmt.Fprintf(w, "\nfeature importance of %q: IPS estimate of Current minus the estimate without the namespace (--ignore)\n", r.Current)
	rows := append([]evaluate.NamespaceImportance{}, r.Namespaces...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Change > rows[j].Change })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tSCORE\tCHANGE\tGAUSSIAN 95%\tWITHOUT\t")
	for _, n := range rows {
		iv := "-"
		if n.Interval != nil {
			iv = fmt.Sprintf("[%.6f, %.6f]", n.Interval.Lower, n.Interval.Upper)
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.6f\t%s\t%.6f\t\n", n.Namespace, n.Score, n.Change, iv, r.Policies[n.Policy].TotalSummary.AverageReward)
	}
	return tw.Flush()
}

// printSearch prints each candidate's bound and the pick.
func printSearch(w io.Writer, s *evaluate.SearchResult) {
	fmt.Fprintf(w, "\nsearch around %q, by the %s:\n", s.Current, s.Bound)
	fmt.Fprintf(w, "%s: %.6f\n", evaluate.Online, evaluate.LowerBound(s.Policies[0].TotalSummary))
	for _, p := range s.Policies {
		if p.Source == evaluate.OfflineExperimentation {
			fmt.Fprintf(w, "%s: %.6f  %s\n", p.Name, evaluate.LowerBound(p.TotalSummary), p.Arguments)
		}
	}
	if s.Best < 0 {
		fmt.Fprintln(w, "optimal policy: none above Online's bound; keep the current policy")
		return
	}
	fmt.Fprintf(w, "optimal policy: %s: %s\n", s.Policies[s.Best].Name, s.OptimalPolicy)
}

// policyList is the repeatable --policy flag.
type policyList []evaluate.Policy

func (l *policyList) String() string { return fmt.Sprint(len(*l), " policies") }

// Set reads [NAME=]ARGS: a name is text before an '=' that does not start
// with '-' (VW arguments do).
func (l *policyList) Set(v string) error {
	p := evaluate.Policy{Arguments: strings.TrimSpace(v)}
	if name, args, ok := strings.Cut(v, "="); ok && !strings.HasPrefix(strings.TrimSpace(name), "-") {
		p.Name, p.Arguments = strings.TrimSpace(name), strings.TrimSpace(args)
		if p.Name == "" {
			return errors.New("empty policy name before '='")
		}
	}
	if p.Arguments == "" {
		return errors.New("empty policy arguments")
	}
	*l = append(*l, p)
	return nil
}

// progressPrinter prints the progress on stderr at most once a second,
// with the share of the file read when it is not compressed.
func progressPrinter(stderr io.Writer, path string) func(evaluate.Progress) {
	var size int64
	if st, err := os.Stat(path); err == nil && !gzipped(path) {
		size = st.Size()
	}
	start := time.Now()
	last := start
	return func(p evaluate.Progress) {
		now := time.Now()
		if now.Sub(last) < time.Second {
			return
		}
		last = now
		pct := ""
		if size > 0 {
			pct = fmt.Sprintf(" (%.0f%%)", 100*float64(p.Bytes)/float64(size))
		}
		fmt.Fprintf(stderr, "evaluate: %d lines, %d events evaluated, %.1f MB read%s, %.0f lines/s\n",
			p.Lines, p.Evaluated, float64(p.Bytes)/1e6, pct, float64(p.Lines)/now.Sub(start).Seconds())
	}
}

// gzipped reports whether the file at path starts with gzip's magic bytes.
func gzipped(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [2]byte
	n, _ := io.ReadFull(f, magic[:])
	return n == 2 && magic == [2]byte{0x1f, 0x8b}
}

// printEvaluation prints the totals as a table: a row per policy and
// estimator.
func printEvaluation(w io.Writer, res *evaluate.Result) error {
	fmt.Fprintf(w, "%d events evaluated of %d lines (%d _skipLearn, %d without actions, %d unlabeled, %d without a logged decision, %d malformed)\n",
		res.Evaluated, res.Lines, res.SkipLearn, res.Dropped, res.Unlabeled, res.NoDecision, res.Malformed)
	fmt.Fprintf(w, "intervals: %.0f%%; gaussian = estimate ± z·sd/√n of the per-event terms; cressie-read = the empirical-likelihood interval of CR, valid with heavy importance weights\n",
		100*res.Confidence)
	fmt.Fprintf(w, "DR reward model: %s\n\n", res.RewardModel)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tESTIMATOR\tESTIMATE\tGAUSSIAN 95%\tCRESSIE-READ 95%\tEVENTS\t")
	num := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return strconv.FormatFloat(*v, 'f', 6, 64)
	}
	iv := func(i *evaluate.Interval) string {
		if i == nil {
			return "-"
		}
		return "[" + strconv.FormatFloat(i.Lower, 'f', 6, 64) + ", " + strconv.FormatFloat(i.Upper, 'f', 6, 64) + "]"
	}
	for _, p := range res.Policies {
		for _, e := range p.TotalSummary.Estimates {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t\n", p.Name, e.Estimator, num(e.Value), iv(e.Gaussian), iv(e.Robust), p.TotalSummary.Events)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range res.Policies {
		if p.Source == evaluate.Custom {
			fmt.Fprintf(w, "%s: %s\n", p.Name, p.Arguments)
		}
	}
	return nil
}
