package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// TestMultiProcess runs the production topology without Docker, each role
// its own OS process: one broker, one learner, two joiners and two
// servers. Simulated users go through both servers; one joiner is killed
// with SIGKILL and one server stopped with SIGTERM while traffic flows,
// and the other server keeps taking it. Every rank a server acknowledged
// must be learned exactly once, and the model the surviving server serves
// must have learned.
//
// A server answers Rank before the event reaches Kafka (it waits in the
// publisher's buffer), so a server killed with SIGKILL loses what is
// buffered, by design; SIGTERM stops it gracefully and flushes the buffer,
// and that is what the exact count checks.
func TestMultiProcess(t *testing.T) {
	t.Parallel()
	// A bound for failures, not a wait (80 s on a busy 2-core machine).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	var sims sync.WaitGroup
	t.Cleanup(sims.Wait) // after cancel: the simulations log through t
	t.Cleanup(cancel)
	dir := t.TempDir()
	field := func(p *process, prefix, name string) string {
		_, v, _ := strings.Cut(p.waitLine(ctx, t, prefix), name+" ")
		v, _, _ = strings.Cut(v, ",")
		return v
	}

	broker := startProcess(t, "broker", "--broker-addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn",
		"--min-session-timeout", "1s")
	h := &harness{t: t, ctx: ctx, brokers: []string{field(broker, "personalizer broker:", "Kafka")}, rules: faultRules(500 * time.Millisecond)}
	brokers := h.brokers[0]

	lp := startProcess(t, "learner", "--kafka-brokers", brokers, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", dir, "--log-level", "warn", "--model-export-frequency", "100ms",
		"--policy", "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.01 --cb_type mtr -q ::")
	learnerAddr := field(lp, "personalizer learner:", "gRPC")
	models := eventsv1.NewModelServiceClient(dial(t, learnerAddr))

	joiners := []*process{startProcess(t, h.joinerArgs(true)...), startProcess(t, h.joinerArgs(true)...)}
	for _, j := range joiners {
		j.waitLine(ctx, t, "personalizer joiner:")
	}
	var servers []*process
	var clients []*ackClient
	var grpcAddrs, httpAddrs []string
	for _, compression := range []string{"none", "lz4"} {
		p := startProcess(t, "server", "--kafka-brokers", brokers, "--learner-addr", learnerAddr,
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn", "--kafka-compression", compression)
		servers = append(servers, p)
		grpcAddrs = append(grpcAddrs, field(p, "personalizer server:", "gRPC"))
		clients = append(clients, &ackClient{PersonalizerServiceClient: personalizerv1.NewPersonalizerServiceClient(dial(t, grpcAddrs[len(grpcAddrs)-1]))})
		httpAddrs = append(httpAddrs, field(p, "personalizer server:", "HTTP"))
	}

	// Server 0 takes a fixed run of simulated users whose first window is
	// served before any model exists. Server 1 takes one user at a time
	// until it is stopped: with one call in flight, a call either finishes
	// before the server stops (acknowledged) or is refused (never ranked),
	// so the acknowledged ranks are exactly the ranks it made.
	const events = 6000
	type simResult struct {
		res sim.Result
		err error
	}
	simulate := func(c *ackClient, cfg sim.Config) <-chan simResult {
		done := make(chan simResult, 1)
		sims.Add(1)
		go func() {
			defer sims.Done()
			res, err := sim.Run(ctx, c, cfg, testWriter{t})
			done <- simResult{res, err}
		}()
		return done
	}
	first := simulate(clients[0], sim.Config{Events: events, Seed: 11, Window: 500, Concurrency: 4, Rate: 1000})
	second := simulate(clients[1], sim.Config{Events: 1 << 20, Seed: 12, Concurrency: 1, Rate: 100})

	waitExamples(ctx, t, models, 1200)
	joiners[1].kill(t)
	// The survivor takes over the dead joiner's partitions after the
	// session timeout and resumes from its last commit.
	waitExamples(ctx, t, models, 2800)
	servers[1].stop(t)
	r := <-second
	if status.Code(r.err) != codes.Unavailable {
		t.Errorf("traffic to the stopped server ended with %v, want Unavailable", r.err)
	}
	r = <-first
	if r.err != nil {
		t.Fatal(r.err)
	}
	res := r.res
	t.Logf("server 0: %+v; server 1 acknowledged %d ranks", res, clients[1].count())
	if clients[0].count() != events {
		t.Fatalf("server 0 acknowledged %d ranks, want %d", clients[0].count(), events)
	}
	if res.RewardLastWindow < res.RewardFirstWindow+0.05 || res.RewardLastWindow < res.RandomPolicyReward+0.05 {
		t.Errorf("did not learn: first window %.3f, last window %.3f, random policy %.3f, best policy %.3f",
			res.RewardFirstWindow, res.RewardLastWindow, res.RandomPolicyReward, res.BestPolicyReward)
	}

	// Every acknowledged rank is learned, then the joined topic is final.
	acked := map[string]bool{}
	for _, c := range clients {
		for id := range c.ids {
			acked["default/"+id] = true
		}
	}
	waitExamples(ctx, t, models, int64(len(acked)))
	joiners[0].stop(t)
	joined := h.readTopic(eventlog.JoinedTopic)
	lines, distinct := 0, map[string]bool{}
	for _, recs := range joined {
		for _, rec := range recs {
			lines++
			distinct[string(rec.Key)] = true
		}
	}
	for id := range acked {
		if !distinct[id] {
			t.Errorf("acknowledged rank %s was never joined", id)
		}
	}
	for id := range distinct {
		if !acked[id] {
			t.Errorf("%s was joined but never acknowledged", id)
		}
	}
	// The learner drops repeats by key. To know it has read the joined
	// topic to its end, append a marker line to every partition: once all
	// are learned, everything before them was read, and the count is exact.
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.brokers, ByPartition: true})
	for p, recs := range joined {
		m := eventlog.Record{Topic: eventlog.JoinedTopic, Partition: p, Key: fmt.Appendf(nil, "default/marker-%d", p), Value: recs[0].Value}
		if err := w.Write(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	want := int64(len(acked) + len(joined))
	if got := waitExamples(ctx, t, models, want); got.GetExamples() != uint64(want) {
		t.Errorf("learned %d examples, want %d: %d acknowledged ranks and %d markers, from %d joined lines",
			got.GetExamples(), want, len(acked), len(joined), lines)
	}
	t.Logf("%d acknowledged ranks, %d joined lines (%d repeats after the SIGKILL), each learned once", len(acked), lines, lines-len(acked))

	// The learner and the servers answer GET /capacity for their roles.
	for _, c := range []struct{ addr, role, events string }{
		{field(lp, "personalizer learner:", "HTTP"), "learner", "examples learned"},
		{httpAddrs[0], "server", "ranks answered"},
	} {
		r := getCapacity(t, c.addr)
		if r.Role != c.role || r.CPU.Events != c.events || r.Input != nil || r.Joiner != nil {
			t.Errorf("%s /capacity: %+v", c.role, r)
		}
		if c.role == "learner" && (len(r.Learners) != 1 || r.Learners[0].Loop != "default" || len(r.Learners[0].Partitions) != kafkalog.DefaultEventsPartitions) {
			t.Errorf("learner /capacity learners: %+v", r.Learners)
		}
	}

	// Without its learner, the surviving server keeps serving its last
	// model and says so: in gRPC health, in /healthz and to the health
	// command.
	if st := serverHealth(t, httpAddrs[0]); st.ModelVersion == 0 || st.ModelAgeSeconds == nil || !st.LearnerReachable {
		t.Errorf("/healthz with the learner up: %+v", st)
	}
	watch, err := healthpb.NewHealthClient(dial(t, grpcAddrs[0])).Watch(ctx, &healthpb.HealthCheckRequest{Service: modelSourceService})
	if err != nil {
		t.Fatal(err)
	}
	for want := healthpb.HealthCheckResponse_SERVING; ; want = healthpb.HealthCheckResponse_NOT_SERVING {
		got, err := watch.Recv()
		if err != nil || got.GetStatus() != want {
			t.Fatalf("%s health %v, %v; want %v", modelSourceService, got, err, want)
		}
		if want == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		lp.stop(t)
	}
	st := serverHealth(t, httpAddrs[0])
	if st.ModelVersion == 0 || st.LearnerReachable {
		t.Errorf("/healthz with the learner down: %+v", st)
	}
	resp, err := clients[0].Rank(ctx, &personalizerv1.RankRequest{Actions: []*personalizerv1.Action{{Id: "a"}, {Id: "b"}}})
	if err != nil || resp.GetModelVersion() != fmt.Sprint(st.ModelVersion) {
		t.Errorf("Rank with the learner down: %v, %v; want model version %d", resp, err, st.ModelVersion)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"health", "--addr", grpcAddrs[0]}, &out, &out, noEnv); err != nil {
		t.Errorf("health: %v", err)
	}
	if err := run(ctx, []string{"health", "--addr", grpcAddrs[0], "--service", modelSourceService}, &out, &out, noEnv); err == nil || !strings.Contains(err.Error(), "NOT_SERVING") {
		t.Errorf("health of %s with the learner down: %v, want NOT_SERVING", modelSourceService, err)
	}
	servers[0].stop(t)
	broker.stop(t)
}

