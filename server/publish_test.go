package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/eventlog"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// TestBufferFull fills a publisher that is not writing: Rank answers
// anyway, Reward and Activate answer ResourceExhausted, every refused
// record is counted, and one warning sums them up.
func TestBufferFull(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	pub := NewPublisher(eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1}), 2, log)
	srv := New(Config{Loop: "test"}, pub, log, func() time.Time { return testNow })
	ctx := context.Background()
	req := &personalizerv1.RankRequest{Actions: []*personalizerv1.Action{{Id: "a"}, {Id: "b"}}}
	for range 4 {
		if _, err := srv.Rank(ctx, req); err != nil {
			t.Fatalf("Rank with a full buffer: %v", err)
		}
	}
	if _, err := srv.Reward(ctx, &personalizerv1.RewardRequest{EventId: "e", Value: 1}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Reward with a full buffer: %v, want ResourceExhausted", err)
	}
	if _, err := srv.Activate(ctx, &personalizerv1.ActivateRequest{EventId: "e"}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Activate with a full buffer: %v, want ResourceExhausted", err)
	}
	if st := pub.Stats(); st != (PublisherStats{Buffered: 2, Capacity: 2, Refused: 4}) {
		t.Errorf("stats %+v, want 2 buffered, 4 refused", st)
	}
	if n := strings.Count(logs.String(), "event buffer full"); n != 1 {
		t.Errorf("%d overflow warnings, want 1:\n%s", n, logs.String())
	}
}

// TestTraceContext checks that a record written during a traced call
// carries the call's W3C trace context, and an untraced one none.
func TestTraceContext(t *testing.T) {
	t.Parallel()
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	pub := NewPublisher(mem, 10, slog.New(slog.DiscardHandler))
	srv := New(Config{Loop: "test"}, pub, slog.New(slog.DiscardHandler), func() time.Time { return testNow })
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	traced := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	req := &personalizerv1.RankRequest{Actions: []*personalizerv1.Action{{Id: "a"}}}
	for _, ctx := range []context.Context{traced, context.Background()} {
		if _, err := srv.Rank(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run flushes what is buffered and returns
	if err := pub.Run(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	recs := mem.Records(eventlog.EventsTopic, 0)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if got := string(recs[0].Header(eventlog.TraceparentHeader)); got != want {
		t.Errorf("traced rank record: traceparent %q, want %q", got, want)
	}
	if got := recs[1].Header(eventlog.TraceparentHeader); got != nil {
		t.Errorf("untraced rank record: traceparent %q, want none", got)
	}
}
