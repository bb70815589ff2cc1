package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/joiner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// hostileServer is a server with cfg (Loop set here) whose records go to
// the returned log, which refuses records over cfg.MaxRecordBytes as a
// broker does.
func hostileServer(t *testing.T, cfg Config) (*Server, *eventlog.Mem) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1, eventlog.DeadLetterTopic: 1})
	mem.MaxRecordBytes = cfg.MaxRecordBytes
	pub := NewPublisher(mem, DefaultBufferLimits, cfg.MaxRecordBytes, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pub.Run(ctx, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	cfg.Loop = "test"
	return New(cfg, pub, log, func() time.Time { return testNow }), mem
}

// withString is a valid Rank whose context has one string feature v.
func withString(v string) *personalizerv1.RankRequest {
	req := validRank()
	req.ContextFeatures[0].Features = append(req.ContextFeatures[0].Features, str("blob", v))
	return req
}

// TestRankRefusesWhatTheLogCannotTake checks the limit on what a Rank
// becomes: a request within every feature limit whose event would not fit
// the log's record size (a string of control characters is small as bytes
// and six times larger escaped for the DSJson context; plain text just
// under the feature-bytes limit) is refused with InvalidArgument naming
// the limit, and logs nothing; one that fits is answered and written.
func TestRankRefusesWhatTheLogCannotTake(t *testing.T) {
	t.Parallel()
	srv, mem := hostileServer(t, Config{MaxRecordBytes: eventlog.DefaultMaxRecordBytes})
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		req  *personalizerv1.RankRequest
	}{
		{"control characters", withString(strings.Repeat("\x01", 200_000))},
		{"just under the feature bytes limit", withString(strings.Repeat("b", DefaultLimits.MaxFeatureBytes-100))},
	} {
		_, err := srv.Rank(ctx, tt.req)
		assertInvalid(t, err, "request")
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "--max-record-bytes") {
			t.Errorf("%s: message %q does not name the limit", tt.name, msg)
		}
	}
	if _, err := srv.Rank(ctx, withString(strings.Repeat("b", 500_000))); err != nil {
		t.Fatalf("a 500 KB request: %v", err)
	}
	rec := loggedRecord(t, mem, 1)
	if rec.Size() > eventlog.DefaultMaxRecordBytes || len(rec.Value) < 500_000 {
		t.Errorf("the record of a 500 KB request has %d bytes", rec.Size())
	}

	// The boundary is exact: the context plus room for the joined line.
	small, _ := hostileServer(t, Config{MaxRecordBytes: 20_000})
	base := len(contextOf(t, withString("")))
	fits := 20_000 - decide.JoinedLineRoom - base
	if _, err := small.Rank(ctx, withString(strings.Repeat("x", fits))); err != nil {
		t.Errorf("a context of exactly the room left: %v", err)
	}
	_, err := small.Rank(ctx, withString(strings.Repeat("x", fits+1)))
	assertInvalid(t, err, "request")
}

// contextOf is the DSJson context a server logs for req.
func contextOf(t *testing.T, req *personalizerv1.RankRequest) []byte {
	t.Helper()
	srv, mem := modeServer(t, 0)
	if _, err := srv.Rank(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	var ev eventsv1.RankEvent
	if err := proto.Unmarshal(loggedRecord(t, mem, 1).Value, &ev); err != nil {
		t.Fatal(err)
	}
	c, err := joiner.RankContext(&ev)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// manyFeatures is a valid Rank with n number features in one context
// namespace.
func manyFeatures(n int) *personalizerv1.RankRequest {
	req := validRank()
	for i := range n {
		req.ContextFeatures[0].Features = append(req.ContextFeatures[0].Features, num(fmt.Sprint("f", i), 1))
	}
	return req
}

// TestRankBoundsInteractions checks the bound on a Rank's interaction
// work: thousands of features in one namespace (a ~40 KB request) make
// millions of quadratic features under -q :: and are refused before any
// scoring, with the count and the limit; the same request is fine for a
// policy without interactions, and the bound follows the model's policy
// once there is a model.
func TestRankBoundsInteractions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	req := manyFeatures(3000)
	for i, a := range req.Actions {
		a.Features[0].Features[0] = num("n", float64(i+1)) // not 0: VW drops zero-valued features
	}
	srv, mem := hostileServer(t, Config{})
	_, err := srv.Rank(ctx, req)
	assertInvalid(t, err, "request")
	// Per action: 3001 context and 3 action features (i: constant and id,
	// j: n), the constant; pairs within U (3001*3002/2), i (3), j (1), and
	// across them (U*i, U*j, i*j).
	perAction := 3001 + 3 + 1 + 3001*3002/2 + 3 + 1 + 3001*2 + 3001*1 + 2*1
	want := fmt.Sprintf("make %d features to score these actions, over the limit of %d (--max-interaction-features)", 3*perAction, DefaultLimits.MaxInteractionFeatures)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, want) {
		t.Errorf("message %q, want it to say %q", msg, want)
	}

	linear, err := bandit.ParsePolicy("--cb_explore_adf --epsilon 0.2")
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := hostileServer(t, Config{Policy: linear})
	if _, err := plain.Rank(ctx, req); err != nil {
		t.Errorf("no interactions: %v", err)
	}
	// A model of the default policy: its interactions bound Rank now.
	var buf bytes.Buffer
	if _, err := bandit.NewModel(mustParse(t, bandit.DefaultPolicy)).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if err := plain.Load(versionOf(buf.Bytes(), 1)); err != nil {
		t.Fatal(err)
	}
	_, err = plain.Rank(ctx, req)
	assertInvalid(t, err, "request")
	if n := len(mem.Records(eventlog.EventsTopic, 0)); n != 0 {
		t.Errorf("refused requests logged %d records", n)
	}
}

