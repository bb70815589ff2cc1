package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// restCall makes a REST call to a dev loop and returns the status and body.
func restCall(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	code, out := keyedREST(t, context.Background(), method, url, string(body), "", "")
	return code, []byte(out)
}

// learnedCosts records what the learner learned, by event key.
type learnedCosts struct {
	mu    sync.Mutex
	costs map[string][]float32
}

func (l *learnedCosts) learned(key []byte, cost float32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.costs == nil {
		l.costs = map[string][]float32{}
	}
	l.costs[string(key)] = append(l.costs[string(key)], cost)
}

func (l *learnedCosts) get(key string) []float32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.costs[key])
}

// fourActions is a Rank request with four actions and no exclusions.
func fourActions(id string) *personalizerv1.RankRequest {
	req := rankRequest(id)
	req.Actions = append(req.Actions, &personalizerv1.Action{Id: "film"})
	return req
}

// sortedProbabilities returns a ranking's probabilities, largest first.
func sortedProbabilities(resp *personalizerv1.RankResponse) []float64 {
	var ps []float64
	for _, r := range resp.GetRanking() {
		ps = append(ps, math.Round(float64(r.GetProbability())*1e6)/1e6)
	}
	slices.SortFunc(ps, func(a, b float64) int { return -cmpFloat(a, b) })
	return ps
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestConfigurationChangeLive changes the reward settings and the
// exploration of a running loop over REST. Ranks made before the change
// are joined by the rules of the flags (earliest reward, default 0),
// ranks after it by the new ones (sum, default -0.5), whatever the order
// in which their windows close; Rank's probabilities use the new
// exploration at once, with the same model.
func TestConfigurationChangeLive(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var learned learnedCosts
	cfg := testConfig(t, t.TempDir())
	cfg.Learner.Learned = learned.learned
	d, client := startTestDev(t, cfg)
	defer d.close()
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0"

	// Each phase: a third of the events get two rewards (0.25 then 0.5),
	// a third none, a third one reward of 1.
	const perPhase = 30
	phase := func(prefix string) {
		for i := range perPhase {
			id := fmt.Sprintf("%s%d", prefix, i)
			if _, err := client.Rank(ctx, fourActions(id)); err != nil {
				t.Fatal(err)
			}
			var rewards []float32
			switch i % 3 {
			case 0:
				rewards = []float32{0.25, 0.5}
			case 2:
				rewards = []float32{1}
			}
			for _, v := range rewards {
				if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: id, Value: v}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	phase("before-")
	// A model that learned the first phase: its scores are not tied, so
	// the probabilities show epsilon: 0.2 over 4 actions.
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return d.store.Latest().GetInfo().GetExamples() >= perPhase }); err != nil {
		t.Fatal(err)
	}
	if err := d.srv.WaitModel(ctx, d.store.Latest().GetInfo().GetVersion()); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Rank(ctx, fourActions("probe-before"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sortedProbabilities(resp), []float64{0.85, 0.05, 0.05, 0.05}; !slices.Equal(got, want) {
		t.Fatalf("probabilities with exploration 0.2: %v, want %v", got, want)
	}

	code, body := restCall(t, "GET", base+"/configurations/service", nil)
	if code != 200 {
		t.Fatalf("GET configuration: %d %s", code, body)
	}
	var svc map[string]any
	if err := json.Unmarshal(body, &svc); err != nil {
		t.Fatal(err)
	}
	if svc["rewardWaitTime"] != "PT1S" || svc["rewardAggregation"] != "earliest" || svc["explorationPercentage"] != 0.2 {
		t.Fatalf("configuration from flags: %s", body)
	}
	svc["rewardWaitTime"], svc["defaultReward"], svc["rewardAggregation"], svc["explorationPercentage"] = "PT3S", -0.5, "sum", 0.5
	put, _ := json.Marshal(svc)
	if code, body = restCall(t, "PUT", base+"/configurations/service", put); code != 200 {
		t.Fatalf("PUT configuration: %d %s", code, body)
	}
	// The PUT returns once this process applies the change: the same
	// model now ranks with exploration 0.5.
	resp, err = client.Rank(ctx, fourActions("probe-after"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sortedProbabilities(resp), []float64{0.625, 0.125, 0.125, 0.125}; !slices.Equal(got, want) {
		t.Fatalf("probabilities with exploration 0.5: %v (model %s), want %v", got, resp.GetModelVersion(), want)
	}
	phase("after-")

	// Every event of both phases (and the two probes) is learned once,
	// with the cost its own rules give.
	const all = 2*perPhase + 2
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= all }); err != nil {
		t.Fatalf("waiting for %d learned: %v (%+v)", all, err, d.learner.Stats())
	}
	want := map[string][3]float32{
		"before-": {-0.25, 0, -1},   // earliest of 0.25 and 0.5; default 0; 1
		"after-":  {-0.75, 0.5, -1}, // sum of 0.25 and 0.5; default -0.5; 1
	}
	for prefix, costs := range want {
		for i := range perPhase {
			key := "default/" + prefix + fmt.Sprint(i)
			if got := learned.get(key); len(got) != 1 || got[0] != costs[i%3] {
				t.Errorf("%s learned with costs %v, want once with %v", key, got, costs[i%3])
			}
		}
	}
	if st := d.learner.Stats(); st.Learned != all || st.Duplicates != 0 {
		t.Errorf("learner stats %+v, want %d learned", st, all)
	}

	// The rank records say which rules they were made under: none (the
	// joiner's flags) before the change, version 1's after it.
	r, err := kafkalog.NewTopicReader(ctx, d.broker.Addrs(), eventlog.EventsTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	counts := map[string]int{}
	for seen := 0; seen < all; {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type() != "rank" {
			continue
		}
		seen++
		var ev eventsv1.RankEvent
		if err := proto.Unmarshal(rec.Value, &ev); err != nil {
			t.Fatal(err)
		}
		counts[fmt.Sprintf("%d/%d/%s/%g", ev.GetRules().GetConfigVersion(), ev.GetRules().GetRewardWaitMs(), ev.GetRules().GetAggregation(), ev.GetRules().GetDefaultReward())]++
	}
	if want := map[string]int{"0/0//0": perPhase + 1, "1/3000/sum/-0.5": perPhase + 1}; !maps.Equal(counts, want) {
		t.Errorf("rank records by rules %v, want %v", counts, want)
	}
	// The change reached the metrics.
	if got := scrape(t, d.api.httpLis.Addr().String())["personalizer_config_version{loop=\"default\"}"]; got != 1 {
		t.Errorf("personalizer_config_version %v, want 1", got)
	}
}

// rankedProbabilities maps a ranking's action ids to their probabilities.
func rankedProbabilities(resp *personalizerv1.RankResponse) map[string]float32 {
	out := map[string]float32{}
	for _, r := range resp.GetRanking() {
		out[r.GetId()] = r.GetProbability()
	}
	return out
}

// TestModelExportImport exports the model of one loop over REST and
// imports it into a new loop in another process: both rank the same
// requests with the same probabilities, also after importing the model
// exported as a signed VW model file. A corrupt file is refused and
// changes nothing; a reset over gRPC starts the new loop afresh.
func TestModelExportImport(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	key := filepath.Join(t.TempDir(), "signing-key")
	if err := os.WriteFile(key, []byte("a model signing key, 32 bytes or more\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, clientA := startTestDev(t, testConfig(t, t.TempDir(), "--model-signing-key", key))
	defer a.close()
	if _, err := sim.Run(ctx, clientA, sim.Config{Events: 400, Seed: 3, Concurrency: 4}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	if err := a.learner.Wait(ctx, func(learner.Stats) bool { return a.store.Latest().GetInfo().GetExamples() >= 400 }); err != nil {
		t.Fatal(err)
	}
	version := a.store.Latest().GetInfo().GetVersion()
	if err := a.srv.WaitModel(ctx, version); err != nil {
		t.Fatal(err)
	}
	code, model := restCall(t, "GET", "http://"+a.api.httpLis.Addr().String()+"/personalizer/v1.1-preview.3/model", nil)
	if code != 200 || !bytes.Equal(model, a.store.Latest().GetData()) {
		t.Fatalf("GET /model: %d, %d bytes; want 200 and version %d's %d bytes", code, len(model), version, len(a.store.Latest().GetData()))
	}

	code, signedVW := restCall(t, "GET", "http://"+a.api.httpLis.Addr().String()+"/personalizer/v1.1-preview.3/model?format=vw&signed=true", nil)
	if code != 200 {
		t.Fatalf("GET /model?format=vw&signed=true: %d %s", code, signedVW)
	}

	b, clientB := startTestDev(t, testConfig(t, t.TempDir(), "--loop", "imported", "--model-signing-key", key))
	defer b.close()
	baseB := "http://" + b.api.httpLis.Addr().String() + "/personalizer/v1.1-preview.3"
	if code, body := restCall(t, "PUT", baseB+"/model", model[:len(model)/2]); code != 400 || !bytes.Contains(body, []byte(`"InvalidModelImportFormat"`)) {
		t.Fatalf("PUT a truncated model: %d %s", code, body)
	}
	if b.srv.ModelVersion() != 0 {
		t.Fatalf("a refused import changed the model: version %d", b.srv.ModelVersion())
	}
	if code, body := restCall(t, "PUT", baseB+"/model", model); code != 204 {
		t.Fatalf("PUT /model: %d %s", code, body)
	}
	// PUT returns once the imported version serves.
	sameRanks := func(what string) {
		t.Helper()
		for i := range 50 {
			// Deferred and never activated: the probes are not learned, so
			// the exporting loop's model stays the one exported.
			req := simRequest(uint64(i))
			req.DeferActivation = true
			ra, err := clientA.Rank(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			rb, err := clientB.Rank(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if pa, pb := rankedProbabilities(ra), rankedProbabilities(rb); !maps.Equal(pa, pb) {
				t.Fatalf("%s, request %d: exporting loop %v, importing loop %v", what, i, pa, pb)
			}
		}
	}
	sameRanks("our format")
	if code, body := restCall(t, "PUT", baseB+"/model", signedVW); code != 204 {
		t.Fatalf("PUT /model of the signed VW file: %d %s", code, body)
	}
	sameRanks("signed VW model file")

	// Reset over gRPC: a fresh model, every action equally likely.
	admin := personalizerv1.NewAdminServiceClient(dial(t, b.grpcAddr()))
	reset, err := admin.ResetModel(ctx, &personalizerv1.ResetModelRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if p := reset.GetProperties(); p.GetExamples() != 0 || p.GetVersion() <= 1 {
		t.Errorf("reset: %v", p)
	}
	resp, err := clientB.Rank(ctx, fourActions("after-reset"))
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedProbabilities(resp); !slices.Equal(got, []float64{0.25, 0.25, 0.25, 0.25}) {
		t.Errorf("after a reset: %v, want uniform", got)
	}
}

// TestPolicyChangeUnderLoad changes the policy over REST while Rank is
// under load: the learner retrains the new policy over the joined log
// (every learnable event in it, exactly), then swaps it in; no Rank fails
// meanwhile. The load's ranks are deferred and never activated, so the
// log's learnable events are the simulation's alone. Rank's latency
// before and during the retrain is logged (BENCHMARKS.md has the figures).
func TestPolicyChangeUnderLoad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d, client := startTestDev(t, testConfig(t, t.TempDir()))
	defer d.close()
	const events = 3000
	if _, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: 5, Concurrency: 4}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= events }); err != nil {
		t.Fatal(err)
	}

	var (
		mu       sync.Mutex
		failures []error
		lat      [2][]time.Duration // before, during the retrain
		during   = make(chan struct{})
		warm     = make(chan struct{}) // closed after 1000 calls before the change
	)
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	for w := range 4 {
		load.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				req := simRequest(uint64(w*1_000_000 + i))
				req.EventId = proto.String(fmt.Sprintf("load-%d-%d", w, i))
				req.DeferActivation = true
				start := time.Now()
				_, err := client.Rank(loadCtx, req)
				took := time.Since(start)
				phase := 0
				select {
				case <-during:
					phase = 1
				default:
				}
				mu.Lock()
				if err != nil && loadCtx.Err() == nil {
					failures = append(failures, err)
				} else if err == nil {
					lat[phase] = append(lat[phase], took)
					if phase == 0 && len(lat[0]) == 1000 {
						close(warm)
					}
				}
				mu.Unlock()
			}
		})
	}
	policy := "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.02 --cb_type mtr -q ::"
	body, _ := json.Marshal(map[string]string{"name": "faster", "arguments": policy})
	select {
	case <-warm:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	close(during)
	if code, resp := restCall(t, "PUT", "http://"+d.api.httpLis.Addr().String()+"/personalizer/v1.0/configurations/policy", body); code != 200 {
		t.Fatalf("PUT policy: %d %s", code, resp)
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.PolicyChanges == 1 && !s.Retraining }); err != nil {
		t.Fatal(err)
	}
	if err := d.srv.WaitModel(ctx, d.learner.Stats().Version); err != nil {
		t.Fatal(err)
	}
	stopLoad()
	load.Wait()
	st := d.learner.Stats()
	if st.RetrainLearned != events || st.Policy != policy || st.RetrainFailures != 0 {
		t.Errorf("after the policy change: retrained %d examples (want %d), policy %q, %d failures", st.RetrainLearned, events, st.Policy, st.RetrainFailures)
	}
	if len(failures) > 0 {
		t.Errorf("%d Rank calls failed during the policy change, the first: %v", len(failures), failures[0])
	}
	for i, name := range []string{"before", "during"} {
		t.Logf("Rank %s the retrain: %d calls, p50 %v, p99 %v", name, len(lat[i]), quantile(lat[i], 0.5), quantile(lat[i], 0.99))
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// simRequest is a simulated user's Rank request (10 actions), seeded.
func simRequest(seed uint64) *personalizerv1.RankRequest {
	return sim.Request(rand.New(rand.NewPCG(seed, 0)), 10, 5, 5)
}

// TestConfigTopicBadRecords writes records no admin call makes to the
// configuration topic: broken JSON, an invalid configuration, one under
// another loop's key. Every role skips them and goes on: a change made
// after them is applied and served.
func TestConfigTopicBadRecords(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, _ := startTestDev(t, testConfig(t, t.TempDir()))
	defer d.close()
	bad := loop.Default("default")
	bad.Version, bad.Service.DefaultReward = 7, 5 // out of [-1, 1]
	invalid, _ := loop.Marshal(bad)
	other := loop.Default("other")
	other.Version = 3
	misfiled, _ := loop.Marshal(other)
	if err := d.events.Write(ctx,
		eventlog.Record{Topic: eventlog.ConfigTopic, Key: []byte("default"), Value: []byte("{")},
		eventlog.Record{Topic: eventlog.ConfigTopic, Key: []byte("default"), Value: invalid},
		eventlog.Record{Topic: eventlog.ConfigTopic, Key: []byte("default"), Value: misfiled},
	); err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0"
	code, body := restCall(t, "GET", base+"/configurations/service", nil)
	if code != 200 {
		t.Fatalf("GET: %d %s", code, body)
	}
	var svc map[string]any
	if err := json.Unmarshal(body, &svc); err != nil {
		t.Fatal(err)
	}
	svc["explorationPercentage"] = 0.3
	put, _ := json.Marshal(svc)
	if code, body = restCall(t, "PUT", base+"/configurations/service", put); code != 200 {
		t.Fatalf("PUT after bad records: %d %s", code, body)
	}
	if c := d.configs.reg.Get("default"); c.Version != 1 || c.Service.ExplorationPercentage != 0.3 {
		t.Errorf("configuration after bad records and a change: version %d, exploration %v", c.Version, c.Service.ExplorationPercentage)
	}
	if d.configs.reg.Get("other") != nil {
		t.Error("a record under another loop's key made a loop")
	}
}
