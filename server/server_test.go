package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/joiner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

var testNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newTestServer serves s over bufconn and returns a client. Published
// records go to the returned log.
func newTestServer(t *testing.T) (personalizerv1.PersonalizerServiceClient, *eventlog.Mem, *Server) {
	t.Helper()
	return newTestServerWith(t, Config{Loop: "test"})
}

// newTestServerWith is newTestServer of a server configured with cfg.
func newTestServerWith(t *testing.T, cfg Config) (personalizerv1.PersonalizerServiceClient, *eventlog.Mem, *Server) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 4})
	pub := NewPublisher(mem, BufferLimits{Records: 1000, Bytes: 1 << 30}, 0, log)
	srv := New(cfg, pub, log, func() time.Time { return testNow })
	ctx, cancel := context.WithCancel(context.Background())
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(ctx, time.Second) }()

	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	Register(gs, srv)
	go gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		cancel()
		<-pubDone
	})
	return personalizerv1.NewPersonalizerServiceClient(conn), mem, srv
}

func str(name, v string) *personalizerv1.Feature {
	return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_StringValue{StringValue: v}}
}

func num(name string, v float64) *personalizerv1.Feature {
	return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_NumberValue{NumberValue: v}}
}

func ns(name string, fs ...*personalizerv1.Feature) *personalizerv1.Namespace {
	return &personalizerv1.Namespace{Name: name, Features: fs}
}

func actions(n int) []*personalizerv1.Action {
	as := make([]*personalizerv1.Action, n)
	for i := range as {
		as[i] = &personalizerv1.Action{Id: "a" + string(rune('A'+i%26)) + strings.Repeat("x", i/26), Features: []*personalizerv1.Namespace{ns("", num("n", float64(i)))}}
	}
	return as
}

func validRank() *personalizerv1.RankRequest {
	return &personalizerv1.RankRequest{ContextFeatures: []*personalizerv1.Namespace{ns("User", str("tier", "gold"))}, Actions: actions(3)}
}

func TestRankRejectsBadInput(t *testing.T) {
	t.Parallel()
	client, mem, _ := newTestServer(t)
	empty := ""
	tests := []struct {
		name  string
		edit  func(r *personalizerv1.RankRequest)
		field string
	}{
		{"no actions", func(r *personalizerv1.RankRequest) { r.Actions = nil }, "actions"},
		{"51 actions", func(r *personalizerv1.RankRequest) { r.Actions = actions(51) }, "actions"},
		{"duplicate ids", func(r *personalizerv1.RankRequest) { r.Actions[2].Id = r.Actions[0].Id }, "actions[2].id"},
		{"empty action id", func(r *personalizerv1.RankRequest) { r.Actions[1].Id = "" }, "actions[1].id"},
		{"action id too long", func(r *personalizerv1.RankRequest) { r.Actions[1].Id = strings.Repeat("x", 257) }, "actions[1].id"},
		{"empty event id", func(r *personalizerv1.RankRequest) { r.EventId = &empty }, "event_id"},
		{"event id too long", func(r *personalizerv1.RankRequest) { r.EventId = proto.String(strings.Repeat("e", 257)) }, "event_id"},
		{"unknown excluded id", func(r *personalizerv1.RankRequest) { r.ExcludedActions = []string{"nope"} }, "excluded_actions[0]"},
		{"every action excluded", func(r *personalizerv1.RankRequest) {
			r.ExcludedActions = []string{r.Actions[0].Id, r.Actions[1].Id, r.Actions[2].Id}
		}, "excluded_actions"},
		{"NaN feature", func(r *personalizerv1.RankRequest) { r.ContextFeatures[0].Features[0] = num("x", math.NaN()) }, "context_features[0].features[0].number_value"},
		{"infinite action feature", func(r *personalizerv1.RankRequest) {
			r.Actions[1].Features[0].Features[0] = num("x", math.Inf(1))
		}, "actions[1].features[0].features[0].number_value"},
		{"empty feature name", func(r *personalizerv1.RankRequest) { r.ContextFeatures[0].Features[0].Name = "" }, "context_features[0].features[0].name"},
		{"reserved feature name", func(r *personalizerv1.RankRequest) { r.ContextFeatures[0].Features[0].Name = "_multi" }, "context_features[0].features[0].name"},
		{"reserved namespace name", func(r *personalizerv1.RankRequest) { r.ContextFeatures[0].Name = "_multi" }, "context_features[0].name"},
		{"feature without value", func(r *personalizerv1.RankRequest) {
			r.ContextFeatures[0].Features[0] = &personalizerv1.Feature{Name: "x"}
		}, "context_features[0].features[0]"},
		{"oversized request", func(r *personalizerv1.RankRequest) {
			r.ContextFeatures[0].Features[0] = str("blob", strings.Repeat("b", DefaultLimits.MaxFeatureBytes))
		}, "request"},
		{"too many features", func(r *personalizerv1.RankRequest) {
			for i := range DefaultLimits.MaxFeatures {
				r.ContextFeatures[0].Features = append(r.ContextFeatures[0].Features, num("f", float64(i)))
			}
		}, "request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := validRank()
			tt.edit(req)
			_, err := client.Rank(context.Background(), req)
			assertInvalid(t, err, tt.field)
		})
	}
	t.Run("bad rewards", func(t *testing.T) {
		t.Parallel()
		for _, tt := range []struct {
			req   *personalizerv1.RewardRequest
			field string
		}{
			{&personalizerv1.RewardRequest{EventId: "e", Value: float32(math.NaN())}, "value"},
			{&personalizerv1.RewardRequest{EventId: "e", Value: 1.5}, "value"},
			{&personalizerv1.RewardRequest{EventId: "e", Value: -1.01}, "value"},
			{&personalizerv1.RewardRequest{EventId: "", Value: 1}, "event_id"},
		} {
			_, err := client.Reward(context.Background(), tt.req)
			assertInvalid(t, err, tt.field)
		}
		_, err := client.Activate(context.Background(), &personalizerv1.ActivateRequest{})
		assertInvalid(t, err, "event_id")
	})
	t.Cleanup(func() {
		for p := range mem.Partitions(eventlog.EventsTopic) {
			if n := len(mem.Records(eventlog.EventsTopic, p)); n != 0 {
				t.Errorf("rejected requests logged %d records in partition %d", n, p)
			}
		}
	})
}