// ackClient records the event ids of the ranks the service acknowledged.
type ackClient struct {
	personalizerv1.PersonalizerServiceClient
	mu  sync.Mutex
	ids map[string]bool
}

func (c *ackClient) Rank(ctx context.Context, req *personalizerv1.RankRequest, opts ...grpc.CallOption) (*personalizerv1.RankResponse, error) {
	resp, err := c.PersonalizerServiceClient.Rank(ctx, req, opts...)
	if err == nil {
		c.mu.Lock()
		if c.ids == nil {
			c.ids = map[string]bool{}
		}
		c.ids[resp.GetEventId()] = true
		c.mu.Unlock()
	}
	return resp, err
}

func (c *ackClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

// dial connects to a gRPC address, closing the connection when the test ends.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(defaultMaxModelBytes)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitExamples watches the learner's model versions until one has learned
// at least n examples, and returns its metadata.
func waitExamples(ctx context.Context, t *testing.T, models eventsv1.ModelServiceClient, n int64) *eventsv1.ModelInfo {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := models.WatchModel(ctx, &eventsv1.WatchModelRequest{Loop: "default"})
	if err != nil {
		t.Fatal(err)
	}
	var last *eventsv1.ModelInfo
	for {
		w, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for %d learned examples (last version %v): %v", n, last, err)
		}
		if last = w.GetInfo(); int64(last.GetExamples()) >= n {
			return last
		}
	}
}

// serverHealth returns a server's GET /healthz.
func serverHealth(t *testing.T, addr string) serverStatus {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	var st serverStatus
	if err := json.Unmarshal(buf.Bytes(), &st); err != nil {
		t.Fatalf("/healthz: %v: %s", err, buf.Bytes())
	}
	return st
}
