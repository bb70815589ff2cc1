package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
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
	pub := NewPublisher(eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1}), BufferLimits{Records: 2, Bytes: 1 << 30}, 0, log)
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
	st := pub.Stats()
	if st.Buffered != 2 || st.BufferedBytes <= 0 || st.Refused != 4 || st.Limits != (BufferLimits{Records: 2, Bytes: 1 << 30}) {
		t.Errorf("stats %+v, want 2 buffered, 4 refused", st)
	}
	if n := strings.Count(logs.String(), "event buffer full"); n != 1 {
		t.Errorf("%d overflow warnings, want 1:\n%s", n, logs.String())
	}
	ctx, cancel := context.WithCancel(ctx)
	cancel() // Run flushes what is buffered and returns
	if err := pub.Run(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if st := pub.Stats(); st.Written != 2 || st.Buffered != 0 || st.BufferedBytes != 0 || st.Lost != 0 {
		t.Errorf("after the flush: stats %+v, want 2 written, nothing buffered", st)
	}
}

// record is an events record of exactly size bytes ([eventlog.Record.Size]).
func record(key string, size int) eventlog.Record {
	hs := []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}
	return eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(key), Value: make([]byte, size-len(key)-len("type")-len("rank")), Headers: hs}
}

// TestBufferBytes checks the buffer's byte limit: a record that would
// pass it is refused, whatever the record count, and written records
// give their bytes back.
func TestBufferBytes(t *testing.T) {
	t.Parallel()
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	pub := NewPublisher(mem, BufferLimits{Records: 100, Bytes: 250}, 0, slog.New(slog.DiscardHandler))
	for i, want := range []error{nil, nil, errBufferFull, errBufferFull} {
		size := 100
		if i == 3 {
			size = 51 // 200 buffered + 51 > 250
		}
		if err := pub.Publish(record(fmt.Sprint("k", i), size)); err != want {
			t.Errorf("record %d: Publish = %v, want %v", i, err, want)
		}
	}
	if st := pub.Stats(); st.Buffered != 2 || st.BufferedBytes != 200 || st.Refused != 2 {
		t.Errorf("stats %+v, want 2 records and 200 bytes buffered, 2 refused", st)
	}
	if err := pub.Publish(record("small", 50)); err != nil {
		t.Errorf("a record within the limit: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := pub.Run(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if st := pub.Stats(); st.Written != 3 || st.BufferedBytes != 0 {
		t.Errorf("after the flush: stats %+v, want 3 written, 0 bytes buffered", st)
	}
	if err := pub.Publish(record("again", 250)); err != nil {
		t.Errorf("after the flush, a record of the whole limit: %v", err)
	}
}

// TestPublisherRejected writes records the log refuses among ordinary
// ones: the ordinary ones are written in order, a refused one is
// dead-lettered as a reference, one whose dead letter is refused too is
// dropped, and nothing is retried forever.
func TestPublisherRejected(t *testing.T) {
	t.Parallel()
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1, eventlog.DeadLetterTopic: 1})
	mem.MaxRecordBytes = 300
	var logs bytes.Buffer
	pub := NewPublisher(mem, BufferLimits{Records: 100, Bytes: 1 << 20}, 300, slog.New(slog.NewTextHandler(&logs, nil)))
	huge := record("huge-headers", 50)
	huge.Headers = append(huge.Headers, eventlog.Header{Key: "x", Value: make([]byte, 400)})
	for _, rec := range []eventlog.Record{record("a", 50), record("big", 500), record("b", 50), huge, record("c", 50)} {
		if err := pub.Publish(rec); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := pub.Run(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range mem.Records(eventlog.EventsTopic, 0) {
		keys = append(keys, string(r.Key))
	}
	if !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Errorf("written %q, want a, b, c", keys)
	}
	letters := mem.Records(eventlog.DeadLetterTopic, 0)
	if len(letters) != 1 || string(letters[0].Key) != "big" || len(letters[0].Value) != 0 ||
		string(letters[0].Header(eventlog.DeadLetterSizeHeader)) != "489" || letters[0].Type() != eventlog.TypeRank ||
		!strings.Contains(string(letters[0].Header(eventlog.DeadLetterErrorHeader)), "record too large") {
		t.Errorf("dead letters %+v, want one reference to big", letters)
	}
	if st := pub.Stats(); st.Written != 3 || st.DeadLettered != 1 || st.Dropped != 1 || st.WriteErrors != 0 || st.Failing || st.BufferedBytes != 0 {
		t.Errorf("stats %+v, want 3 written, 1 dead-lettered, 1 dropped", st)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 3 {
		t.Errorf("%d ERROR lines, want 3 (two refused, one dropped):\n%s", n, logs.String())
	}
}

// TestTraceContext checks that a record written during a traced call
// carries the call's W3C trace context, and an untraced one none.
func TestTraceContext(t *testing.T) {
	t.Parallel()
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	pub := NewPublisher(mem, BufferLimits{Records: 10, Bytes: 1 << 30}, 0, slog.New(slog.DiscardHandler))
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
