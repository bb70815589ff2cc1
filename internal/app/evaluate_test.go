package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/server"
)

const evalData = "../../evaluate/testdata/tiny.dsjson"

// TestEvaluate runs `personalizer evaluate` on the evaluate package's
// tiny log: the table's Online row is the mean reward 4/5 with the
// Gaussian half-width 0.2·z, and --json is the Result with a summary per
// hour.
func TestEvaluate(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	args := []string{"evaluate", "--dsjson", evalData, "--policy", "fast=--cb_explore_adf -l 0.5", "--policy", "--cb_explore_adf --cb_type ips", "--bucket", "1h"}
	if err := run(context.Background(), args, &stdout, &stderr, noEnv); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"5 events evaluated of 7 lines (1 _skipLearn, 0 without actions, 0 unlabeled, 0 without a logged decision, 1 malformed)\n",
		"Online    IPS        0.800000  [0.408007, 1.191993]   -                     5",
		"Online    CR         0.800000  -                      [0.416800, 1.000000]  5",
		"Baseline  SNIPS      0.720000",
		"fast: --cb_explore_adf -l 0.5\n",
		"Custom 2: --cb_explore_adf --cb_type ips\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if want := "warning: skipped line 4: offset 38: expected a number\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}

	stdout.Reset()
	if err := run(context.Background(), append(args, "--json", "--quiet"), &stdout, &stderr, noEnv); err != nil {
		t.Fatal(err)
	}
	var res server.Evaluation
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, stdout.String())
	}
	if res.Status != server.EvaluationCompleted || res.Name != evalData || res.Counts.Evaluated != 5 || len(res.PolicyResults) != 5 ||
		res.PolicyResults[3].Name != "fast" || res.PolicyResults[4].Source != "Custom" ||
		len(res.PolicyResults[0].Summary) != 3 || res.PolicyResults[0].TotalSummary.AverageReward != 0.8 {
		t.Errorf("--json result: %+v", res)
	}
	for _, key := range []string{`"policyResults"`, `"ipsEstimatorNumerator": 4`, `"aggregateTimeWindow": "PT1H"`, `"policySource": "Baseline"`, `"cressieRead"`} {
		if !strings.Contains(stdout.String(), key) {
			t.Errorf("--json lacks %s", key)
		}
	}
}

func TestEvaluateFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.dsjson")
	os.WriteFile(empty, nil, 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"evaluate"}, "evaluate: needs --dsjson FILE"},
		{[]string{"evaluate", "--dsjson", evalData, "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"evaluate", "--dsjson", evalData, "--bucket", "soon"}, `invalid value "soon" for flag -bucket`},
		{[]string{"evaluate", "--dsjson", evalData, "--bucket", "-1h"}, "--bucket -1h0m0s must not be negative"},
		{[]string{"evaluate", "--dsjson", evalData, "--policy", "x="}, "empty policy arguments"},
		{[]string{"evaluate", "--dsjson", evalData, "--policy", "--cb_explore_adf --bogus 1"}, "option --bogus is not supported"},
		{[]string{"evaluate", "--dsjson", evalData, "--reward-min", "1", "--reward-max", "0"}, "--reward-min 1 must be below --reward-max 0"},
		{[]string{"evaluate", "--dsjson", filepath.Join(dir, "missing.dsjson")}, "open data"},
		{[]string{"evaluate", "--dsjson", empty}, "no event to evaluate in 0 lines"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tt.args, &stdout, &stderr, noEnv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestEvaluateSearch: --search prints each candidate's CR lower bound and
// the pick, the same as evaluate.SearchFile; --json is the SearchResult.
func TestEvaluateSearch(t *testing.T) {
	t.Parallel()
	const data = "../../testdata/vw/public_train.dsjson.gz"
	const cur = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"
	want, err := evaluate.SearchFile(context.Background(), evaluate.Config{}, cur, 3, data)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	args := []string{"evaluate", "--dsjson", data, "--search", "--budget", "3", "--quiet"}
	if err := run(context.Background(), args, &stdout, &stderr, noEnv); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, line := range []string{
		"search around \"" + cur + "\", by the lower end of the 95% Cressie-Read (CR) interval:\n",
		"Online: 0.355037\n",
		"Search 1: 0.414556  --cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.01 --cb_type mtr -q ::\n",
		"Search 2: 0.367943  --cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.0001 --cb_type mtr -q ::\n",
		"Search 3: 0.379592  --cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.003 --cb_type mtr -q ::\n",
		"optimal policy: Search 1: " + want.OptimalPolicy + "\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
	if want.OptimalPolicy != "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.01 --cb_type mtr -q ::" {
		t.Errorf("optimal %q", want.OptimalPolicy)
	}

	stdout.Reset()
	if err := run(context.Background(), append(args, "--json"), &stdout, &stderr, noEnv); err != nil {
		t.Fatal(err)
	}
	sameResults(t, "evaluate --search --json", stdout.Bytes(), &evalResult{SearchResult: want})

	for _, bad := range [][]string{{"--budget", "0"}, {"--budget", "33"}, {"--current", "--cb_explore_adf --nope"}} {
		err := run(context.Background(), append([]string{"evaluate", "--dsjson", data, "--search", "--quiet"}, bad...), &stdout, &stderr, noEnv)
		if err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// TestEvaluateImportance runs `personalizer evaluate --importance`: its
// --json rows are the evaluate package's, and the table prints them.
func TestEvaluateImportance(t *testing.T) {
	t.Parallel()
	const current = "--cb_explore_adf --epsilon 0.2 --cb_type ips -q UA -l 0.1"
	const data = "../../testdata/vw/public_train.dsjson.gz"
	want, err := evaluate.ImportanceFile(context.Background(), evaluate.Config{}, current, 3, data)
	if err != nil {
		t.Fatal(err)
	}
	for k := range want.Features {
		want.Features[k].Key = bandit.FeatureKey{} // not in the JSON
	}
	var stdout, stderr bytes.Buffer
	args := []string{"evaluate", "--quiet", "--importance", "--features", "3", "--current", current, "--dsjson", data}
	if err := run(context.Background(), append(args, "--json"), &stdout, &stderr, noEnv); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	sameResults(t, "evaluate --importance --json", stdout.Bytes(), importanceResult(want))
	if len(want.Namespaces) != 2 || len(want.Features) != 3 || len(want.FeatureScores) != 5 {
		t.Errorf("importance of %d namespaces, %d features, %d feature scores; want 2, 3, 5", len(want.Namespaces), len(want.Features), len(want.FeatureScores))
	}
	stdout.Reset()
	if err := run(context.Background(), args, &stdout, &stderr, noEnv); err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		rows[strings.Join(strings.Fields(line), " ")] = true
	}
	row := func(kind, name string, e evaluate.Effect, events string) string {
		return fmt.Sprintf("%s %s %.3f %.6f [%.6f, %.6f] %.6f %s", kind, name, e.Score, e.Change, e.Interval.Lower, e.Interval.Upper,
			want.Policies[e.Policy].TotalSummary.AverageReward, events)
	}
	for _, n := range want.Namespaces {
		if r := row("namespace", n.Namespace, n.Effect, "-"); !rows[r] {
			t.Errorf("output lacks %q:\n%s", r, stdout.String())
		}
	}
	for _, f := range want.Features {
		if r := row("feature", f.Name, f.Effect, fmt.Sprint(f.Events)); !rows[r] {
			t.Errorf("output lacks %q:\n%s", r, stdout.String())
		}
	}
	if err := run(context.Background(), append(args, "--search"), &stdout, &stderr, noEnv); err == nil {
		t.Error("--search with --importance was accepted")
	}
}

// TestEvaluateImportanceModel runs `personalizer evaluate --importance
// --model`: the weight-based importance of a model `train -f` wrote.
func TestEvaluateImportanceModel(t *testing.T) {
	t.Parallel()
	const data = "../../testdata/vw/public_train.dsjson.gz"
	model := filepath.Join(t.TempDir(), "model")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"train", "--dsjson", data, "--policy", "--cb_explore_adf -q UA --cb_type ips -l 0.1", "-f", model, "--quiet"}, &stdout, &stderr, noEnv); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	want, err := evaluate.WeightsFile(context.Background(), model, data)
	if err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	args := []string{"evaluate", "--importance", "--model", model, "--dsjson", data}
	if err := run(context.Background(), append(args, "--json"), &stdout, &stderr, noEnv); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var got evaluate.WeightResult
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || !reflect.DeepEqual(&got, want) {
		t.Fatalf("--json %v: %s", err, stdout.String())
	}
	inter := 0
	for _, f := range want.Features {
		if strings.HasPrefix(f.Name, "U^") && strings.Contains(f.Name, "*A^") {
			inter++
		}
	}
	if want.Events != evaluate.ImportanceLines || want.Features[0].Score != 1 || inter == 0 {
		t.Errorf("%d events, %d U*A interactions, first %+v", want.Events, inter, want.Features[0])
	}
	stdout.Reset()
	if err := run(context.Background(), args, &stdout, &stderr, noEnv); err != nil {
		t.Fatal(err)
	}
	first := fmt.Sprintf("%s %.3f %.6g", want.Features[0].Name, want.Features[0].Score, want.Features[0].Mean)
	if !strings.Contains(strings.Join(strings.Fields(stdout.String()), " "), first) {
		t.Errorf("output lacks %q:\n%s", first, stdout.String())
	}
	for _, bad := range [][]string{{"--model", model, "--dsjson", data}, {"--importance", "--model", model, "--loop", "x", "--from", "2024-01-01T00:00:00Z"}} {
		if err := run(context.Background(), append([]string{"evaluate"}, bad...), &stdout, &stderr, noEnv); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestEvaluateNoEvents: every kind of run on a file without an event to
// evaluate fails, naming the file.
func TestEvaluateNoEvents(t *testing.T) {
	t.Parallel()
	empty := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(empty, []byte("\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	for _, extra := range [][]string{nil, {"--search"}, {"--importance"}} {
		err := run(context.Background(), append([]string{"evaluate", "--quiet", "--dsjson", empty}, extra...), &stdout, &stderr, noEnv)
		if err == nil || !strings.Contains(err.Error(), "evaluate "+empty+": no event to evaluate") {
			t.Errorf("%q: %v", extra, err)
		}
	}
}
