package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// scrape reads GET /metrics at httpAddr: sample name with labels -> value.
func scrape(t *testing.T, httpAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkMetrics reports every metric of want whose value in got differs.
func checkMetrics(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, w)
		}
	}
}

// panicky is a PersonalizerService whose handlers panic.
type panicky struct {
	personalizerv1.UnimplementedPersonalizerServiceServer
}

func (panicky) Rank(context.Context, *personalizerv1.RankRequest) (*personalizerv1.RankResponse, error) {
	panic("boom in Rank")
}

func (panicky) RankStream(personalizerv1.PersonalizerService_RankStreamServer) error {
	panic("boom in RankStream")
}

// TestServerInterceptors serves handlers that panic through listenAPI: each
// panic becomes Internal, is logged with its value and counted, and the
// process goes on serving; every call gets one log line.
func TestServerInterceptors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sec := securityConfig{Loop: "default", RateBurst: 1, MaxMessageBytes: 1 << 20}
	a, err := listenAPI("127.0.0.1:0", "127.0.0.1:0", sec, log, func(g *grpc.Server) {
		personalizerv1.RegisterPersonalizerServiceServer(g, panicky{})
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 2)
	go func() { served <- a.serveGRPC(ctx) }()
	go func() { served <- a.serveHTTP(ctx) }()
	defer func() {
		if err := a.drain(); err != nil {
			t.Error(err)
		}
		for range 2 {
			if err := <-served; err != nil {
				t.Error(err)
			}
		}
	}()
	conn, err := grpc.NewClient(a.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := personalizerv1.NewPersonalizerServiceClient(conn)

	for range 2 {
		_, err := client.Rank(ctx, &personalizerv1.RankRequest{})
		if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
			t.Errorf("Rank: %v, want Internal \"internal error\"", err)
		}
	}
	stream, err := client.RankStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Internal {
		t.Errorf("RankStream: %v, want Internal", err)
	}
	// Still serving: a call that works, and one that fails without a panic.
	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || health.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after panics: %v %v", health, err)
	}
	if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("Reward: %v, want Unimplemented", err)
	}

	checkMetrics(t, scrape(t, a.httpLis.Addr().String()), map[string]float64{
		"personalizer_grpc_panics_total": 3,
		// The panicking Rank calls never answered.
		"personalizer_rank_duration_seconds_count": 0,
	})
	type line struct {
		Level, Msg, Panic string
		Method            string `json:"grpc.method"`
		Code              string `json:"grpc.code"`
	}
	var panics []string
	finished := map[string]line{}
	for l := range strings.Lines(logs.String()) {
		var e line
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		switch e.Msg {
		case "panic in gRPC handler":
			panics = append(panics, e.Panic)
		case "finished call":
			if _, dup := finished[e.Method]; dup {
				t.Errorf("two lines for %s", e.Method)
			}
			finished[e.Method] = e
		}
	}
	if want := []string{"boom in Rank", "boom in Rank", "boom in RankStream"}; fmt.Sprint(panics) != fmt.Sprint(want) {
		t.Errorf("panics logged: %q, want %q", panics, want)
	}
	if e := finished["Check"]; e.Level != "DEBUG" || e.Code != "OK" {
		t.Errorf("health check logged as %+v, want DEBUG with code OK", e)
	}
	if e := finished["Reward"]; e.Level != "ERROR" || e.Code != "Unimplemented" {
		t.Errorf("Reward logged as %+v, want ERROR with code Unimplemented", e)
	}
}

// rankRequest is a small valid Rank request for event id.
func rankRequest(id string) *personalizerv1.RankRequest {
	return &personalizerv1.RankRequest{
		EventId: proto.String(id),
		ContextFeatures: []*personalizerv1.Namespace{{Name: "User", Features: []*personalizerv1.Feature{
			{Name: "tier", Value: &personalizerv1.Feature_StringValue{StringValue: "gold"}}}}},
		Actions: []*personalizerv1.Action{{Id: "news"}, {Id: "sport"}, {Id: "music"}},
	}
}

