package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// TestEvaluationFeatureImportance runs feature importance on a dev loop
// fed by the simulator, whose reward depends on the user (namespace
// User: segment and device) more than on the time of day (Time; the
// actions' features are in i and j): an
// evaluation with enableFeatureImportance has, over REST and gRPC, the
// featureImportance and featureScores of evaluate.Importance on the same
// joined lines; User's namespace scores 1 over all of them; `personalizer
// evaluate --loop` reads the same lines from the broker and prints the
// same result, and
// --model ranks the features of the loop's model from GET /model.
func TestEvaluationFeatureImportance(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	const policy = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 --cb_type mtr -q ::"
	cfg := testConfig(t, dir, "--events-partitions", "1", "--policy", policy)
	d, client := startTestDev(t, cfg)
	defer func() { d.close() }()

	const events = 5000
	if _, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: 5, Concurrency: 4}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		t.Fatal(err)
	}
	lines := joinedLines(t, ctx, d)
	times := make([]time.Time, len(lines))
	for i, l := range lines {
		var ok bool
		if times[i], ok = lineTime(l); !ok {
			t.Fatalf("line %d has no Timestamp", i)
		}
	}
	// write writes the lines whose Timestamp is in [from, to) to a file.
	write := func(name string, from, to time.Time) string {
		var b bytes.Buffer
		for i, l := range lines {
			if !times[i].Before(from) && times[i].Before(to) {
				b.Write(l)
				b.WriteByte('\n')
			}
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	first, last := times[0], times[0]
	for _, ts := range times {
		if ts.Before(first) {
			first = ts
		}
		if ts.After(last) {
			last = ts
		}
	}
	last = last.Add(time.Nanosecond)

	// The namespaces over every event: User first.
	all := write("all.json", first, last)
	ranked, err := evaluate.ImportanceFile(ctx, evaluate.Config{}, policy, 0, all)
	if err != nil {
		t.Fatal(err)
	}
	var nsU, nsT *evaluate.NamespaceImportance
	for k, n := range ranked.Namespaces {
		t.Logf("namespace %s: change %.6f %+v score %.3f", n.Namespace, n.Change, *n.Interval, n.Score)
		switch n.Namespace {
		case "U":
			nsU = &ranked.Namespaces[k]
		case "T":
			nsT = &ranked.Namespaces[k]
		}
	}
	if len(ranked.Namespaces) != 4 || nsU == nil || nsT == nil || nsU.Score != 1 || !(nsU.Interval.Lower > 0) || !(nsU.Change > nsT.Change) {
		t.Errorf("namespaces %+v: want User first", ranked.Namespaces)
	}

	// Namespaces and features over the last 1500 events, as the API and
	// the CLI compute them.
	from, to := times[len(times)-1500], last
	file := write("range.json", from, to)
	bucket := evalBucket(to.Sub(from))
	want, err := evaluate.ImportanceFile(ctx, evaluate.Config{Bucket: bucket}, policy, evaluate.DefaultFeatures, file)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range want.Features {
		t.Logf("feature %s: change %.6f %+v score %.3f", f.Name, f.Change, *f.Interval, f.Score)
	}
	if len(want.Features) != evaluate.DefaultFeatures || len(want.FeatureImportance) == 0 || want.Evaluated == 0 || want.Evaluated == events {
		t.Errorf("%d features, featureImportance %q, %d events", len(want.Features), want.FeatureImportance, want.Evaluated)
	}

	// The API: REST.
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.1-preview.3"
	body, _ := json.Marshal(map[string]any{"name": "importance", "startTime": from, "endTime": to, "policies": []any{}, "enableFeatureImportance": true})
	code, got := restCall(t, "POST", base+"/evaluations", body)
	var created server.Evaluation
	if err := json.Unmarshal(got, &created); code != 201 || err != nil || len(created.PolicyResults) != 4 || created.PolicyResults[3].Name != evaluate.CurrentName ||
		created.PolicyResults[3].Arguments != policy {
		t.Fatalf("POST /evaluations: %d %s", code, got)
	}
	awaitEvaluation(t, ctx, d.evals, "default", created.ID, func(e *server.Evaluation) bool {
		return e != nil && e.Status != server.EvaluationPending && e.Status != server.EvaluationRunning
	})
	code, got = restCall(t, "GET", base+"/evaluations/"+created.ID, nil)
	var ev server.Evaluation
	if err := json.Unmarshal(got, &ev); code != 200 || err != nil || ev.Status != server.EvaluationCompleted {
		t.Fatalf("GET: %d %s %v", code, got, err)
	}
	if !reflect.DeepEqual(ev.FeatureImportance, want.FeatureImportance) {
		t.Errorf("featureImportance %q, want %q", ev.FeatureImportance, want.FeatureImportance)
	}
	wantScores := importanceResult(want).scores
	gotJSON, _ := json.Marshal(ev.FeatureScores)
	wantJSON, _ := json.Marshal(wantScores)
	if !bytes.Equal(gotJSON, wantJSON) || len(wantScores) != 4+evaluate.DefaultFeatures {
		t.Errorf("featureScores %s, want %s", gotJSON, wantJSON)
	}
	gotJSON, _ = json.Marshal(ev.PolicyResults)
	wantJSON, _ = json.Marshal(want.Policies[:4])
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("policy results\n%s\nwant Online, Baseline, Random, Current of the file\n%s", gotJSON, wantJSON)
	}
	// A search with it, and a custom policy named as one of its own, are
	// refused.
	for _, c := range []map[string]any{
		{"enableOfflineExperimentation": true},
		{"policies": []map[string]string{{"name": "Current", "arguments": "--cb_explore_adf"}}},
	} {
		bad := map[string]any{"name": "bad", "startTime": from, "endTime": to, "enableFeatureImportance": true}
		for k, v := range c {
			bad[k] = v
		}
		body, _ := json.Marshal(bad)
		if code, got := restCall(t, "POST", base+"/evaluations", body); code != 400 {
			t.Errorf("%v: %d %s", c, code, got)
		}
	}

	// gRPC.
	admin := personalizerv1.NewAdminServiceClient(keyedConn(t, d.grpcAddr(), ""))
	g, err := admin.GetEvaluation(ctx, &personalizerv1.GetEvaluationRequest{Id: created.ID})
	if err != nil {
		t.Fatal(err)
	}
	var groups [][]string
	for _, grp := range g.GetEvaluation().GetFeatureImportance() {
		groups = append(groups, grp.GetNames())
	}
	if !reflect.DeepEqual(groups, want.FeatureImportance) {
		t.Errorf("gRPC feature_importance %q, want %q", groups, want.FeatureImportance)
	}
	gs := g.GetEvaluation().GetFeatureScores()
	if len(gs) != len(wantScores) {
		t.Fatalf("gRPC feature_scores %v", gs)
	}
	for k, s := range gs {
		w := wantScores[k]
		if s.GetNamespace() != w.Namespace || s.GetFeatureName() != w.FeatureName || s.GetScore() != w.Score || s.GetChange() != w.Change ||
			s.GetInterval().GetLower() != w.Interval.Lower || s.GetInterval().GetUpper() != w.Interval.Upper {
			t.Errorf("gRPC feature_scores[%d] %v, want %+v", k, s, w)
		}
	}
	// The flag reaches the Admin over gRPC: with a search, refused.
	_, err = admin.CreateEvaluation(ctx, &personalizerv1.CreateEvaluationRequest{Evaluation: &personalizerv1.EvaluationContract{
		Name: "both", StartTime: timestamppb.New(from), EndTime: timestamppb.New(to), EnableFeatureImportance: true, EnableOfflineExperimentation: true}})
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "InvalidEvaluationContract:") {
		t.Errorf("gRPC CreateEvaluation with importance and a search: %v", err)
	}

	// The CLI on the loop: the same lines from the broker.
	var stdout, stderr bytes.Buffer
	args := []string{"evaluate", "--loop", "default", "--from", from.Format(time.RFC3339Nano), "--to", to.Format(time.RFC3339Nano),
		"--kafka-brokers", d.broker.Addrs()[0], "--bucket", bucket.String(), "--importance", "--current", policy, "--json"}
	if err := run(ctx, args, &stdout, &stderr, noEnv); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	sameResults(t, "evaluate --loop --importance --json", stdout.Bytes(), importanceResult(want))
	// Weight-based importance of the loop's current model (GET /model).
	code, got = restCall(t, "GET", base+"/model", nil)
	if code != 200 {
		t.Fatalf("GET /model: %d %s", code, got)
	}
	model := filepath.Join(dir, "model")
	if err := os.WriteFile(model, got, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if err := run(ctx, []string{"evaluate", "--importance", "--model", model, "--dsjson", all, "--json"}, &stdout, &stderr, noEnv); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var weights evaluate.WeightResult
	if err := json.Unmarshal(stdout.Bytes(), &weights); err != nil || weights.Arguments != policy || weights.Events != evaluate.ImportanceLines ||
		len(weights.Features) == 0 || weights.Features[0].Score != 1 {
		t.Fatalf("--model of GET /model: %v %s", err, stdout.String())
	}
	t.Logf("weights: first %+v; featureImportance %d groups", weights.Features[0], len(weights.FeatureImportance))

	// Plain, from a time on: the lines since.
	mid := times[len(times)/2]
	plain, err := evaluate.File(ctx, evaluate.Config{}, write("since.json", mid, last.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if err := run(ctx, []string{"evaluate", "--loop", "default", "--from", mid.Format(time.RFC3339Nano), "--kafka-brokers", d.broker.Addrs()[0], "--json", "--quiet"},
		&stdout, &stderr, noEnv); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	sameResults(t, "evaluate --loop --from", stdout.Bytes(), &evalResult{SearchResult: &evaluate.SearchResult{Result: plain, Best: -1}})
	if plain.Evaluated == 0 || plain.Evaluated == events {
		t.Errorf("evaluate --loop --from %v: %d of %d events", mid, plain.Evaluated, events)
	}
	for _, bad := range [][]string{
		{"--loop", "default"},
		{"--loop", "default", "--from", to.Format(time.RFC3339Nano), "--to", from.Format(time.RFC3339Nano)},
		{"--loop", "default", "--from", "yesterday"},
		{"--loop", "default", "--dsjson", file, "--from", from.Format(time.RFC3339Nano)},
		{"--dsjson", file, "--from", from.Format(time.RFC3339Nano)},
	} {
		if err := run(ctx, append([]string{"evaluate", "--kafka-brokers", d.broker.Addrs()[0]}, bad...), &stdout, &stderr, noEnv); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := run(ctx, []string{"evaluate", "--loop", "default", "--from", to.Add(time.Hour).Format(time.RFC3339Nano), "--to", to.Add(2 * time.Hour).Format(time.RFC3339Nano),
		"--kafka-brokers", d.broker.Addrs()[0]}, &stdout, &stderr, noEnv); err == nil {
		t.Error("a range without events was accepted")
	}
}

// sameResults checks that out, the output of evaluate --json, is a
// completed Evaluation with want's results.
func sameResults(t *testing.T, what string, out []byte, want *evalResult) {
	t.Helper()
	var got server.Evaluation
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
	if got.Status != server.EvaluationCompleted || got.EvaluationType != server.EvaluationManual || got.Name == "" ||
		!got.StartTime.Equal(want.Start) || !got.EndTime.Equal(want.End) || got.Progress.Lines != want.Lines {
		t.Errorf("%s: %s %s %q [%v, %v] %d lines, want a completed Manual evaluation of [%v, %v], %d lines", what,
			got.Status, got.EvaluationType, got.Name, got.StartTime, got.EndTime, got.Progress.Lines, want.Start, want.End, want.Lines)
	}
	var w server.Evaluation
	want.complete(&w)
	results := func(e *server.Evaluation) []byte {
		b, _ := json.Marshal([]any{e.PolicyResults, e.Counts, e.OptimalPolicy, e.FeatureImportance, e.FeatureScores, e.Progress.Evaluated})
		return b
	}
	if g, w := results(&got), results(&w); !bytes.Equal(g, w) {
		t.Errorf("%s: results\n%s\nwant\n%s", what, g, w)
	}
}
