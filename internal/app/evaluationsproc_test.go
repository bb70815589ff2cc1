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

// topology is the production topology, each role its own OS process: a
// broker, a learner (models exported every 100 ms) and a joiner; servers
// start with server.
type topology struct {
	t           *testing.T
	ctx         context.Context
	h           *harness
	learnerAddr string
}

func startTopology(ctx context.Context, t *testing.T) *topology {
	dir := t.TempDir()
	top := &topology{t: t, ctx: ctx}
	broker := startProcess(t, "broker", "--broker-addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn")
	top.h = &harness{t: t, ctx: ctx, brokers: []string{top.field(broker, "personalizer broker:", "Kafka")}, rules: faultRules(500 * time.Millisecond)}
	lp := startProcess(t, "learner", "--kafka-brokers", top.h.brokers[0], "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", dir, "--log-level", "warn", "--model-export-frequency", "100ms")
	top.learnerAddr = top.field(lp, "personalizer learner:", "gRPC")
	startProcess(t, top.h.joinerArgs(true)...).waitLine(ctx, t, "personalizer joiner:")
	return top
}

// field is the value after name in p's first line that starts with
// prefix ("name value, ...").
func (top *topology) field(p *process, prefix, name string) string {
	_, v, _ := strings.Cut(p.waitLine(top.ctx, top.t, prefix), name+" ")
	v, _, _ = strings.Cut(v, ",")
	return v
}

// server starts a server process and returns it with its gRPC and HTTP
// addresses.
func (top *topology) server() (*process, string, string) {
	p := startProcess(top.t, "server", "--kafka-brokers", top.h.brokers[0], "--learner-addr", top.learnerAddr,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn")
	return p, top.field(p, "personalizer server:", "gRPC"), top.field(p, "personalizer server:", "HTTP")
}

// TestEvaluationsMultiProcess runs an evaluation in the production
// topology, each role its own OS process: the server process that takes
// the POST runs it and stores it in personalizer.evaluations, and a new
// server process, after that one stopped, lists it as it was.
func TestEvaluationsMultiProcess(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	top := startTopology(ctx, t)
	h, learnerAddr, startServerProcess := top.h, top.learnerAddr, top.server
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