func assertInvalid(t *testing.T, err error, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v (%v), want InvalidArgument", st.Code(), err)
	}
	if !strings.HasPrefix(st.Message(), field+":") {
		t.Errorf("message %q does not name field %q", st.Message(), field)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 && br.GetFieldViolations()[0].GetField() == field {
			return
		}
	}
	t.Errorf("no BadRequest detail for field %q in %v", field, st.Details())
}

func TestRankAnswersAndLogs(t *testing.T) {
	t.Parallel()
	client, mem, _ := newTestServer(t)
	req := validRank()
	req.Actions = actions(5)
	req.ExcludedActions = []string{req.Actions[1].Id}
	req.EventId = proto.String("event-1")
	resp, err := client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Ranking) != 5 || resp.EventId != "event-1" || resp.Ranking[0].Id != resp.RewardActionId {
		t.Fatalf("response = %v", resp)
	}
	var sum float32
	for _, r := range resp.Ranking {
		if r.Id == req.Actions[1].Id && r.Probability != 0 {
			t.Errorf("excluded action has probability %v", r.Probability)
		}
		if r.Id != req.Actions[1].Id && r.Probability != 0.25 {
			t.Errorf("action %s has probability %v before any model, want 0.25", r.Id, r.Probability)
		}
		sum += r.Probability
	}
	if sum != 1 {
		t.Errorf("probabilities sum to %v", sum)
	}
	again, err := client.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(resp, again) {
		t.Errorf("same event id, different answer:\n%v\n%v", resp, again)
	}

	// The rank record reaches the log, keyed loop/eventId.
	var recs []eventlog.Record
	r := mem.Reader(eventlog.EventsTopic, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(recs) < 2 {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	rec := recs[0]
	if string(rec.Key) != "test/event-1" || rec.Type() != eventlog.TypeRank || !rec.Time.Equal(testNow) {
		t.Fatalf("record key %q type %q time %v", rec.Key, rec.Type(), rec.Time)
	}
	var ev eventsv1.RankEvent
	if err := proto.Unmarshal(rec.Value, &ev); err != nil {
		t.Fatal(err)
	}
	var eligible []*personalizerv1.Action
	for _, a := range req.Actions {
		if a.Id != req.ExcludedActions[0] {
			eligible = append(eligible, a)
		}
	}
	// The record carries the request as sent and no context: the joiner
	// renders that.
	c, err := joiner.RankContext(&ev)
	if len(ev.Ranking) != 4 || eligible[ev.Ranking[0]].Id != resp.RewardActionId || ev.Probabilities[0] != 0.25 ||
		len(ev.Context) != 0 || !bytes.Equal(ev.Request, mustMarshal(t, req)) ||
		err != nil || string(c) != string(features.AppendContext(nil, req.ContextFeatures, eligible)) {
		t.Errorf("rank event = %v, context %s (%v)", &ev, c, err)
	}
}

func TestRankGeneratesEventIDs(t *testing.T) {
	t.Parallel()
	client, _, _ := newTestServer(t)
	seen := map[string]bool{}
	for range 20 {
		resp, err := client.Rank(context.Background(), validRank())
		if err != nil {
			t.Fatal(err)
		}
		if resp.EventId == "" || seen[resp.EventId] {
			t.Fatalf("event id %q empty or repeated", resp.EventId)
		}
		seen[resp.EventId] = true
	}
}

func TestRankStreamKeepsOrder(t *testing.T) {
	t.Parallel()
	client, _, _ := newTestServer(t)
	stream, err := client.RankStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	go func() {
		for i := range n {
			req := validRank()
			req.EventId = proto.String("s" + string(rune('0'+i/10)) + string(rune('0'+i%10)))
			stream.Send(&personalizerv1.RankStreamRequest{Request: req})
		}
		bad := validRank()
		bad.Actions = nil
		stream.Send(&personalizerv1.RankStreamRequest{Request: bad})
		stream.CloseSend()
	}()
	for i := range n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if want := "s" + string(rune('0'+i/10)) + string(rune('0'+i%10)); resp.Response.EventId != want {
			t.Fatalf("response %d has event id %q, want %q", i, resp.Response.EventId, want)
		}
	}
	_, err = stream.Recv()
	assertInvalid(t, err, "actions")
}