// TestMetrics scrapes /metrics of a dev loop after known traffic and
// checks every counter exactly.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A reward wait that a loaded machine cannot miss between a Rank and
	// its Reward: a late reward would count as a default one.
	d, client := startTestDev(t, testConfig(t, t.TempDir(), "--event-buffer", "500", "--reward-wait", "10s"))
	defer d.close()
	const ranks, rewards, streamed = 40, 25, 10
	for i := range ranks {
		if _, err := client.Rank(ctx, rankRequest(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
		if i < rewards {
			if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: fmt.Sprintf("m%d", i), Value: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	stream, err := client.RankStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range streamed {
		if err := stream.Send(&personalizerv1.RankStreamRequest{Request: rankRequest(fmt.Sprintf("s%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
	for range streamed {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	const events = ranks + streamed
	// Everything is learned once the version with every example is out;
	// nothing changes after that.
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return d.store.Latest().GetInfo().GetExamples() == events }); err != nil {
		t.Fatalf("waiting for a model of %d examples: %v (stats %+v)", events, err, d.learner.Stats())
	}
	if err := d.joiner.Wait(ctx, func(s joiner.Stats) bool { return s.Emitted == events }); err != nil {
		t.Fatal(err)
	}
	// The server pulls the version after the learner publishes it.
	waitServed(ctx, t, d, d.store.Latest().GetInfo().GetVersion())
	got := scrape(t, d.api.httpLis.Addr().String())
	checkMetrics(t, got, map[string]float64{
		"personalizer_rank_duration_seconds_count":                events,
		"personalizer_events_written_total":                       events + rewards,
		"personalizer_events_buffered":                            0,
		"personalizer_events_buffer_capacity":                     500,
		"personalizer_events_refused_total":                       0,
		"personalizer_events_lost_total":                          0,
		"personalizer_joiner_joined_total":                        events,
		"personalizer_joiner_learnable_total":                     events,
		"personalizer_joiner_default_reward_total":                events - rewards,
		"personalizer_joiner_late_total":                          0,
		"personalizer_joiner_dangling_total":                      0,
		"personalizer_joiner_dead_letter_total":                   0,
		"personalizer_joiner_unknown_slot_rewards_total":          0,
		"personalizer_joiner_pending_events":                      0,
		"personalizer_learner_examples_total{loop=\"default\"}":   events,
		"personalizer_learner_duplicates_total{loop=\"default\"}": 0,
		"personalizer_learner_malformed_total{loop=\"default\"}":  0,
		"personalizer_learner_model_version{loop=\"default\"}":    float64(d.learner.Stats().Version),
		"personalizer_server_model_source_up":                     1,
		"personalizer_grpc_panics_total":                          0,
	})
	if v := got["personalizer_server_model_version{loop=\"default\"}"]; v < 1 || v > got["personalizer_learner_model_version{loop=\"default\"}"] {
		t.Errorf("server model version %v, learner's %v", v, got["personalizer_learner_model_version{loop=\"default\"}"])
	}
	for _, name := range []string{"personalizer_learner_model_age_seconds{loop=\"default\"}", "personalizer_server_model_age_seconds{loop=\"default\"}"} {
		if got[name] <= 0 {
			t.Errorf("%s = %v, want the age of a model", name, got[name])
		}
	}
	if got[`personalizer_rank_duration_seconds_bucket{le="+Inf"}`] != events {
		t.Errorf("rank histogram: %v", got)
	}
}

// TestTracing follows one traced Rank call over gRPC and one over REST:
// the server's span is a child of the caller's, the joiner's of the
// server's (through the Kafka record headers) and the learner's of the
// joiner's, all in the caller's trace.
func TestTracing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spans := tracetest.NewInMemoryExporter()
	cfg := testConfig(t, t.TempDir())
	cfg.Tracing = sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	d, client := startTestDev(t, cfg)
	closed := false
	defer func() {
		if !closed {
			d.close()
		}
	}()

	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	traced := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	if _, err := client.Rank(traced, rankRequest("traced")); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: "traced", Value: 1}); err != nil {
		t.Fatal(err)
	}
	// The same through the REST API, in a trace of its own.
	const restTraceID, restCaller = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0"
	for _, c := range []struct{ path, body string }{
		{"/rank", `{"eventId":"rest-traced","contextFeatures":[{"u":"x"}],"actions":[{"id":"a"},{"id":"b"}]}`},
		{"/events/rest-traced/reward", `{"value":1}`},
	} {
		req, err := http.NewRequestWithContext(ctx, "POST", base+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("traceparent", "00-"+restTraceID+"-"+restCaller+"-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST %s: %s", c.path, resp.Status)
		}
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned == 2 }); err != nil {
		t.Fatal(err)
	}
	// Closing ends every call, and with it the server's spans.
	closed = true
	if err := d.close(); err != nil {
		t.Fatal(err)
	}

	find := func(traceID, name string) tracetest.SpanStub {
		t.Helper()
		var found []tracetest.SpanStub
		for _, s := range spans.GetSpans() {
			if s.Name == name && s.SpanContext.TraceID().String() == traceID {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d spans %q in trace %s, want 1; all spans: %v", len(found), name, traceID, spanNames(spans.GetSpans()))
		}
		return found[0]
	}
	rank := find(traceID, "personalizer.v1.PersonalizerService/Rank")
	join := find(traceID, "personalizer.joiner.join")
	learn := find(traceID, "personalizer.learner.learn")
	// The REST trace has two REST spans (rank and reward); the joiner's
	// span is the child of the rank's, the one its record carried.
	restJoin := find(restTraceID, "personalizer.joiner.join")
	var restRank tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.Name == "POST /personalizer/" && s.SpanContext.SpanID() == restJoin.Parent.SpanID() {
			restRank = s
		}
	}
	for _, c := range []struct {
		child  tracetest.SpanStub
		parent string
	}{
		{rank, callerSpan},
		{join, rank.SpanContext.SpanID().String()},
		{learn, join.SpanContext.SpanID().String()},
		{restRank, restCaller},
		{find(restTraceID, "personalizer.learner.learn"), restJoin.SpanContext.SpanID().String()},
	} {
		if got := c.child.Parent.SpanID().String(); got != c.parent {
			t.Errorf("span %s has parent %s, want %s", c.child.Name, got, c.parent)
		}
	}
}

func spanNames(spans tracetest.SpanStubs) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name+"@"+s.SpanContext.TraceID().String())
	}
	return names
}

