package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/loop"
	"github.com/open-personalizer/personalizer/server"
)

// crSummary is a total summary with a Cressie-Read estimate of value in
// [lower, upper].
func crSummary(value, lower, upper float64) evaluate.Summary {
	return evaluate.Summary{Estimates: []evaluate.Estimate{
		{Estimator: evaluate.IPS, Value: &value},
		{Estimator: evaluate.CR, Value: &value, Robust: &evaluate.Interval{Lower: lower, Upper: upper}},
	}}
}

func TestAutoApplies(t *testing.T) {
	t.Parallel()
	online := crSummary(0.5, 0.45, 0.55)
	undefined := evaluate.Summary{Estimates: []evaluate.Estimate{{Estimator: evaluate.CR}}}
	for _, c := range []struct {
		name         string
		online, best evaluate.Summary
		want         bool
	}{
		{"higher mean, lower bound above", online, crSummary(0.6, 0.46, 0.74), true},
		{"higher mean, lower bound below", online, crSummary(0.6, 0.44, 0.76), false},
		{"higher mean, same lower bound", online, crSummary(0.6, 0.45, 0.75), false},
		{"same mean, lower bound above", online, crSummary(0.5, 0.47, 0.53), false},
		{"lower mean, lower bound above", online, crSummary(0.49, 0.46, 0.52), false},
		{"best undefined", online, undefined, false},
		{"Online undefined", undefined, crSummary(0.6, 0.46, 0.74), false},
	} {
		if got := autoApplies(c.online, c.best); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestAutoSchedule(t *testing.T) {
	t.Parallel()
	at := func(h int) time.Time {
		return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(h) * time.Hour)
	}
	var zero time.Time
	for _, c := range []struct {
		name      string
		start     time.Time
		every     time.Duration
		last, now time.Time
		period    time.Time
		due       bool
		next      time.Time
	}{
		{"before the start", at(10), time.Hour, zero, at(9), zero, false, at(10)},
		{"at the start", at(10), time.Hour, zero, at(10), at(10), true, zero},
		{"in the first period", at(10), time.Hour, zero, at(10).Add(59 * time.Minute), at(10), true, zero},
		{"first period ran", at(10), time.Hour, at(10), at(10).Add(59 * time.Minute), zero, false, at(11)},
		{"second period", at(10), time.Hour, at(10), at(11), at(11), true, zero},
		{"periods missed: the latest only", at(10), time.Hour, at(10), at(15).Add(time.Minute), at(15), true, zero},
		{"default frequency", at(0), 0, at(0), at(24 * 27), zero, false, at(24 * 28)},
		{"default frequency due", at(0), 0, at(0), at(24 * 28), at(24 * 28), true, zero},
		{"no start, never ran: now", zero, time.Hour, zero, at(3).Add(time.Minute), at(3).Add(time.Minute), true, zero},
		{"no start: after the last run", zero, time.Hour, at(3), at(3).Add(30 * time.Minute), zero, false, at(4)},
		{"no start: due after the last", zero, time.Hour, at(3), at(5).Add(30 * time.Minute), at(5), true, zero},
		{"start moved back before the last run", at(0), 2 * time.Hour, at(5), at(5).Add(time.Minute), zero, false, at(6)},
	} {
		period, due, next := autoSchedule(c.start, c.every, c.last, c.now)
		if !period.Equal(c.period) || due != c.due || !next.Equal(c.next) {
			t.Errorf("%s: %v %v %v, want %v %v %v", c.name, period, due, next, c.period, c.due, c.next)
		}
	}
}

func TestEvalModelsKeep(t *testing.T) {
	t.Parallel()
	k := evalModels{limit: 10, files: map[string]map[string][]byte{}}
	k.keep("a", map[string][]byte{"x": make([]byte, 4)})
	k.keep("b", map[string][]byte{"x": make([]byte, 3), "y": make([]byte, 2)})
	if k.size != 9 || len(k.files) != 2 {
		t.Fatalf("size %d, %d kept", k.size, len(k.files))
	}
	k.keep("c", map[string][]byte{"x": make([]byte, 4)}) // drops a, the oldest
	if _, ok := k.files["a"]; ok || k.size != 9 || len(k.order) != 2 || k.order[0] != "b" {
		t.Fatalf("after c: size %d, order %v", k.size, k.order)
	}
	k.keep("d", map[string][]byte{"x": make([]byte, 11)}) // alone over the limit: not kept
	if _, ok := k.files["d"]; ok || k.size != 9 {
		t.Fatalf("after d: size %d, order %v", k.size, k.order)
	}
	k.drop("b")
	if k.size != 4 || len(k.order) != 1 || k.order[0] != "c" {
		t.Fatalf("after drop: size %d, order %v", k.size, k.order)
	}
}

// testClock is a clock that tests set.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// editService changes the service configuration of the dev's own loop
// over REST.
func editService(t *testing.T, base string, edit func(svc map[string]any)) {
	t.Helper()
	code, got := restCall(t, "GET", base+"/configurations/service", nil)
	var svc map[string]any
	if err := json.Unmarshal(got, &svc); code != 200 || err != nil {
		t.Fatalf("GET service: %d %s", code, got)
	}
	edit(svc)
	body, _ := json.Marshal(svc)
	if code, got := restCall(t, "PUT", base+"/configurations/service", body); code != 200 {
		t.Fatalf("PUT service: %d %s", code, got)
	}
}

// setAutoOptimization turns auto-optimization of the dev's own loop on
// (every hour from start) or off over REST.
func setAutoOptimization(t *testing.T, base string, on bool, start time.Time) {
	t.Helper()
	editService(t, base, func(svc map[string]any) {
		svc["isAutoOptimizationEnabled"], svc["autoOptimizationFrequency"], svc["autoOptimizationStartDate"] = on, "PT1H", start
	})
}

// autoRunsOf returns the loop's Auto evaluations listed over REST, oldest
// first.
func autoRunsOf(t *testing.T, base string) []server.Evaluation {
	t.Helper()
	code, got := restCall(t, "GET", base+"/evaluations", nil)
	var all []server.Evaluation
	if err := json.Unmarshal(got, &all); code != 200 || err != nil {
		t.Fatalf("GET evaluations: %d %s", code, got)
	}
	var out []server.Evaluation
	for _, e := range all {
		if e.EvaluationType == server.EvaluationAuto {
			out = append(out, e)
		}
	}
	return out
}

// awaitFinished waits until evaluation id of the dev's loop is finished
// and returns it.
func awaitFinished(t *testing.T, ctx context.Context, d *dev, id string) *server.Evaluation {
	t.Helper()
	return awaitEvaluation(t, ctx, d.evals, "default", id, func(e *server.Evaluation) bool {
		return e != nil && e.Status != server.EvaluationPending && e.Status != server.EvaluationRunning
	})
}

// policyOf reads the loop's policy over REST.
func policyOf(t *testing.T, base string) (name, args string) {
	t.Helper()
	code, got := restCall(t, "GET", base+"/configurations/policy", nil)
	var p struct{ Name, Arguments string }
	if err := json.Unmarshal(got, &p); code != 200 || err != nil {
		t.Fatalf("GET policy: %d %s", code, got)
	}
	return p.Name, p.Arguments
}

// TestAutoOptimizeApplies runs auto-optimization on a dev loop whose
// policy learns the simulated world too slowly (Personalizer's -l
// 0.001): its run equals the policy search on the same joined lines, the
// pick passes the rule and is applied with the model the run trained, so
// that the learner continues from that model (no retrain), and the
// policy and the run read back over REST. The loop explores fully
// (explorationPercentage 1) while the users are simulated, so that the
// logged decisions, Online's, are uniformly random however fast the
// machine runs the simulation (a slow run learns more between ranks).
func TestAutoOptimizeApplies(t *testing.T) {
	t.Parallel()
	// A bound for failures, not a wait: with -race on a 2-core machine
	// that other processes keep busy this test has taken 9 minutes (the
	// two searches over 3000 events, the run's on one goroutine).
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	const slow = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"
	// A reward wait that a loaded machine does not miss: late rewards
	// would leave no reward to learn from.
	cfg := testConfig(t, t.TempDir(), "--events-partitions", "1", "--policy", slow, "--reward-wait", "10s")
	clock := &testClock{t: time.Now().UTC()}
	cfg.AutoClock = clock.now
	d, client := startTestDev(t, cfg)
	defer func() { d.close() }()
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.1-preview.3"
	editService(t, base, func(svc map[string]any) { svc["explorationPercentage"] = 1 })

	const events = 3000
	if _, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: 3, Concurrency: 4}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		t.Fatal(err)
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= events }); err != nil {
		t.Fatal(err)
	}
	if late := d.joiner.Counters().Late; late > 0 {
		t.Logf("%d rewards late", late)
	}
	lines := joinedLines(t, ctx, d)
	file := filepath.Join(t.TempDir(), "joined.json")
	if err := os.WriteFile(file, append(bytes.Join(lines, []byte("\n")), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := evaluate.SearchFile(ctx, evaluate.Config{Bucket: evalBucket(autoWindow)}, slow, evaluate.DefaultBudget, file)
	if err != nil {
		t.Fatal(err)
	}
	if want.Best < 0 || !autoApplies(want.Policies[0].TotalSummary, want.Policies[want.Best].TotalSummary) {
		t.Fatalf("the search on the joined lines picks %d %q: no better policy to apply", want.Best, want.OptimalPolicy)
	}
	pick := want.Policies[want.Best]
	pm, pl, _ := crEstimate(pick.TotalSummary)
	om, ol, _ := crEstimate(want.Policies[0].TotalSummary)
	t.Logf("pick %s %q: CR %.4f, lower %.4f; Online's %.4f, lower %.4f", pick.Name, pick.Arguments, pm, pl, om, ol)

	// The run's range ends at its time: after the events.
	period := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	clock.set(period)
	setAutoOptimization(t, base, true, period)
	d.auto.check(ctx) // the period has run once this returns, here or on the optimizer's goroutine
	runs := autoRunsOf(t, base)
	if len(runs) != 1 {
		t.Fatalf("%d auto runs, want 1: %+v", len(runs), runs)
	}
	run := awaitFinished(t, ctx, d, runs[0].ID)
	if run.Status != server.EvaluationOptimalPolicyApplied || run.OptimalPolicy != pick.Arguments || run.Error != "" {
		t.Fatalf("auto run %s %q %q, want %s %q", run.Status, run.OptimalPolicy, run.Error, server.EvaluationOptimalPolicyApplied, pick.Arguments)
	}
	if !run.EndTime.Equal(period) || !run.StartTime.Equal(period.Add(-autoWindow)) || run.Name != "Auto-optimization "+period.Format(time.RFC3339) {
		t.Errorf("auto run %q over [%v, %v), want [%v, %v)", run.Name, run.StartTime, run.EndTime, period.Add(-autoWindow), period)
	}
	gotJSON, _ := json.Marshal(run.PolicyResults)
	if wantJSON, _ := json.Marshal(want.Policies); !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("auto run's results\n%s\nwant the search's on the same lines\n%s", gotJSON, wantJSON)
	}
	// Read back over REST: the run, and the loop's policy.
	code, got := restCall(t, "GET", base+"/evaluations/"+run.ID, nil)
	var rest server.Evaluation
	if err := json.Unmarshal(got, &rest); code != 200 || err != nil || rest.Status != server.EvaluationOptimalPolicyApplied || rest.EvaluationType != "Auto" {
		t.Fatalf("GET the auto run: %d %s", code, got)
	}
	if name, args := policyOf(t, base); name != pick.Name || args != pick.Arguments {
		t.Errorf("policy %q %q after the auto run, want %q %q", name, args, pick.Name, pick.Arguments)
	}
	// The model the run trained is the learner's: imported, not retrained.
	model, err := d.evals.Model(ctx, "default", run.ID, pick.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Policy == pick.Arguments }); err != nil {
		t.Fatal(err)
	}
	if err := d.configs.await(ctx, "default", func(c *loop.Config) bool { return c.Policy.Arguments == pick.Arguments }); err != nil {
		t.Fatal(err)
	}
	st := d.learner.Stats()
	if st.Imports != 1 || st.PolicyChanges != 0 || st.Retraining || st.Examples != 0 {
		t.Errorf("learner: %d imports, %d policy changes (retrains), examples %d; want the model imported, not retrained", st.Imports, st.PolicyChanges, st.Examples)
	}
	if latest := d.store.Latest(); !bytes.Equal(latest.GetData(), model) {
		t.Errorf("the learner's latest version (%d bytes, policy %q) is not the run's model (%d bytes)", len(latest.GetData()), st.Policy, len(model))
	}
	// A later period with the optimizer off runs nothing.
	setAutoOptimization(t, base, false, period)
	clock.set(period.Add(3 * time.Hour))
	d.auto.check(ctx)
	if runs := autoRunsOf(t, base); len(runs) != 1 {
		t.Errorf("%d auto runs with auto-optimization off, want 1", len(runs))
	}
}

