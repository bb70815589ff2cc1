package app

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/server"
)

// TestSearchRaisesLiveReward is the README's simulated world, where the
// default learning rate learns too slowly: a policy search over the first
// events finds a larger learning rate whose 95% interval lies wholly above
// Online's, and applying it (applyFromEvaluation) raises the live reward
// of the same simulated users over what the default policy's model,
// which learned the same events, gets.
func TestSearchRaisesLiveReward(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// A reward wait that a loaded machine does not miss.
	cfg := testConfig(t, t.TempDir(), "--events-partitions", "1", "--reward-wait", "10s")
	d, client := startTestDev(t, cfg)
	defer func() { d.close() }()
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.1-preview.3"
	// The first events are logged exploring fully, so that Online is
	// uniformly random however fast the machine runs the simulation (a
	// slow run learns more between ranks).
	editService(t, base, func(svc map[string]any) { svc["explorationPercentage"] = 1 })

	const first, phase = 4000, 3000
	if _, err := sim.Run(ctx, client, sim.Config{Events: first, Seed: 1, Concurrency: 4}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= first }); err != nil {
		t.Fatal(err)
	}
	lines := joinedLines(t, ctx, d)
	from, ok1 := lineTime(lines[0])
	to, ok2 := lineTime(lines[len(lines)-1])
	if !ok1 || !ok2 {
		t.Fatal("joined lines without a Timestamp")
	}
	body, _ := json.Marshal(map[string]any{"name": "search", "startTime": from, "endTime": to.Add(time.Second),
		"policies": []any{}, "enableOfflineExperimentation": true})
	code, got := restCall(t, "POST", base+"/evaluations", body)
	var created server.Evaluation
	if err := json.Unmarshal(got, &created); code != 201 || err != nil {
		t.Fatalf("POST /evaluations: %d %s", code, got)
	}
	awaitEvaluation(t, ctx, d.evals, "default", created.ID, func(e *server.Evaluation) bool {
		return e != nil && e.Status != server.EvaluationPending && e.Status != server.EvaluationRunning
	})
	code, got = restCall(t, "GET", base+"/evaluations/"+created.ID, nil)
	var ev server.Evaluation
	if err := json.Unmarshal(got, &ev); code != 200 || err != nil || ev.Status != server.EvaluationCompleted || ev.OptimalPolicy == "" {
		t.Fatalf("GET evaluation: %d %s", code, got)
	}
	var online, best *evaluate.PolicyResult
	for i := range ev.PolicyResults {
		p := &ev.PolicyResults[i]
		switch {
		case p.Source == evaluate.Online:
			online = p
		case p.Source == evaluate.OfflineExperimentation && p.Arguments == ev.OptimalPolicy:
			best = p
		}
	}
	cr := func(p *evaluate.PolicyResult) evaluate.Interval { return *p.TotalSummary.Estimates[3].Robust }
	if best == nil || !(cr(best).Lower > cr(online).Upper) {
		t.Fatalf("optimal %q: CR interval %v, Online's %v: want it wholly above", ev.OptimalPolicy, cr(best), cr(online))
	}
	if rate := learningRate(t, ev.OptimalPolicy); !(rate > learningRate(t, bandit.DefaultPolicy)) {
		t.Errorf("optimal policy %q: learning rate %v, want above the default's", ev.OptimalPolicy, rate)
	}
	t.Logf("Online CR %v; %s %q CR %v", cr(online), best.Name, best.Arguments, cr(best))

	// serve waits until the learner learns with policy and the server
	// answers with the version that published its model (an import is
	// published at once, a retrained model at the next export).
	serve := func(policy string) {
		t.Helper()
		var created time.Time
		if err := d.learner.Wait(ctx, func(s learner.Stats) bool {
			created = s.ModelCreated
			return s.Policy == policy && !s.Retraining
		}); err != nil {
			t.Fatal(err)
		}
		var v uint64
		if err := d.learner.Wait(ctx, func(learner.Stats) bool {
			info := d.store.Latest().GetInfo()
			v = info.GetVersion()
			return info.GetModelCreated().AsTime().Equal(created)
		}); err != nil {
			t.Fatal(err)
		}
		waitServed(ctx, t, d, v)
	}
	live := func() float64 {
		t.Helper()
		res, err := sim.Run(ctx, client, sim.Config{Events: phase, Window: phase, Seed: 1, Concurrency: 4}, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		return res.RewardFirstWindow
	}

	// The same users twice, exploring as usual, from the same 4000
	// events: first with the default policy's model, then with the model
	// the search trained. Neither learns during its phase: the ranks of
	// the phases get a reward wait longer than the test, so that how much
	// a model learns while it is measured does not depend on how fast the
	// machine runs the simulation.
	editService(t, base, func(svc map[string]any) {
		svc["explorationPercentage"] = 0.2
		svc["rewardWaitTime"] = "PT1H"
	})
	// The default policy's model is the one of all the first events.
	if err := d.learner.Wait(ctx, func(learner.Stats) bool { return d.store.Latest().GetInfo().GetExamples() >= first }); err != nil {
		t.Fatal(err)
	}
	waitServed(ctx, t, d, d.store.Latest().GetInfo().GetVersion())
	def := live()
	apply, _ := json.Marshal(map[string]string{"evaluationId": ev.ID, "policyName": best.Name})
	if code, got := restCall(t, "POST", base+"/configurations/applyFromEvaluation", apply); code != 204 {
		t.Fatalf("applyFromEvaluation: %d %s", code, got)
	}
	serve(ev.OptimalPolicy)
	tuned := live()
	t.Logf("live reward over %d events: %.3f applied, %.3f default", phase, tuned, def)
	if !(tuned > def) {
		t.Errorf("live reward %.3f with the search's policy, %.3f with the default: want higher", tuned, def)
	}
}

// learningRate is the -l of VW arguments (VW's default 0.5 without one).
func learningRate(t *testing.T, args string) float64 {
	t.Helper()
	f := strings.Fields(args)
	for i, a := range f {
		if (a == "-l" || a == "--learning_rate") && i+1 < len(f) {
			v, err := strconv.ParseFloat(f[i+1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0.5
}