// TestRankRecordsKeepTheirContext: Rank renders the context into pooled
// memory and encodes the record from it; concurrent calls each log their
// own request's context, whole.
func TestRankRecordsKeepTheirContext(t *testing.T) {
	t.Parallel()
	client, mem, _ := newTestServer(t)
	const n = 40
	reqs := map[string]*personalizerv1.RankRequest{}
	for i := range n {
		req := validRank()
		req.EventId = proto.String(fmt.Sprintf("event-%d", i))
		req.ContextFeatures[0].Features = append(req.ContextFeatures[0].Features, num("n", float64(i)+0.5), str("s", strings.Repeat("x", i)))
		req.Actions = actions(1 + i%7)
		reqs[req.GetEventId()] = req
	}
	var wg sync.WaitGroup
	for _, req := range reqs {
		wg.Go(func() {
			if _, err := client.Rank(context.Background(), req); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	r := mem.Reader(eventlog.EventsTopic, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range n {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ev eventsv1.RankEvent
		if err := proto.Unmarshal(rec.Value, &ev); err != nil {
			t.Fatal(err)
		}
		req := reqs[ev.EventId]
		if req == nil {
			t.Fatalf("record for unknown or repeated event %q", ev.EventId)
		}
		delete(reqs, ev.EventId)
		c, err := joiner.RankContext(&ev)
		if want := features.AppendContext(nil, req.ContextFeatures, req.Actions); string(c) != string(want) {
			t.Errorf("event %s logged context\n%s (%v)\nwant\n%s", ev.EventId, c, err, want)
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEncodeRankRecord checks that a rank record encoded in front of its
// request's bytes is what protobuf encodes, with the fields in the room
// and, when they do not fit there, apart.
func TestEncodeRankRecord(t *testing.T) {
	t.Parallel()
	req := mustMarshal(t, validRank())
	lc := &liveConfig{rules: &eventsv1.JoinRules{RewardWaitMs: 5, Aggregation: "sum", ConfigVersion: 2}}
	mode := eventsv1.LearningMode_LEARNING_MODE_APPRENTICE
	for _, n := range []int{1, 3, 50, 120} { // 120 actions' fields overflow the room
		var sc scratch
		logged := make([]bandit.ActionProb, n)
		for i := range logged {
			logged[i] = bandit.ActionProb{Action: n - 1 - i, Prob: 1 / float32(n)}
		}
		buf := withRoom(req)
		d := &decide.Decision{EventID: "évent", Logged: logged, Mode: mode, ModelVersion: "7"}
		ev := buildRankRecord(&sc, &loopState{name: "loop"}, lc, d, true)
		got := encodeRankRecord(ev, buf)
		want := &eventsv1.RankEvent{Loop: "loop", EventId: "évent", Request: req, Ranking: sc.ranking, Probabilities: sc.probs,
			Deferred: true, ModelVersion: "7", LearningMode: mode, Rules: lc.rules}
		if !bytes.Equal(got, mustMarshal(t, want)) {
			t.Errorf("%d actions: encoded differently from protobuf", n)
		}
		if inRoom := &got[len(got)-1] == &buf[len(buf)-1]; inRoom != (n < 120) {
			t.Errorf("%d actions: encoded in the room %v", n, inRoom)
		}
	}
}
