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
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/server"
)

// runEvaluate is `personalizer evaluate`: an offline evaluation of the
// Online, Baseline, Random and custom policies on a DSJson file.
func runEvaluate(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("evaluate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: personalizer evaluate (--dsjson FILE | --loop NAME --from TIME [--to TIME] [--kafka-brokers ADDRS])\n"+
			"                            [--policy [NAME=]\"VW ARGS\" ...] [--bucket 1h] [--json]\n"+
			"                            [--search [--budget N] | --importance [--features N] [--model FILE]] [--current \"VW ARGS\"]\n\n"+
			"Estimates the average reward the Online (logged), Baseline (first action), Random and custom\n"+
			"policies would have had on the joined events of FILE, in order: IPS, SNIPS and DR with 95%\n"+
			"intervals (Gaussian), and Cressie-Read (CR) with an interval valid with heavy importance weights,\n"+
			"per time bucket and in total.\n\n"+
			"With --loop it reads the loop's joined events from the broker instead: those whose Timestamp is in\n"+
			"[--from, --to), in the order of the joined topic, as the Evaluations API does.\n\n"+
			"With --search it also evaluates, in the same pass, up to --budget policies around --current (the\n"+
			"learning rate ×10, ÷10, ×3, ÷3, --power_t, --cb_type, -q ::, --l1, --l2, then the learning rate\n"+
			"combined with each other change) and names the one whose 95% Cressie-Read lower bound is the\n"+
			"highest if it is above Online's.\n\n"+
			"With --importance it also evaluates --current (named Current) and, in the same pass, one copy of it\n"+
			"per namespace found in the first 1000 lines with --ignore NAMESPACE added, and one copy per feature\n"+
			"among the --features most frequent in those lines that learns and scores every event without that\n"+
			"feature; it prints per namespace and per feature the IPS estimate's change (Current minus the copy)\n"+
			"with its 95% interval and a 0-1 score (the change divided by the largest change of its kind;\n"+
			"negative changes score 0). With --model it instead ranks the features of a model file (as train -f\n"+
			"writes) by their weights, learning nothing: a feature's score is its mean |weight × value| over the\n"+
			"actions of the first 1000 events, divided by the largest; interactions are named as --invert_hash.\n\n")
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
		features = evaluate.DefaultFeatures
		model    string
		loopName string
		brokers  string
		from, to timeFlag
		current  = bandit.DefaultPolicy
		rewardLo = 0.0
		rewardHi = 1.0
	)
	fs.StringVar(&data, "dsjson", "", "DSJson `file` of joined events, gzip-compressed or not")
	fs.Var(&custom, "policy", "a custom policy: Vowpal Wabbit `arguments`, optionally named NAME=ARGS; repeat for up to 10")
	fs.DurationVar(&cfg.Bucket, "bucket", 0, "summarize per time bucket of this `duration` (by the events' Timestamp); 0 for totals only")
	fs.BoolVar(&asJSON, "json", false, "print the result as the Evaluations API's Evaluation object (JSON: policyResults per bucket and total, optimalPolicy, featureImportance, featureScores)")
	fs.BoolVar(&quiet, "quiet", false, "print no progress")
	fs.Float64Var(&rewardLo, "reward-min", rewardLo, "the smallest possible reward, for the Cressie-Read interval (rewards seen below widen it)")
	fs.Float64Var(&rewardHi, "reward-max", rewardHi, "the largest possible reward, for the Cressie-Read interval (rewards seen above widen it)")
	fs.BoolVar(&search, "search", false, "also search for a better policy around --current (policySource OfflineExperimentation)")
	fs.IntVar(&budget, "budget", budget, fmt.Sprintf("with --search, how many candidate policies to evaluate (1 to %d)", evaluate.MaxBudget))
	fs.BoolVar(&imp, "importance", false, "also evaluate leaving each namespace and each of the --features most frequent features out of --current (feature importance)")
	fs.IntVar(&features, "features", features, "with --importance, how many of the most frequent features to leave out one at a time (0: namespaces only)")
	fs.StringVar(&model, "model", "", "with --importance, rank the features of this model `file` by weight instead of evaluating")
	fs.StringVar(&loopName, "loop", "", "evaluate this loop's joined events from the broker instead of a file")
	fs.Var(&from, "from", "with --loop, the first event `time` (RFC 3339)")
	fs.Var(&to, "to", "with --loop, the `time` (RFC 3339) before which events are evaluated (default: now)")
	brokersVar(fs, &brokers)
	fs.StringVar(&current, "current", current, "with --search or --importance, the current policy's VW `arguments` (the loop's learning policy)")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	rest := fs.Args()
	if data == "" && len(rest) == 1 {
		data, rest = rest[0], nil
	}
	if loopName != "" && to.IsZero() {
		to.Time = time.Now().UTC()
	}
	switch {
	case len(rest) > 0:
		return &usageError{cmd: "evaluate", err: fmt.Errorf("unexpected arguments %q", rest)}
	case data == "" && loopName == "":
		return &usageError{cmd: "evaluate", err: errors.New("needs --dsjson FILE or --loop NAME")}
	case data != "" && loopName != "":
		return &usageError{cmd: "evaluate", err: errors.New("--dsjson and --loop are alternatives")}
	case loopName != "" && from.IsZero():
		return &usageError{cmd: "evaluate", err: errors.New("--loop needs --from TIME")}
	case loopName != "" && !to.After(from.Time):
		return &usageError{cmd: "evaluate", err: fmt.Errorf("--to %v must be after --from %v", to.Format(time.RFC3339Nano), from.Format(time.RFC3339Nano))}
	case loopName == "" && (!from.IsZero() || !to.IsZero()):
		return &usageError{cmd: "evaluate", err: errors.New("--from and --to go with --loop")}
	case model != "" && !imp:
		return &usageError{cmd: "evaluate", err: errors.New("--model goes with --importance")}
	case model != "" && loopName != "":
		return &usageError{cmd: "evaluate", err: errors.New("--model names its features with a --dsjson file")}
	case imp && features < 0:
		return &usageError{cmd: "evaluate", err: fmt.Errorf("--features %d must not be negative", features)}
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
	if model != "" {
		w, err := evaluate.WeightsFile(ctx, model, data)
		if err != nil {
			return err
		}
		if asJSON {
			return writeIndented(stdout, w)
		}
		return printWeights(stdout, w)
	}
	open := func(context.Context) (learner.Examples, func(), error) {
		src, err := learner.OpenExamples(data)
		if err != nil {
			return nil, nil, err
		}
		return src, func() { src.Close() }, nil
	}
	name := data
	if loopName != "" {
		name = "loop " + loopName
		var err error
		if open, err = loopSource(ctx, splitBrokers(brokers), loopName, from.Time, to.Time, quiet, &cfg, stderr); err != nil {
			return err
		}
	} else if !quiet {
		cfg.Progress = progressPrinter(stderr, data)
	}
	var (
		res    *evaluate.Result
		found  *evaluate.SearchResult
		ranked *evaluate.ImportanceResult
		err    error
	)
	switch {
	case imp:
		ranked, err = evaluate.ImportanceOpen(ctx, cfg, current, features, open)
		if ranked != nil {
			res = ranked.Result
		}
	case search:
		if _, err := evaluate.Candidates(current, budget); err != nil { // a bad policy before a bad source
			return err
		}
		var src learner.Examples
		var done func()
		if src, done, err = open(ctx); err == nil {
			found, err = evaluate.Search(ctx, cfg, current, budget, src)
			done()
			if found != nil {
				res = found.Result
			}
		}
	default:
		var src learner.Examples
		var done func()
		if src, done, err = open(ctx); err == nil {
			res, err = evaluate.Run(ctx, cfg, src)
			done()
		}
	}
	if err != nil {
		return fmt.Errorf("evaluate %s: %w", name, err)
	}
	for _, e := range res.Errors {
		fmt.Fprintf(stderr, "warning: skipped %s\n", e)
	}
	if more := res.Malformed + res.NoDecision - int64(len(res.Errors)); more > 0 {
		fmt.Fprintf(stderr, "warning: %d more lines skipped\n", more)
	}
	if asJSON {
		// The Evaluations API's Evaluation object, completed.
		out := &evalResult{SearchResult: found}
		switch {
		case ranked != nil:
			out = importanceResult(ranked)
		case found == nil:
			out.SearchResult = &evaluate.SearchResult{Result: res, Best: -1}
		}
		ev := server.Evaluation{Name: name, StartTime: res.Start, EndTime: res.End, EvaluationType: server.EvaluationManual,
			CreationTime: time.Now().UTC(), Progress: server.EvaluationProgress{Lines: res.Lines}}
		out.complete(&ev)
		return writeIndented(stdout, &ev)
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

// printImportance prints a row per namespace, then a row per feature,
// the most important first.
func printImportance(w io.Writer, r *evaluate.ImportanceResult) error {
	fmt.Fprintf(w, "\nfeature importance of %q: IPS estimate of Current minus the estimate without the namespace (--ignore) or the feature\n", r.Current)
	type row struct {
		kind, name string
		events     string
		evaluate.Effect
	}
	var ns, fs []row
	for _, n := range r.Namespaces {
		ns = append(ns, row{"namespace", n.Namespace, "-", n.Effect})
	}
	for _, f := range r.Features {
		fs = append(fs, row{"feature", f.Name, strconv.Itoa(f.Events), f.Effect})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tSCORE\tCHANGE\tGAUSSIAN 95%\tWITHOUT\tIN SAMPLE\t")
	for _, rows := range [][]row{ns, fs} {
		sort.SliceStable(rows, func(i, j int) bool { return rows[i].Change > rows[j].Change })
		for _, x := range rows {
			iv := "-"
			if x.Interval != nil {
				iv = fmt.Sprintf("[%.6f, %.6f]", x.Interval.Lower, x.Interval.Upper)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.6f\t%s\t%.6f\t%s\t\n", x.kind, x.name, x.Score, x.Change, iv, r.Policies[x.Policy].TotalSummary.AverageReward, x.events)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "featureImportance: %s\n", tiersText(r.FeatureImportance))
	return nil
}

// tiersText shows featureImportance's groups.
func tiersText(groups [][]string) string {
	var b strings.Builder
	for i, g := range groups {
		if i > 0 {
			b.WriteString(" > ")
		}
		b.WriteString("[" + strings.Join(g, ", ") + "]")
	}
	return b.String()
}

// printWeights prints a row per feature of a model, the most important
// first.
func printWeights(w io.Writer, r *evaluate.WeightResult) error {
	fmt.Fprintf(w, "weight-based feature importance of the model %q over %d events (%d actions): mean |weight × value| per action\n", r.Arguments, r.Events, r.Actions)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tSCORE\tMEAN |W·X|\t")
	for _, f := range r.Features {
		fmt.Fprintf(tw, "%s\t%.3f\t%.6g\t\n", f.Name, f.Score, f.Mean)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "featureImportance: %s\n", tiersText(r.FeatureImportance))
	return nil
}

// writeIndented writes v as indented JSON.
func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// timeFlag is an RFC 3339 time flag.
type timeFlag struct{ time.Time }

func (t *timeFlag) String() string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

func (t *timeFlag) Set(v string) error {
	p, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return fmt.Errorf("want an RFC 3339 time such as 2024-05-01T10:00:00Z: %w", err)
	}
	t.Time = p.UTC()
	return nil
}

// loopSource returns how to open loop's joined events whose Timestamp is
// in [from, to), up to the end of the joined topic now, and makes
// cfg.Progress print how far it is unless quiet.
func loopSource(ctx context.Context, brokers []string, loop string, from, to time.Time, quiet bool, cfg *evaluate.Config, stderr io.Writer) (evaluate.Open, error) {
	if len(brokers) == 0 {
		return nil, errors.New("--kafka-brokers is empty")
	}
	start, end, err := joinedOffsets(ctx, brokers, from)
	if errors.Is(err, server.ErrNoLogsInRange) {
		return nil, fmt.Errorf("loop %s: no joined events since %s", loop, from.Format(time.RFC3339Nano))
	}
	if err != nil {
		return nil, err
	}
	var records int64 // at most this many: other loops' records are in the topic too
	for p, off := range start {
		records += max(end[p]-off, 0)
	}
	var in *inRange
	if !quiet {
		begin, last := time.Now(), time.Now()
		cfg.Progress = func(p evaluate.Progress) {
			if now := time.Now(); now.Sub(last) >= time.Second {
				last = now
				fmt.Fprintf(stderr, "evaluate: %d joined records of the loop read (of at most %d in the topic), %d in range, %d events evaluated, %.0f records/s\n",
					in.lines.Load(), records, p.Lines, p.Evaluated, float64(in.lines.Load())/now.Sub(begin).Seconds())
			}
		}
	}
	return func(ctx context.Context) (learner.Examples, func(), error) {
		r, done, err := joinedRange(ctx, brokers, loop, start, end, from, to)
		if err != nil {
			return nil, nil, err
		}
		in = r
		return r, done, nil
	}, nil
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