// TestJoinerMetrics runs `personalizer joiner --http-addr` and scrapes its
// metrics.
func TestJoinerMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"joiner", "--kafka-brokers", b.Addrs()[0], "--http-addr", "127.0.0.1:0", "--log-level", "warn"},
			&announce{ready: ready}, io.Discard, noEnv)
	}()
	var addr string
	select {
	case line := <-ready:
		_, addr, _ = strings.Cut(line, ", HTTP ")
	case err := <-done:
		t.Fatalf("joiner exited: %v", err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	got := scrape(t, addr)
	checkMetrics(t, got, map[string]float64{
		"personalizer_joiner_joined_total":         0,
		"personalizer_joiner_learnable_total":      0,
		"personalizer_joiner_default_reward_total": 0,
		"personalizer_joiner_late_total":           0,
		"personalizer_joiner_dangling_total":       0,
		"personalizer_joiner_dead_letter_total":    0,
		"personalizer_joiner_pending_events":       0,
	})
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	// GET /capacity waits for the first sample, taken as the joiner starts.
	if r := getCapacity(t, addr); r.Role != "joiner" || r.CPU.Events != "events joined" || r.Input == nil || r.Joiner == nil || r.Learners != nil {
		t.Errorf("GET /capacity: %+v", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("joiner: %v", err)
	}
}
