package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// awaitEvaluation waits until the evaluation loop/id, as answered, is
// one ok accepts (nil: absent).
func awaitEvaluation(t *testing.T, ctx context.Context, e *evaluations, loop, id string, ok func(*server.Evaluation) bool) *server.Evaluation {
	t.Helper()
	key := evalKey(loop, id)
	for {
		e.mu.Lock()
		var cur *server.Evaluation
		if r := e.all[key]; r != nil {
			cur = e.view(key, r)
		}
		ch := e.changed
		e.mu.Unlock()
		if ok(cur) {
			return cur
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("evaluation %s: %v; last %+v", key, ctx.Err(), cur)
		}
	}
}

// joinedLines reads every line of personalizer.joined (one partition).
func joinedLines(t *testing.T, ctx context.Context, d *dev) [][]byte {
	t.Helper()
	r, err := kafkalog.NewTopicReader(ctx, d.broker.Addrs(), eventlog.JoinedTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var lines [][]byte
	for n := d.joiner.Counters().Emitted; int64(len(lines)) < n; {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, bytes.Clone(rec.Value))
	}
	return lines
}

// TestEvaluations runs Personalizer's Evaluations API on a dev loop fed
// by the simulator: an evaluation of a time range over REST equals the
// engine's on the same joined lines (its Online IPS the realized average
// reward), reads the same over gRPC, refuses bad contracts with
// Personalizer's codes, stops when deleted while it runs, and is listed
// after a restart.
func TestEvaluations(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	// One partition: the evaluation reads the joined lines in offset order.
	cfg := testConfig(t, dir, "--events-partitions", "1")
	d, client := startTestDev(t, cfg)
	defer func() { d.close() }()

	const events = 3000
	if _, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: 3, Concurrency: 4}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		t.Fatal(err)
	}
	lines := joinedLines(t, ctx, d)
	if len(lines) != events {
		t.Fatalf("%d joined lines, want %d", len(lines), events)
	}
	// The range: from the time of the third of the lines to that of the
	// second third (excluded); the lines in it, in order, and their
	// average reward.
	times := make([]time.Time, len(lines))
	for i, l := range lines {
		var ok bool
		if times[i], ok = lineTime(l); !ok {
			t.Fatalf("line %d has no Timestamp: %s", i, l)
		}
	}
	from, to := times[events/3], times[2*events/3]
	var inRange bytes.Buffer
	n, rewards := 0, 0.0
	for i, l := range lines {
		if !times[i].Before(from) && times[i].Before(to) {
			inRange.Write(l)
			inRange.WriteByte('\n')
			var cost struct {
				Cost float64 `json:"_label_cost"`
			}
			if err := json.Unmarshal(l, &cost); err != nil {
				t.Fatal(err)
			}
			n, rewards = n+1, rewards-cost.Cost
		}
	}
	if n == 0 || n == events {
		t.Fatalf("%d of %d events in range", n, events)
	}
	t.Logf("%d of %d events in [%v, %v), average reward %v", n, events, from, to, rewards/float64(n))
	file := filepath.Join(dir, "range.json")
	if err := os.WriteFile(file, inRange.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.1-preview.3"
	custom := []map[string]string{
		{"name": "fast", "arguments": "--cb_explore_adf --epsilon 0.2 -l 0.5 --power_t 0 --cb_type ips"},
		{"name": "quadratic", "arguments": "--cb_explore_adf --epsilon 0.1 --cb_type mtr -q ::"},
	}
	contract := map[string]any{"name": "first", "startTime": from, "endTime": to, "policies": custom,
		"enableOfflineExperimentation": true}
	body, _ := json.Marshal(contract)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/evaluations", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created server.Evaluation
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(raw, &created); err != nil {
		t.Fatalf("POST /evaluations: %d %s: %v", resp.StatusCode, raw, err)
	}
	if resp.StatusCode != http.StatusCreated || created.Status != server.EvaluationPending || created.Name != "first" ||
		!created.StartTime.Equal(from) || !created.EndTime.Equal(to) || created.EvaluationType != "Manual" || len(created.PolicyResults) != 5+evaluate.DefaultBudget ||
		created.PolicyResults[5].Source != evaluate.OfflineExperimentation {
		t.Fatalf("POST /evaluations: %d %+v", resp.StatusCode, created)
	}
	if loc := resp.Header.Get("Location"); loc != base+"/evaluations/"+created.ID {
		t.Errorf("Location %q, want %q", loc, base+"/evaluations/"+created.ID)
	}

	done := awaitEvaluation(t, ctx, d.evals, "default", created.ID, func(e *server.Evaluation) bool {
		return e != nil && e.Status != server.EvaluationPending && e.Status != server.EvaluationRunning
	})
	if done.Status != server.EvaluationCompleted {
		t.Fatalf("evaluation %+v", done)
	}
	code, got := restCall(t, "GET", base+"/evaluations/"+created.ID, nil)
	var ev server.Evaluation
	if err := json.Unmarshal(got, &ev); code != 200 || err != nil {
		t.Fatalf("GET: %d %s %v", code, got, err)
	}
	// enableOfflineExperimentation: the search around the loop's policy
	// on the same lines.
	code, got = restCall(t, "GET", base+"/configurations/policy", nil)
	var pol struct{ Arguments string }
	if err := json.Unmarshal(got, &pol); code != 200 || err != nil || pol.Arguments == "" {
		t.Fatalf("GET policy: %d %s", code, got)
	}
	d.evals.mu.Lock()
	current := d.evals.all[evalKey("default", created.ID)].Current
	d.evals.mu.Unlock()
	if current != pol.Arguments {
		t.Errorf("searched around %q, the loop's policy is %q", current, pol.Arguments)
	}
	want, err := evaluate.SearchFile(ctx, evaluate.Config{Bucket: evalBucket(to.Sub(from)), Custom: []evaluate.Policy{
		{Name: "fast", Arguments: custom[0]["arguments"]}, {Name: "quadratic", Arguments: custom[1]["arguments"]}}},
		pol.Arguments, evaluate.DefaultBudget, file)
	if err != nil {
		t.Fatal(err)
	}
	if ev.OptimalPolicy != want.OptimalPolicy {
		t.Errorf("optimal policy %q, want the search's %q", ev.OptimalPolicy, want.OptimalPolicy)
	}
	t.Logf("optimal policy %q (best %d)", want.OptimalPolicy, want.Best)
	wantJSON, _ := json.Marshal(want.Policies)
	gotJSON, _ := json.Marshal(ev.PolicyResults)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("policy results over REST\n%s\nwant (evaluate.File on the same lines)\n%s", gotJSON, wantJSON)
	}
	if ev.Counts == nil || ev.Counts.Evaluated != int64(n) || ev.Progress.Evaluated != int64(n) || ev.Progress.Lines-ev.Progress.OutOfRange != int64(n) {
		t.Errorf("counts %+v, progress %+v; want %d evaluated", ev.Counts, ev.Progress, n)
	}
	online := ev.PolicyResults[0]
	if online.Source != evaluate.Online || online.TotalSummary.AverageReward != rewards/float64(n) || online.TotalSummary.IPSDenominator != float64(n) {
		t.Errorf("Online %+v, want IPS %v over %d events", online.TotalSummary, rewards/float64(n), n)
	}
	if len(ev.FeatureImportance) != 0 {
		t.Errorf("feature importance %v without enableFeatureImportance", ev.FeatureImportance)
	}

	// The same over gRPC.
	admin := personalizerv1.NewAdminServiceClient(keyedConn(t, d.grpcAddr(), ""))
	g, err := admin.GetEvaluation(ctx, &personalizerv1.GetEvaluationRequest{Id: created.ID})
	if err != nil {
		t.Fatal(err)
	}
	if g.GetEvaluation().GetStatus() != server.EvaluationCompleted || len(g.GetEvaluation().GetPolicyResults()) != 5+evaluate.DefaultBudget ||
		g.GetEvaluation().GetOptimalPolicy() != want.OptimalPolicy {
		t.Fatalf("GetEvaluation %v", g)
	}
	for i, pr := range g.GetEvaluation().GetPolicyResults() {
		w := want.Policies[i]
		ts := pr.GetTotalSummary()
		if pr.GetName() != w.Name || pr.GetPolicySource() != w.Source || ts.GetAverageReward() != w.TotalSummary.AverageReward ||
			ts.GetIpsEstimatorNumerator() != w.TotalSummary.IPSNumerator || ts.GetSnipsEstimatorDenominator() != w.TotalSummary.SNIPSDenominator ||
			ts.GetConfidenceInterval() != w.TotalSummary.ConfidenceInterval || len(pr.GetSummary()) != len(w.Summary) ||
			len(ts.GetEstimates()) != 4 || ts.GetEstimates()[2].GetValue() != *w.TotalSummary.Estimates[2].Value {
			t.Errorf("gRPC policy %d: %v, want %+v", i, pr, w)
		}
	}

	// Bad contracts and unknown ids, over REST and gRPC.
	tooMany := make([]map[string]string, 11)
	for i := range tooMany {
		tooMany[i] = map[string]string{"name": fmt.Sprint("p", i), "arguments": "--cb_explore_adf"}
	}
	for _, c := range []struct {
		name string
		edit func(map[string]any)
		http int
		code string
	}{
		{"end before start", func(c map[string]any) { c["startTime"], c["endTime"] = to, from }, 400, "InvalidDateTimesInEvaluationContract"},
		{"no end", func(c map[string]any) { delete(c, "endTime") }, 400, "InvalidDateTimesInEvaluationContract"},
		{"no name", func(c map[string]any) { c["name"] = "" }, 400, "InvalidEvaluationContract"},
		{"11 policies", func(c map[string]any) { c["policies"] = tooMany }, 400, "MaximumEvaluationCustomPoliciesExceeded"},
		{"same names", func(c map[string]any) {
			c["policies"] = []map[string]string{custom[0], {"name": "fast", "arguments": "--cb_explore_adf"}}
		}, 400, "DuplicateCustomPolicyNames"},
		{"bad arguments", func(c map[string]any) {
			c["policies"] = []map[string]string{{"name": "x", "arguments": "--cb_explore_adf --no_such_option 3"}}
		}, 400, "InvalidEvaluationContract"},
		{"model too large", func(c map[string]any) {
			c["policies"] = []map[string]string{{"name": "x", "arguments": "--cb_explore_adf -b 28"}}
		}, 400, "InvalidEvaluationContract"},
		{"models too large together", func(c map[string]any) {
			c["policies"] = []map[string]string{{"name": "x", "arguments": "--cb_explore_adf -b 24"}, {"name": "y", "arguments": "--cb_explore_adf -b 24"}}
		}, 400, "InvalidEvaluationContract"},
		{"a search's models too large with the custom one", func(c map[string]any) { // alone, -b 24 fits
			c["policies"] = []map[string]string{{"name": "x", "arguments": "--cb_explore_adf -b 24"}}
		}, 400, "InvalidEvaluationContract"},
		{"a searched policy's name", func(c map[string]any) {
			c["policies"] = []map[string]string{{"name": "Search 2", "arguments": "--cb_explore_adf"}}
		}, 400, "DuplicateCustomPolicyNames"},
		{"no events in range", func(c map[string]any) {
			c["startTime"], c["endTime"] = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		}, 400, "NoLogsExistInDateRange"},
		{"not JSON time", func(c map[string]any) { c["startTime"] = "yesterday" }, 400, "BadRequest"},
	} {
		bad := map[string]any{}
		for k, v := range contract {
			bad[k] = v
		}
		c.edit(bad)
		body, _ := json.Marshal(bad)
		code, got := restCall(t, "POST", base+"/evaluations", body)
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(got, &e)
		if code != c.http || e.Error.Code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, code, got, c.http, c.code)
		}
	}
	if code, got := restCall(t, "GET", base+"/evaluations/no-such-id", nil); code != 404 || !strings.Contains(string(got), `"EvaluationNotFound"`) {
		t.Errorf("GET unknown: %d %s", code, got)
	}
	if code, got := restCall(t, "DELETE", base+"/evaluations/no-such-id", nil); code != 404 || !strings.Contains(string(got), `"EvaluationNotFound"`) {
		t.Errorf("DELETE unknown: %d %s", code, got)
	}
	if _, err := admin.GetEvaluation(ctx, &personalizerv1.GetEvaluationRequest{Id: "no-such-id"}); status.Code(err) != codes.NotFound {
		t.Errorf("gRPC GetEvaluation unknown: %v", err)
	}
	_, err = admin.CreateEvaluation(ctx, &personalizerv1.CreateEvaluationRequest{Evaluation: &personalizerv1.EvaluationContract{
		Name: "bad", StartTime: timestamppb.New(to), EndTime: timestamppb.New(from)}})
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "InvalidDateTimesInEvaluationContract:") {
		t.Errorf("gRPC CreateEvaluation end before start: %v", err)
	}

	// A running evaluation, created over gRPC, stops when deleted; one
	// created while it runs waits, pending, and runs then.
	entered, left := make(chan struct{}), make(chan struct{})
	var holds atomic.Int32
	d.evals.hold = func(ctx context.Context) {
		if holds.Add(1) > 1 {
			return
		}
		close(entered)
		<-ctx.Done()
		close(left)
	}
	c2, err := admin.CreateEvaluation(ctx, &personalizerv1.CreateEvaluationRequest{Evaluation: &personalizerv1.EvaluationContract{
		Name: "second", StartTime: timestamppb.New(from), EndTime: timestamppb.New(to)}})
	if err != nil {
		t.Fatal(err)
	}
	id2 := c2.GetEvaluation().GetId()
	<-entered
	awaitEvaluation(t, ctx, d.evals, "default", id2, func(e *server.Evaluation) bool { return e != nil && e.Status == server.EvaluationRunning })
	l, err := admin.ListEvaluations(ctx, &personalizerv1.ListEvaluationsRequest{})
	if err != nil || len(l.GetEvaluations()) != 2 || l.GetEvaluations()[1].GetStatus() != server.EvaluationRunning {
		t.Fatalf("ListEvaluations: %v %v", l, err)
	}
	body, _ = json.Marshal(map[string]any{"name": "third", "startTime": from, "endTime": to})
	code, got = restCall(t, "POST", base+"/evaluations", body)
	var third server.Evaluation
	if err := json.Unmarshal(got, &third); code != 201 || err != nil {
		t.Fatalf("POST third: %d %s", code, got)
	}
	if e := awaitEvaluation(t, ctx, d.evals, "default", third.ID, func(e *server.Evaluation) bool { return e != nil }); e.Status != server.EvaluationPending {
		t.Errorf("an evaluation created while another runs is %s, want pending", e.Status)
	}
	if code, got := restCall(t, "DELETE", base+"/evaluations/"+id2, nil); code != 204 {
		t.Fatalf("DELETE running: %d %s", code, got)
	}
	<-left
	if _, err := admin.GetEvaluation(ctx, &personalizerv1.GetEvaluationRequest{Id: id2}); status.Code(err) != codes.NotFound {
		t.Errorf("deleted evaluation: %v", err)
	}
	e3 := awaitEvaluation(t, ctx, d.evals, "default", third.ID, func(e *server.Evaluation) bool {
		return e.Status != server.EvaluationPending && e.Status != server.EvaluationRunning
	})
	thirdJSON, _ := json.Marshal(e3.PolicyResults)
	if wantThird, _ := json.Marshal(want.Policies[:3]); !bytes.Equal(thirdJSON, wantThird) {
		t.Errorf("third evaluation:\n%s\nwant\n%s", thirdJSON, wantThird)
	}

	// POST /configurations/applyFromEvaluation sets the loop's policy to
	// a policy of a completed evaluation: the search's pick (else "fast").
	apply := "fast"
	for _, p := range want.Policies {
		if want.OptimalPolicy != "" && p.Arguments == want.OptimalPolicy && p.Source == evaluate.OfflineExperimentation {
			apply = p.Name
		}
	}
	for _, c := range []struct {
		body map[string]string
		http int
		code string
	}{
		{map[string]string{"evaluationId": "no-such-id", "policyName": apply}, 404, "EvaluationNotFound"},
		{map[string]string{"evaluationId": created.ID, "policyName": "Baseline"}, 404, "LearningSettingsNotFound"},
		{map[string]string{"evaluationId": created.ID, "policyName": "nope"}, 404, "LearningSettingsNotFound"},
		{map[string]string{"evaluationId": created.ID}, 400, "BadRequest"},
		{map[string]string{"evaluationId": created.ID, "policyName": apply}, 204, ""},
	} {
		body, _ := json.Marshal(c.body)
		code, got := restCall(t, "POST", base+"/configurations/applyFromEvaluation", body)
		if code != c.http || c.code != "" && !strings.Contains(string(got), `"`+c.code+`"`) {
			t.Errorf("applyFromEvaluation %v: %d %s, want %d %s", c.body, code, got, c.http, c.code)
		}
	}
	var applied string
	for _, p := range want.Policies {
		if p.Name == apply {
			applied = p.Arguments
		}
	}
	code, got = restCall(t, "GET", base+"/configurations/policy", nil)
	var now struct{ Name, Arguments string }
	if err := json.Unmarshal(got, &now); code != 200 || err != nil || now.Name != apply || now.Arguments != applied {
		t.Errorf("after applyFromEvaluation %s: policy %d %s, want %q", apply, code, got, applied)
	}
	t.Logf("applied %s: %s", apply, applied)
	// With the model the evaluation trained: imported (and served here
	// when the call returned), so the learner did not retrain.
	if _, err := d.evals.Model(ctx, "default", created.ID, apply); err != nil {
		t.Fatal(err)
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Policy == applied }); err != nil {
		t.Fatal(err)
	}
	if st := d.learner.Stats(); st.Imports != 1 || st.PolicyChanges != 0 {
		t.Errorf("learner after applyFromEvaluation: %d imports, %d policy changes (retrains); want 1 import, no retrain", st.Imports, st.PolicyChanges)
	}
	// The same over gRPC: refusals, then applying it again.
	if _, err := admin.ApplyFromEvaluation(ctx, &personalizerv1.ApplyFromEvaluationRequest{EvaluationId: "no-such-id", PolicyName: apply}); status.Code(err) != codes.NotFound {
		t.Errorf("gRPC ApplyFromEvaluation unknown: %v", err)
	}
	if _, err := admin.ApplyFromEvaluation(ctx, &personalizerv1.ApplyFromEvaluationRequest{EvaluationId: created.ID}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC ApplyFromEvaluation without a policy name: %v", err)
	}
	if resp, err := admin.ApplyFromEvaluation(ctx, &personalizerv1.ApplyFromEvaluationRequest{EvaluationId: created.ID, PolicyName: apply}); err != nil ||
		resp.GetPolicy().GetName() != apply || resp.GetPolicy().GetArguments() != applied {
		t.Errorf("gRPC ApplyFromEvaluation: %v, %v; want policy %s %q", resp, err, apply, applied)
	}
	if st := d.learner.Stats(); st.Imports != 2 || st.PolicyChanges != 0 {
		t.Errorf("learner after applying again over gRPC: %d imports, %d policy changes; want 2 imports, no retrain", st.Imports, st.PolicyChanges)
	}

	// After a restart the completed evaluation is listed as it was.
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	d, _ = startTestDev(t, cfg)
	code, got = restCall(t, "GET", "http://"+d.api.httpLis.Addr().String()+"/personalizer/v1.0/evaluations", nil)
	var list []server.Evaluation
	if err := json.Unmarshal(got, &list); code != 200 || err != nil || len(list) != 2 || list[0].ID != created.ID || list[0].Status != server.EvaluationCompleted ||
		list[1].ID != third.ID || list[1].Status != server.EvaluationCompleted {
		t.Fatalf("after restart GET /evaluations: %d %s", code, got)
	}
	if again, _ := json.Marshal(list[0].PolicyResults); !bytes.Equal(again, wantJSON) {
		t.Errorf("after restart policy results differ:\n%s", again)
	}
}