// TestAutoOptimizeRetains runs auto-optimization on a dev loop whose
// events were never rewarded, so that no policy does better than the
// logged one: every run retains the loop's policy and model. A loop keeps
// its newest 24 runs, and a restart runs no period again: the schedule
// is the runs stored.
func TestAutoOptimizeRetains(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cfg := testConfig(t, t.TempDir(), "--events-partitions", "1")
	clock := &testClock{t: time.Now().UTC()}
	cfg.AutoClock = clock.now
	d, client := startTestDev(t, cfg)
	defer func() { d.close() }()

	const events = 200
	for i := range events {
		if _, err := client.Rank(ctx, rankRequest(fmt.Sprint("flat-", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		t.Fatal(err)
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= events }); err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0"
	name, args := policyOf(t, base)
	start := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	clock.set(start)
	setAutoOptimization(t, base, true, start)

	// Runs the period of hour h, and checks the loop's runs are those of
	// the hours from first to h, each retaining the policy.
	runAt := func(h, first int) []*evalRecord {
		t.Helper()
		clock.set(start.Add(time.Duration(h) * time.Hour))
		d.auto.check(ctx)
		runs := d.evals.autoRuns("default")
		if len(runs) != h-first+1 {
			t.Fatalf("hour %d: %d runs, want %d", h, len(runs), h-first+1)
		}
		for i, r := range runs {
			if want := start.Add(time.Duration(first+i) * time.Hour); !r.Period.Equal(want) {
				t.Fatalf("hour %d: run %d of period %v, want %v", h, i, r.Period, want)
			}
		}
		last := awaitFinished(t, ctx, d, runs[len(runs)-1].ID)
		if last.Status != server.EvaluationOnlinePolicyRetained || last.Error != "" || last.Counts == nil || last.Counts.Evaluated != events {
			t.Fatalf("hour %d: run %s %q optimal %q, counts %+v; want %s over %d events", h, last.Status, last.Error, last.OptimalPolicy, last.Counts,
				server.EvaluationOnlinePolicyRetained, events)
		}
		return runs
	}
	runAt(0, 0)
	if n, a := policyOf(t, base); n != name || a != args {
		t.Errorf("policy %q %q after a retaining run, want %q %q", n, a, name, args)
	}
	if st := d.learner.Stats(); st.Imports != 0 || st.PolicyChanges != 0 || st.Policy != args {
		t.Errorf("learner: %d imports, %d policy changes, policy %q; want the model kept", st.Imports, st.PolicyChanges, st.Policy)
	}
	// Within the period nothing runs again.
	clock.set(start.Add(59 * time.Minute))
	d.auto.check(ctx)
	if runs := d.evals.autoRuns("default"); len(runs) != 1 {
		t.Fatalf("%d runs within the first period, want 1", len(runs))
	}
	// 26 periods: the newest 24 runs are kept.
	for h := 1; h <= 23; h++ {
		runAt(h, 0)
	}
	runAt(24, 1)
	kept := runAt(25, 2)
	if autoRunsOf(t, base)[0].ID != kept[0].ID {
		t.Errorf("GET /evaluations lists %s first, want %s", autoRunsOf(t, base)[0].ID, kept[0].ID)
	}
	if _, err := d.evals.Model(ctx, "default", kept[23].ID, "Search 1"); err != nil {
		t.Errorf("the last run's models are not kept: %v", err)
	}

	// A restart within the period of hour 25 runs nothing; hour 26 runs.
	clock.set(start.Add(25*time.Hour + 30*time.Minute))
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	d, _ = startTestDev(t, cfg)
	select {
	case <-d.evals.ready:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if c := d.configs.reg.Get("default"); c == nil || !c.Service.IsAutoOptimizationEnabled {
		t.Fatalf("after the restart the configuration is %+v", c)
	}
	d.auto.check(ctx)
	again := d.evals.autoRuns("default")
	if len(again) != autoKeep || again[0].ID != kept[0].ID || again[autoKeep-1].ID != kept[autoKeep-1].ID {
		t.Fatalf("after the restart %d runs, from %s to %s; want the %d before", len(again), again[0].ID, again[len(again)-1].ID, autoKeep)
	}
	// The runs' models were kept by the process that ran them.
	body, _ := json.Marshal(map[string]string{"evaluationId": kept[23].ID, "policyName": "Search 1"})
	base = "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0"
	if code, got := restCall(t, "POST", base+"/configurations/applyFromEvaluation", body); code != 404 || !strings.Contains(string(got), `"EvaluationModelNotFound"`) {
		t.Errorf("applyFromEvaluation after the restart: %d %s, want 404 EvaluationModelNotFound", code, got)
	}
	runAt(26, 3)
	if n, a := policyOf(t, base); n != name || a != args {
		t.Errorf("policy %q %q after the runs, want %q %q", n, a, name, args)
	}
}