func mustParse(t testing.TB, args string) *bandit.Policy {
	t.Helper()
	p, err := bandit.ParsePolicy(args)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLargeRankReleasesScratch checks that the memory a large Rank grew
// (here: 4.5 million shared products cached while scoring, 18 MB) is not
// kept for the Ranks after it. Not parallel: it reads the heap's size.
func TestLargeRankReleasesScratch(t *testing.T) {
	srv, _ := hostileServer(t, Config{Limits: Limits{MaxActions: 50, MaxIDLength: 256, MaxFeatureBytes: 1 << 20, MaxFeatures: 10_000, MaxInteractionFeatures: 1 << 30}})
	var buf bytes.Buffer
	if _, err := bandit.NewModel(mustParse(t, bandit.DefaultPolicy)).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if err := srv.Load(versionOf(buf.Bytes(), 1)); err != nil {
		t.Fatal(err)
	}
	// One P: the pool then hands the test goroutine what it put back.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ctx := context.Background()
	// The heap after a Rank and a collection: under load a pool keeps
	// what Ranks put back (a collection moves it to a victim cache, the
	// next Rank takes it from there).
	heap := func() uint64 {
		if _, err := srv.Rank(ctx, validRank()); err != nil {
			t.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	heap()
	before := heap()
	big := manyFeatures(3000)
	big.Actions = big.Actions[:1]
	if _, err := srv.Rank(ctx, big); err != nil {
		t.Fatal(err)
	}
	heap()
	heap()
	if after := heap(); after > before+8<<20 {
		t.Errorf("heap grew from %d to %d bytes after one large Rank", before, after)
	}
}

// TestRankRefusesARequestTooLargeToLog checks the other half of the
// record limit: the rank record carries the request as protobuf, which
// for many short number features is larger than their JSON (14 bytes a
// feature against 6), so such a request is refused by its own size even
// though its context would fit; one feature fewer than the limit allows
// fits.
func TestRankRefusesARequestTooLargeToLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	req := manyFeatures(1000)
	wire := len(mustMarshal(t, req))
	if c := len(contextOf(t, req)); c >= wire {
		t.Fatalf("context %d bytes, request %d: the test needs a request larger than its context", c, wire)
	}
	limit := wire + decide.JoinedLineRoom
	srv, _ := hostileServer(t, Config{MaxRecordBytes: limit})
	if _, err := srv.Rank(ctx, req); err != nil {
		t.Errorf("a request of exactly the room left: %v", err)
	}
	small, mem := hostileServer(t, Config{MaxRecordBytes: limit - 1})
	_, err := small.Rank(ctx, req)
	assertInvalid(t, err, "request")
	if msg := status.Convert(err).Message(); !strings.Contains(msg, fmt.Sprintf("about %d bytes, over the limit of %d bytes", limit, limit-1)) {
		t.Errorf("message %q", msg)
	}
	if n := len(mem.Records(eventlog.EventsTopic, 0)); n != 0 {
		t.Errorf("the refused request logged %d records", n)
	}
}