func TestEvalBucket(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	for _, c := range []struct{ span, want time.Duration }{
		{time.Second, 5 * time.Minute},
		{2 * time.Hour, 5 * time.Minute},
		{2*time.Hour + time.Second, time.Hour},
		{24 * time.Hour, time.Hour},
		{3 * day, 6 * time.Hour},
		{10 * day, 12 * time.Hour},
		{24 * day, day},
		{30 * day, 7 * day},
		{168 * day, 7 * day},
		{365 * day, 16 * day},
	} {
		if got := evalBucket(c.span); got != c.want {
			t.Errorf("evalBucket(%v) = %v, want %v", c.span, got, c.want)
		}
	}
}

func TestLineTime(t *testing.T) {
	t.Parallel()
	want := time.Date(2026, 12, 3, 7, 43, 45, 107000000, time.UTC)
	for _, c := range []struct {
		line string
		ok   bool
	}{
		{`{"_label_cost":-1,"o":[{"v":1,"EventId":"a\"Timestamp\":\"x","ActionTaken":false}],"Timestamp":"2026-12-03T07:43:45.1070000Z","c":{"Timestamp":"1999-01-01T00:00:00Z"}}`, true},
		{`{"Timestamp":"yesterday"}`, false},
		{`{"Timestamp":"2026-12-03T07:43:45.107Z`, false},
		{`{"c":{}}`, false},
	} {
		got, ok := lineTime([]byte(c.line))
		if ok != c.ok || ok && !got.Equal(want) {
			t.Errorf("lineTime(%s) = %v, %v; want %v, %v", c.line, got, ok, want, c.ok)
		}
	}
}

