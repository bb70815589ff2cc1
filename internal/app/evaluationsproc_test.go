package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// TestEvaluationsMultiProcess runs an evaluation in the production
// topology, each role its own OS process: the server process that takes
// the POST runs it and stores it in personalizer.evaluations, and a new
// server process, after that one stopped, lists it as it was.
func TestEvaluationsMultiProcess(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	field := func(p *process, prefix, name string) string {
		_, v, _ := strings.Cut(p.waitLine(ctx, t, prefix), name+" ")
		v, _, _ = strings.Cut(v, ",")
		return v
	}
	broker := startProcess(t, "broker", "--broker-addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn")
	h := &harness{t: t, ctx: ctx, brokers: []string{field(broker, "personalizer broker:", "Kafka")}, rules: faultRules(500 * time.Millisecond)}
	brokers := h.brokers[0]
	lp := startProcess(t, "learner", "--kafka-brokers", brokers, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", dir, "--log-level", "warn", "--model-export-frequency", "100ms")
	learnerAddr := field(lp, "personalizer learner:", "gRPC")
	startProcess(t, h.joinerArgs(true)...).waitLine(ctx, t, "personalizer joiner:")
	startServerProcess := func() (*process, string, string) {
		p := startProcess(t, "server", "--kafka-brokers", brokers, "--learner-addr", learnerAddr,
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn")
		return p, field(p, "personalizer server:", "gRPC"), field(p, "personalizer server:", "HTTP")
	}
	sp, grpcAddr, httpAddr := startServerProcess()

	const events = 1000
	begin := time.Now().Add(-time.Minute)
	client := personalizerv1.NewPersonalizerServiceClient(dial(t, grpcAddr))
	if _, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: 5, Concurrency: 4}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	waitExamples(ctx, t, eventsv1.NewModelServiceClient(dial(t, learnerAddr)), events)

	body := fmt.Sprintf(`{"name":"proc","startTime":%q,"endTime":%q,"policies":[{"name":"c","arguments":"--cb_explore_adf --epsilon 0.1"}]}`,
		begin.UTC().Format(time.RFC3339Nano), time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
	code, got := restCall(t, "POST", "http://"+httpAddr+"/personalizer/v1.0/evaluations", []byte(body))
	var created server.Evaluation
	if err := json.Unmarshal(got, &created); code != 201 || err != nil {
		t.Fatalf("POST /evaluations: %d %s", code, got)
	}

	// Follow the topic until the server stored the evaluation's result.
	var done evalRecord
	follow, stop := context.WithCancel(ctx)
	err := kafkalog.FollowCompacted(follow, h.brokers, eventlog.EvaluationsTopic, slog.New(slog.DiscardHandler), func(key, value []byte) {
		var r evalRecord
		if string(key) == "default/"+created.ID && json.Unmarshal(value, &r) == nil &&
			(r.Status == server.EvaluationCompleted || r.Status == server.EvaluationFailed) {
			done = r
			stop()
		}
	}, nil)
	if err != nil || done.Status != server.EvaluationCompleted {
		t.Fatalf("following the evaluations: %v; evaluation %+v", err, done.Evaluation)
	}
	if done.Counts.Evaluated != events || done.PolicyResults[0].TotalSummary.Events != events || len(done.PolicyResults) != 4 {
		t.Fatalf("evaluated %+v, want %d events", done.Counts, events)
	}

	sp.stop(t)
	_, _, httpAddr = startServerProcess()
	code, got = restCall(t, "GET", "http://"+httpAddr+"/personalizer/v1.0/evaluations/"+created.ID, nil)
	var after server.Evaluation
	if err := json.Unmarshal(got, &after); code != 200 || err != nil || after.Status != server.EvaluationCompleted {
		t.Fatalf("after the server's restart GET: %d %s", code, got)
	}
	a, _ := json.Marshal(after.PolicyResults)
	b, _ := json.Marshal(done.PolicyResults)
	if !bytes.Equal(a, b) {
		t.Errorf("after restart\n%s\nwant\n%s", a, b)
	}

	// Auto-optimization, turned on through the server, runs in the
	// learner process (without a start date: at once), once, and is
	// stored with the other evaluations.
	svc := map[string]any{}
	code, got = restCall(t, "GET", "http://"+httpAddr+"/personalizer/v1.0/configurations/service", nil)
	if err := json.Unmarshal(got, &svc); code != 200 || err != nil {
		t.Fatalf("GET service: %d %s", code, got)
	}
	svc["isAutoOptimizationEnabled"] = true
	put, _ := json.Marshal(svc)
	if code, got := restCall(t, "PUT", "http://"+httpAddr+"/personalizer/v1.0/configurations/service", put); code != 200 {
		t.Fatalf("PUT service: %d %s", code, got)
	}
	autos := map[string]evalRecord{}
	var auto evalRecord
	follow, stop = context.WithCancel(ctx)
	err = kafkalog.FollowCompacted(follow, h.brokers, eventlog.EvaluationsTopic, slog.New(slog.DiscardHandler), func(key, value []byte) {
		var r evalRecord
		if json.Unmarshal(value, &r) != nil || r.EvaluationType != server.EvaluationAuto {
			return
		}
		autos[r.ID] = r
		if r.Status != server.EvaluationPending && r.Status != server.EvaluationRunning {
			auto = r
			stop()
		}
	}, nil)
	if err != nil || len(autos) != 1 || auto.Period.IsZero() || auto.Counts == nil || auto.Counts.Evaluated != events ||
		auto.Status != server.EvaluationOptimalPolicyApplied && auto.Status != server.EvaluationOnlinePolicyRetained {
		t.Fatalf("following the evaluations: %v; %d auto runs, the last %+v", err, len(autos), auto.Evaluation)
	}
	t.Logf("auto-optimization in the learner: %s, optimal policy %q", auto.Status, auto.OptimalPolicy)
}
