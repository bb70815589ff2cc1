package joiner

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// memSource is an eventlog.Mem consumer group as a [Source].
type memSource struct{ m *eventlog.Mem }

func (s memSource) Consume(ctx context.Context, fn eventlog.ClaimFunc) error {
	return s.m.Consume(ctx, "joiner", eventlog.EventsTopic, fn)
}

func newMem() *eventlog.Mem {
	return eventlog.NewMem(map[string]int{eventlog.EventsTopic: 2, eventlog.JoinedTopic: 2, eventlog.AuditTopic: 2, eventlog.DeadLetterTopic: 2})
}

func record(typ, key string, m proto.Message, at time.Time) eventlog.Record {
	v, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(key), Value: v, Time: at,
		Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(typ)}}}
}

// startJoiner runs a joiner over m until the returned stop is called.
// Ticks carry the fixed time tickAt, so that only the test's records move
// time.
func startJoiner(t *testing.T, m *eventlog.Mem, tickAt time.Time) (*Joiner, func()) {
	t.Helper()
	cfg := Config{Rules: testRules(), TickInterval: 10 * time.Millisecond, CommitInterval: 0}
	j := New(cfg, slog.New(slog.DiscardHandler), memSource{m}, m.Direct(), m, func() time.Time { return tickAt })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	return j, stop
}