// TestEvaluationsKeys checks that a loop's key reaches its own loop's
// evaluations only.
func TestEvaluationsKeys(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	keyDefault, lineDefault := server.NewKey("default", "web")
	keyShop, lineShop := server.NewKey("shop", "web")
	keyAdmin, lineAdmin := server.NewKey("*", "ops")
	keys, admins := filepath.Join(dir, "keys"), filepath.Join(dir, "admin-keys")
	if err := os.WriteFile(keys, []byte(lineDefault+"\n"+lineShop+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(admins, []byte(lineAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := startTestDev(t, testConfig(t, dir, "--api-keys", keys, "--admin-keys", admins))
	defer d.close()
	if _, err := personalizerv1.NewAdminServiceClient(keyedConn(t, d.grpcAddr(), keyAdmin)).CreateLoop(ctx,
		&personalizerv1.CreateLoopRequest{Loop: "shop"}); err != nil {
		t.Fatal(err)
	}
	client := personalizerv1.NewPersonalizerServiceClient(keyedConn(t, d.grpcAddr(), keyDefault))
	if _, err := sim.Run(ctx, client, sim.Config{Events: 200, Seed: 1, Concurrency: 2}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= 200 }); err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0/evaluations"
	body := fmt.Sprintf(`{"name":"k","startTime":%q,"endTime":%q}`, time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	code, got := keyedREST(t, ctx, "POST", base, body, keyDefault, "")
	var e server.Evaluation
	if err := json.Unmarshal([]byte(got), &e); code != 201 || err != nil {
		t.Fatalf("POST: %d %s", code, got)
	}
	for _, c := range []struct {
		name, method, url, key, loop string
		status                       int
		code                         string
	}{
		{"no key", "GET", base, "", "", 401, "401"},
		{"own loop", "GET", base + "/" + e.ID, keyDefault, "", 200, ""},
		{"another loop's key", "GET", base + "/" + e.ID, keyShop, "", 404, "EvaluationNotFound"},
		{"another loop's list", "GET", base, keyShop, "", 200, ""},
		{"naming another loop", "GET", base + "/" + e.ID, keyShop, "default", 403, "InvalidApiAccess"},
		{"another loop's delete", "DELETE", base + "/" + e.ID, keyShop, "", 404, "EvaluationNotFound"},
		{"admin naming the loop", "GET", base + "/" + e.ID, keyAdmin, "default", 200, ""},
	} {
		code, got := keyedREST(t, ctx, c.method, c.url, "", c.key, c.loop)
		if code != c.status || c.code != "" && !strings.Contains(got, `"code":"`+c.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", c.name, code, got, c.status, c.code)
		}
		if c.name == "another loop's list" && strings.TrimSpace(got) != "[]" {
			t.Errorf("%s: %s, want []", c.name, got)
		}
	}
}