func waitFor(t *testing.T, j *Joiner, what string, cond func(Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := j.Wait(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v (counters %+v)", what, err, j.Counters())
	}
}

// TestJoinerShell runs the joiner's shell over the in-memory log: joined
// lines, audits and dead letters land in the partition of their input,
// checkpoints are committed as metadata, and a second joiner resuming from
// them writes nothing twice.
func TestJoinerShell(t *testing.T) {
	t.Parallel()
	m := newMem()
	ctx := context.Background()
	var recs []eventlog.Record
	const events = 40
	for i := range events {
		key := fmt.Sprintf("l/e%d", i)
		at := t0.Add(time.Duration(i) * time.Millisecond)
		recs = append(recs,
			record(eventlog.TypeRank, key, rankEvent(key, 0, false, online), at),
			record(eventlog.TypeReward, key, &eventsv1.RewardEvent{Loop: "l", EventId: key, Value: float32(i%4) / 4, Id: uint64(i + 1)}, at.Add(time.Second)))
	}
	recs = append(recs,
		record(eventlog.TypeReward, "l/none", &eventsv1.RewardEvent{Value: 1}, t0), // dangling
		eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte("l/bad"), Value: []byte{0xff}, // undecodable
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}, Time: t0},
		eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte("l/odd"), Value: []byte("x"), // unknown type
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte("gossip")}}, Time: t0})
	if err := m.Write(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	// Ticks far past every window close them all.
	j, stop := startJoiner(t, m, t0.Add(time.Hour))
	waitFor(t, j, "every event", func(s Stats) bool { return s.Emitted == events && s.Dangling == 1 && s.Undecodable == 2 })
	// Then a rank that stays pending (stamped after the ticks) and one that
	// closes at once (stamped before them), in the same partition: the
	// checkpoint starts at the pending one, after the closed one.
	pending, closed := partitionOf(m, "l/pending"), ""
	for i := 0; closed == ""; i++ {
		if k := fmt.Sprintf("l/closed%d", i); partitionOf(m, k) == pending {
			closed = k
		}
	}
	if err := m.Write(ctx,
		record(eventlog.TypeRank, "l/pending", rankEvent("l/pending", 0, false, online), t0.Add(2*time.Hour)),
		record(eventlog.TypeRank, closed, rankEvent(closed, 0, false, online), t0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, j, "the closed event", func(s Stats) bool { return s.Emitted == events+1 })
	if n := j.Pending(); n != 1 {
		t.Errorf("Pending = %d with one rank in an open window, want 1", n)
	}
	for p := range 2 {
		last := int64(len(m.Records(eventlog.EventsTopic, p)))
		waitFor(t, j, "commit", func(Stats) bool {
			next, meta := m.Committed("joiner", eventlog.EventsTopic, p)
			cp, err := ParseCheckpoint(meta)
			return err == nil && next == cp.Offset && cp.Next >= last
		})
	}
	next, _ := m.Committed("joiner", eventlog.EventsTopic, pending)
	if r := m.Records(eventlog.EventsTopic, pending)[next]; string(r.Key) != "l/pending" {
		t.Errorf("partition %d committed at %d (%s), want the pending rank", pending, next, r.Key)
	}
	stop()
	if c := j.Counters(); c.Emitted != events+1 || c.Learnable != events+1 || c.DefaultRewards != 1 || c.Late != 0 || c.Suppressed != 0 {
		t.Errorf("counters %+v", c)
	}
	if n := j.Pending(); n != 0 {
		t.Errorf("Pending = %d after the joiner stopped, want 0: it holds no partition", n)
	}

	joined := map[string]int{}
	for p := range 2 {
		in := map[string]bool{}
		for _, r := range m.Records(eventlog.EventsTopic, p) {
			in[string(r.Key)] = true
		}
		for _, r := range m.Records(eventlog.JoinedTopic, p) {
			joined[string(r.Key)]++
			if !in[string(r.Key)] || r.Type() != eventlog.TypeJoined {
				t.Errorf("joined record %s (type %q) in partition %d, its input is elsewhere", r.Key, r.Type(), p)
			}
		}
		for _, r := range m.Records(eventlog.AuditTopic, p) {
			if string(r.Key) != "l/none" || !in["l/none"] {
				t.Errorf("audit %s in partition %d: %s", r.Key, p, r.Value)
			}
		}
		for _, r := range m.Records(eventlog.DeadLetterTopic, p) {
			off, _ := strconv.ParseInt(string(r.Header(eventlog.DeadLetterOffsetHeader)), 10, 64)
			src := m.Records(eventlog.EventsTopic, p)[off]
			if string(r.Header(eventlog.DeadLetterPartitionHeader)) != strconv.Itoa(p) || string(src.Value) != string(r.Value) ||
				r.Type() != src.Type() || len(r.Header(eventlog.DeadLetterErrorHeader)) == 0 {
				t.Errorf("dead letter %s in partition %d, headers %v, does not match input %d", r.Key, p, r.Headers, off)
			}
		}
	}
	if len(joined) != events+1 {
		t.Errorf("%d events joined, want %d", len(joined), events+1)
	}
	for k, n := range joined {
		if n != 1 {
			t.Errorf("%s joined %d times", k, n)
		}
	}

	// A second joiner resumes from the checkpoints: it replays the
	// pending rank and the closed one, suppresses the closed one, which
	// the first joiner wrote, and joins the pending one once its ticks
	// pass its window.
	j2, stop2 := startJoiner(t, m, t0.Add(3*time.Hour))
	waitFor(t, j2, "the pending event", func(s Stats) bool { return s.Emitted == 1 })
	stop2()
	if c := j2.Counters(); c.Emitted != 1 || c.Suppressed != 1 || c.Undecodable != 0 || c.Dangling != 0 {
		t.Errorf("resumed joiner counters %+v, want the pending event and one suppressed", c)
	}
	after := map[string]int{}
	for p := range 2 {
		for _, r := range m.Records(eventlog.JoinedTopic, p) {
			after[string(r.Key)]++
		}
	}
	if len(after) != events+2 || after[closed] != 1 || after["l/pending"] != 1 {
		t.Errorf("after the restart %d events joined (%s %d times, l/pending %d times), want %d, each once",
			len(after), closed, after[closed], after["l/pending"], events+2)
	}
}

// partitionOf returns the partition a key hashes to in m.
func partitionOf(m *eventlog.Mem, key string) int {
	probe := eventlog.NewMem(map[string]int{"probe": m.Partitions(eventlog.EventsTopic)})
	probe.Write(context.Background(), eventlog.Record{Topic: "probe", Key: []byte(key)})
	for p := range probe.Partitions("probe") {
		if len(probe.Records("probe", p)) > 0 {
			return p
		}
	}
	return -1
}
