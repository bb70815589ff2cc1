package kafkalog_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

const partitions = kafkalog.DefaultEventsPartitions

func TestWriteReadRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, "")

	// Times are stored in milliseconds.
	t0 := time.UnixMilli(1_700_000_000_123)
	var recs []eventlog.Record
	for i := range 200 {
		recs = append(recs, eventlog.Record{
			Topic:   eventlog.EventsTopic,
			Key:     fmt.Appendf(nil, "loop/event-%d", i%50),
			Value:   fmt.Appendf(nil, "value-%d", i),
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}, {Key: "i", Value: fmt.Appendf(nil, "%d", i)}},
			Time:    t0.Add(time.Duration(i) * time.Millisecond),
		})
	}
	keyless := []struct {
		name      string
		partition int
	}{
		{"partition 0", 0},
		{"partition 1", 1},
		{"partition 3", 3},
	}
	for _, tt := range keyless {
		recs = append(recs, eventlog.Record{
			Topic:     eventlog.EventsTopic,
			Partition: tt.partition,
			Value:     []byte("tick " + tt.name),
			Headers:   []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeTick)}},
			// Zero: the writer sends the current time.
		})
	}
	before := time.Now().Truncate(time.Millisecond)
	if err := w.Write(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	after := time.Now()

	r, err := kafkalog.NewTopicReader(ctx, b.Addrs(), eventlog.EventsTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := readN(t, ctx, r, len(recs))
	byValue := map[string]eventlog.Record{}
	for _, g := range got {
		byValue[string(g.Value)] = g
	}
	if len(byValue) != len(recs) {
		t.Fatalf("got %d distinct records, want %d", len(byValue), len(recs))
	}

	t.Run("keyed", func(t *testing.T) {
		keyPartition := map[string]int{}
		hash := &kafka.Hash{}
		for _, want := range recs[:200] {
			g := byValue[string(want.Value)]
			if g.Topic != eventlog.EventsTopic || !bytes.Equal(g.Key, want.Key) || !g.Time.Equal(want.Time) {
				t.Errorf("record %s: got topic %q key %q time %v, want %q %q %v", want.Value, g.Topic, g.Key, g.Time, eventlog.EventsTopic, want.Key, want.Time)
			}
			if !slices.EqualFunc(g.Headers, want.Headers, func(a, b eventlog.Header) bool { return a.Key == b.Key && bytes.Equal(a.Value, b.Value) }) {
				t.Errorf("record %s: headers %v, want %v", want.Value, g.Headers, want.Headers)
			}
			if p, ok := keyPartition[string(g.Key)]; ok && p != g.Partition {
				t.Errorf("key %s in partitions %d and %d", g.Key, p, g.Partition)
			}
			keyPartition[string(g.Key)] = g.Partition
			if p := hash.Balance(kafka.Message{Key: g.Key}, 0, 1, 2, 3); p != g.Partition {
				t.Errorf("key %s in partition %d, kafka.Hash says %d", g.Key, g.Partition, p)
			}
		}
		used := map[int]bool{}
		for _, p := range keyPartition {
			used[p] = true
		}
		if len(used) != partitions {
			t.Errorf("50 keys used %d partitions, want %d", len(used), partitions)
		}
	})
	for _, tt := range keyless {
		t.Run("keyless "+tt.name, func(t *testing.T) {
			g := byValue["tick "+tt.name]
			if g.Partition != tt.partition || g.Key != nil || g.Type() != eventlog.TypeTick {
				t.Errorf("got partition %d key %q type %q, want %d, nil, %s", g.Partition, g.Key, g.Type(), tt.partition, eventlog.TypeTick)
			}
			if g.Time.Before(before) || g.Time.After(after) {
				t.Errorf("zero time came back as %v, want the write time in [%v, %v]", g.Time, before, after)
			}
		})
	}
	t.Run("offset order", func(t *testing.T) {
		last := map[int]int64{}
		for _, g := range got {
			if prev, ok := last[g.Partition]; ok && g.Offset != prev+1 {
				t.Errorf("partition %d: offset %d after %d", g.Partition, g.Offset, prev)
			}
			last[g.Partition] = g.Offset
		}
	})
}

func TestWriteRejects(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	tests := []struct {
		name string
		rec  eventlog.Record
	}{
		{"negative partition", eventlog.Record{Partition: -1, Value: []byte("x")}},
		{"other topic", eventlog.Record{Topic: eventlog.JoinedTopic, Key: []byte("k")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := w.Write(ctx, tt.rec); err == nil {
				t.Error("Write succeeded, want error")
			}
		})
	}
}

// TestWriteIsolatesRefusedRecords writes ordinary records mixed with ones
// the broker refuses (over the topic's max.message.bytes) and ones over the
// writer's own limit: Write reports exactly those, and stores every other
// record once, in order.
func TestWriteIsolatesRefusedRecords(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	const topic = "small"
	if err := kafkalog.EnsureTopics(ctx, b.Addrs(), kafkalog.TopicSpec{Name: topic, Partitions: 2, Config: map[string]string{"max.message.bytes": "4096"}}); err != nil {
		t.Fatal(err)
	}
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: b.Addrs(), Topic: topic, MaxRecordBytes: 100_000})
	t.Cleanup(func() { w.Close() })
	var recs []eventlog.Record
	want := map[int][]string{}
	wantRejected := map[int]error{}
	for i := range 40 {
		p := i % 2
		v := fmt.Appendf(nil, "%d", i)
		switch i {
		case 7, 8, 30: // over the broker's limit, under the writer's
			v = append(v, make([]byte, 10_000)...)
			wantRejected[i] = kafka.MessageSizeTooLarge
		case 21: // over the writer's limit: never sent
			v = append(v, make([]byte, 200_000)...)
			wantRejected[i] = eventlog.ErrTooLarge
		default:
			want[p] = append(want[p], string(v))
		}
		recs = append(recs, eventlog.Record{Partition: p, Value: v})
	}
	err := w.Write(ctx, recs...)
	var rej *eventlog.RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("Write = %v, want a RejectedError", err)
	}
	var got []int
	for _, r := range rej.Rejected {
		got = append(got, r.Index)
		if !errors.Is(r.Err, wantRejected[r.Index]) {
			t.Errorf("record %d rejected with %v, want %v", r.Index, r.Err, wantRejected[r.Index])
		}
	}
	if !slices.Equal(got, []int{7, 8, 21, 30}) {
		t.Errorf("rejected %v, want [7 8 21 30]", got)
	}
	r, err := kafkalog.NewTopicReader(ctx, b.Addrs(), topic, map[int]int64{0: 0, 1: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stored := map[int][]string{}
	for _, rec := range readN(t, ctx, r, len(want[0])+len(want[1])) {
		stored[rec.Partition] = append(stored[rec.Partition], string(rec.Value))
	}
	for p := range 2 {
		if !slices.Equal(stored[p], want[p]) {
			t.Errorf("partition %d holds %q, want %q", p, stored[p], want[p])
		}
	}
	if ends, err := kafkalog.EndOffsets(ctx, b.Addrs(), topic); err != nil || ends[0]+ends[1] != int64(len(want[0])+len(want[1])) {
		t.Errorf("end offsets %v (%v), want %d records in all", ends, err, len(want[0])+len(want[1]))
	}
}

func TestTopicReaderStartOffsets(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 10, 0)

	tests := []struct {
		name  string
		start map[int]int64
	}{
		{"nil start reads everything", nil},
		{"some partitions", map[int]int64{0: 3, 2: 7}},
		{"all partitions", map[int]int64{0: 10, 1: 9, 2: 0, 3: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := kafkalog.NewTopicReader(ctx, b.Addrs(), eventlog.EventsTopic, tt.start)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			want := map[partOff]bool{}
			for p := range partitions {
				for off := tt.start[p]; off < 10; off++ {
					want[partOff{p, off}] = true
				}
			}
			for _, g := range readN(t, ctx, r, len(want)) {
				k := partOff{g.Partition, g.Offset}
				if !want[k] {
					t.Errorf("unexpected or repeated record %d/%d", k.p, k.off)
				}
				if v := fmt.Sprintf("%d/%d", k.p, k.off); string(g.Value) != v {
					t.Errorf("record %d/%d has value %q", k.p, k.off, g.Value)
				}
				delete(want, k)
			}
		})
	}

	t.Run("unknown partition", func(t *testing.T) {
		if _, err := kafkalog.NewTopicReader(ctx, b.Addrs(), eventlog.EventsTopic, map[int]int64{partitions: 0}); err == nil {
			t.Error("NewTopicReader succeeded, want error")
		}
	})
	t.Run("unknown topic", func(t *testing.T) {
		if _, err := kafkalog.NewTopicReader(ctx, b.Addrs(), "no.such.topic", nil); err == nil {
			t.Error("NewTopicReader succeeded, want error")
		}
	})
}

// TestTopicReaderNothingExtra checks that a reader returns nothing beyond
// the expected records: after them, the next record of each partition is a
// marker written afterwards.
func TestTopicReaderNothingExtra(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 5, 0)
	r, err := kafkalog.NewTopicReader(ctx, b.Addrs(), eventlog.EventsTopic, map[int]int64{1: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	readN(t, ctx, r, 4*5-2)
	writeKeyless(t, ctx, w, partitions, 1, 1000)
	for _, g := range readN(t, ctx, r, partitions) {
		if want := fmt.Sprintf("%d/1000", g.Partition); string(g.Value) != want {
			t.Errorf("got %q, want marker %q", g.Value, want)
		}
	}
	if err := r.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := r.Fetch(ctx); err == nil {
		t.Error("Fetch after Close succeeded")
	}
}

func TestGroupResumesAtCommittedOffsets(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 10, 0)

	stopAt := map[int]int64{0: 5, 1: 0, 2: 10, 3: 3}
	first := newTracker()
	stop := member(t, ctx, b, "resume", first.claimFunc("first", stopAt))
	first.waitFor(t, ctx, "first member commits", func() bool {
		for p, off := range stopAt {
			if first.committed[p] != off {
				return false
			}
		}
		return true
	})
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume returned %v, want context.Canceled", err)
	}
	if n := first.seenBy["first"]; n != 18 {
		t.Errorf("first member saw %d records, want 18", n)
	}

	second := newTracker()
	stop = member(t, ctx, b, "resume", second.claimFunc("second", nil))
	second.waitFor(t, ctx, "second member reaches the end", func() bool {
		for p, from := range stopAt {
			// A partition already committed to its end sees no
			// record, so it commits nothing.
			if from < 10 && second.committed[p] != 10 {
				return false
			}
		}
		return true
	})
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume returned %v, want context.Canceled", err)
	}
	if n := second.seenBy["second"]; n != 40-18 {
		t.Errorf("second member saw %d records, want %d", n, 40-18)
	}
	for p, from := range stopAt {
		for off := range int64(10) {
			want := 0
			if off >= from {
				want = 1
			}
			if got := second.seen[partOff{p, off}]; got != want {
				t.Errorf("second member saw %d/%d %d times, want %d", p, off, got, want)
			}
		}
	}
}

// TestGroupTwoMembers runs member a alone, then with b (they split the
// partitions), then alone again after b leaves, writing records in each
// phase. Every record is seen, and a record is seen twice only when its
// commit failed because the generation ended between its fetch and commit.
func TestGroupTwoMembers(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	tr := newTracker()
	holds := func(m string, n int) func() bool {
		return func() bool {
			held := 0
			for _, h := range tr.live {
				if h == m {
					held++
				}
			}
			return held == n
		}
	}

	writeKeyless(t, ctx, w, partitions, 10, 0)
	stopA := member(t, ctx, b, "split", tr.claimFunc("a", nil))
	tr.waitFor(t, ctx, "a alone consumes phase 1", tr.allCommitted(partitions, 10))

	start := time.Now()
	stopB := member(t, ctx, b, "split", tr.claimFunc("b", nil))
	tr.waitFor(t, ctx, "a and b split the partitions", func() bool { return holds("a", 2)() && holds("b", 2)() })
	t.Logf("join rebalance took %v", time.Since(start))
	writeKeyless(t, ctx, w, partitions, 10, 10)
	tr.waitFor(t, ctx, "a and b consume phase 2", tr.allCommitted(partitions, 20))

	start = time.Now()
	if err := stopB(); !errors.Is(err, context.Canceled) {
		t.Fatalf("b: Consume returned %v, want context.Canceled", err)
	}
	tr.waitFor(t, ctx, "a takes over all partitions", holds("a", partitions))
	t.Logf("leave rebalance took %v", time.Since(start))
	writeKeyless(t, ctx, w, partitions, 10, 20)
	tr.waitFor(t, ctx, "a consumes phase 3", tr.allCommitted(partitions, 30))
	if err := stopA(); !errors.Is(err, context.Canceled) {
		t.Fatalf("a: Consume returned %v, want context.Canceled", err)
	}

	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, err := range tr.errs {
		t.Error(err)
	}
	total := 0
	for p := range partitions {
		for off := range int64(30) {
			n := tr.seen[partOff{p, off}]
			if n == 0 {
				t.Errorf("record %d/%d never seen", p, off)
			}
			total += n
		}
	}
	if len(tr.seen) != partitions*30 {
		t.Errorf("saw %d distinct records, want %d", len(tr.seen), partitions*30)
	}
	if total != partitions*30+tr.failedCommits {
		t.Errorf("saw %d records with %d failed commits, want %d + failed commits", total, tr.failedCommits, partitions*30)
	}
	if tr.seenBy["b"] == 0 {
		t.Error("b saw no records")
	}
	t.Logf("seen a=%d b=%d, failed commits %d, claims started %v", tr.seenBy["a"], tr.seenBy["b"], tr.failedCommits, tr.starts)
}

func TestGroupClaimErrorStopsConsume(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 1, 0)
	boom := errors.New("boom")
	g := kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: b.Addrs(), GroupID: "fail", Topic: eventlog.EventsTopic}, testLog())
	err := g.Consume(ctx, func(ctx context.Context, c eventlog.Claim) error {
		if c.Partition() == 2 {
			if _, err := c.Fetch(ctx); err != nil {
				return err
			}
			return boom
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Consume returned %v, want boom", err)
	}
}

// TestBrokerRestart checks that a broker restarted on the same data dir
// keeps topics, records and committed group offsets.
func TestBrokerRestart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()

	b1, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: dir, EventsPartitions: partitions, JoinedPartitions: 2}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: b1.Addrs()})
	var recs []eventlog.Record
	for i := range 40 {
		recs = append(recs, eventlog.Record{Topic: eventlog.EventsTopic, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)})
	}
	recs = append(recs, eventlog.Record{Topic: eventlog.JoinedTopic, Partition: 1, Value: []byte("joined")})
	if err := w.Write(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Commit the first two records of every partition.
	stopAt := map[int]int64{0: 2, 1: 2, 2: 2, 3: 2}
	first := newTracker()
	stop := member(t, ctx, b1, "restart", first.claimFunc("first", stopAt))
	first.waitFor(t, ctx, "commits before restart", first.allCommitted(partitions, 2))
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume returned %v", err)
	}
	b1.Close()

	// The restart asks for other partition counts: existing topics keep theirs.
	b2, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: dir, EventsPartitions: 8, JoinedPartitions: 1}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Close)

	t.Run("records", func(t *testing.T) {
		r, err := kafkalog.NewTopicReader(ctx, b2.Addrs(), eventlog.EventsTopic, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		seen := map[string]bool{}
		for _, g := range readN(t, ctx, r, 40) {
			if g.Partition >= partitions {
				t.Errorf("record in partition %d of a %d-partition topic", g.Partition, partitions)
			}
			seen[string(g.Value)] = true
		}
		if len(seen) != 40 {
			t.Errorf("read %d distinct records, want 40", len(seen))
		}
	})
	t.Run("joined topic", func(t *testing.T) {
		r, err := kafkalog.NewTopicReader(ctx, b2.Addrs(), eventlog.JoinedTopic, map[int]int64{1: 0})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if g := readN(t, ctx, r, 1)[0]; g.Partition != 1 || string(g.Value) != "joined" {
			t.Errorf("got %d %q, want partition 1 %q", g.Partition, g.Value, "joined")
		}
	})
	t.Run("committed offsets", func(t *testing.T) {
		second := newTracker()
		stop := member(t, ctx, b2, "restart", second.claimFunc("second", nil))
		// Each partition resumes at 2: the first record a claim sees
		// is offset 2, and it sees every later record exactly once.
		second.waitFor(t, ctx, "second member reaches the end", func() bool {
			return len(second.seen) == 40-2*partitions
		})
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Consume returned %v", err)
		}
		for k, n := range second.seen {
			if k.off < 2 || n != 1 {
				t.Errorf("saw %d/%d %d times", k.p, k.off, n)
			}
		}
	})
}

// TestBrokerFixedAddr starts the broker on a fixed host name and port, as
// `personalizer dev` does with 127.0.0.1:9092, and checks that clients reach
// it through the address it advertises.
func TestBrokerFixedAddr(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// Borrow a free port; another process could take it before the
	// broker does, which would fail the test rather than pass it wrongly.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	b, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: fmt.Sprintf("localhost:%d", port), DataDir: t.TempDir()}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if got, want := b.Addrs(), []string{fmt.Sprintf("127.0.0.1:%d", port)}; !slices.Equal(got, want) {
		t.Errorf("Addrs() = %v, want %v", got, want)
	}
	// Bootstrap through the host name; kafka-go then dials the
	// advertised address for produce and fetch.
	brokers := []string{fmt.Sprintf("localhost:%d", port)}
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: brokers, Topic: eventlog.JoinedTopic})
	defer w.Close()
	if err := w.Write(ctx, eventlog.Record{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	r, err := kafkalog.NewTopicReader(ctx, brokers, eventlog.JoinedTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if g := readN(t, ctx, r, 1)[0]; string(g.Value) != "v" {
		t.Errorf("read %q, want %q", g.Value, "v")
	}
}

func TestBrokerConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  kafkalog.BrokerConfig
		ok   bool
	}{
		{"defaults", kafkalog.BrokerConfig{DataDir: "d"}, true},
		{"fixed address", kafkalog.BrokerConfig{Addr: "127.0.0.1:9092", DataDir: "d"}, true},
		{"no data dir", kafkalog.BrokerConfig{Addr: "127.0.0.1:0"}, false},
		{"unspecified host", kafkalog.BrokerConfig{Addr: "0.0.0.0:9092", DataDir: "d"}, false},
		{"empty host", kafkalog.BrokerConfig{Addr: ":9092", DataDir: "d"}, false},
		{"no port", kafkalog.BrokerConfig{Addr: "127.0.0.1", DataDir: "d"}, false},
		{"negative partitions", kafkalog.BrokerConfig{DataDir: "d", EventsPartitions: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestBrokerConfigFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want kafkalog.BrokerConfig
	}{
		{"defaults", nil, kafkalog.BrokerConfig{Addr: "127.0.0.1:9092", EventsPartitions: 4, MinSessionTimeout: 6 * time.Second}},
		{"set", []string{"-x.broker-addr=localhost:19092", "-x.events-partitions=8", "-x.joined-partitions=2", "-x.min-session-timeout=1s"},
			kafkalog.BrokerConfig{Addr: "localhost:19092", EventsPartitions: 8, JoinedPartitions: 2, MinSessionTimeout: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got kafkalog.BrokerConfig
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			got.RegisterFlags(fs, "x.")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if got.Addr != tt.want.Addr || got.EventsPartitions != tt.want.EventsPartitions ||
				got.JoinedPartitions != tt.want.JoinedPartitions || got.MinSessionTimeout != tt.want.MinSessionTimeout {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestGroupCommitMetadata checks that what a claim commits, offset and
// metadata, is what the next claim of the partition starts from, also in
// another member after the first left, and that a partition nobody
// committed starts at -1 with no metadata.
func TestGroupCommitMetadata(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 3, 0)

	type start struct {
		off  int64
		meta string
	}
	run := func(commit bool) map[int]start {
		var mu sync.Mutex
		starts := map[int]start{}
		done := make(chan struct{})
		var once sync.Once
		g := kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: b.Addrs(), GroupID: "meta", Topic: eventlog.EventsTopic}, testLog())
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			errc <- g.Consume(cctx, func(ctx context.Context, c eventlog.Claim) error {
				off, meta := c.Start()
				if commit {
					if err := c.Commit(ctx, int64(c.Partition()+1), fmt.Sprintf("meta of %d", c.Partition())); err != nil {
						return err
					}
				}
				mu.Lock()
				starts[c.Partition()] = start{off, meta}
				if len(starts) == partitions {
					once.Do(func() { close(done) })
				}
				mu.Unlock()
				<-ctx.Done()
				return ctx.Err()
			})
		}()
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatal("claims did not start")
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Consume returned %v", err)
		}
		return starts
	}
	for p, s := range run(true) {
		if s.off != -1 || s.meta != "" {
			t.Errorf("fresh partition %d started at %d %q, want -1 and no metadata", p, s.off, s.meta)
		}
	}
	for p, s := range run(false) {
		if want := fmt.Sprintf("meta of %d", p); s.off != int64(p+1) || s.meta != want {
			t.Errorf("partition %d started at %d %q, want %d %q", p, s.off, s.meta, p+1, want)
		}
	}
}

// TestWriterByPartitionAndCompression checks that ByPartition puts keyed
// records in Partition (modulo the partition count), that compressed
// batches read back intact, and that EndOffsets counts them.
func TestWriterByPartitionAndCompression(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	for _, c := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		if err := (kafkalog.WriterConfig{Compression: c}).Validate(); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
	if err := (kafkalog.WriterConfig{Compression: "brotli"}).Validate(); err == nil {
		t.Error("brotli accepted")
	}
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: b.Addrs(), Topic: eventlog.JoinedTopic, ByPartition: true, Compression: "zstd"})
	defer w.Close()
	var recs []eventlog.Record
	for i := range 40 {
		recs = append(recs, eventlog.Record{Key: fmt.Appendf(nil, "k%d", i), Partition: i % 6, Value: bytes.Repeat(fmt.Appendf(nil, "v%d ", i), 100)})
	}
	if err := w.Write(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	ends, err := kafkalog.EndOffsets(ctx, b.Addrs(), eventlog.JoinedTopic)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range ends {
		total += int(n)
	}
	if len(ends) != partitions || total != 40 {
		t.Fatalf("end offsets %v, want %d partitions and 40 records", ends, partitions)
	}
	r, err := kafkalog.NewTopicReader(ctx, b.Addrs(), eventlog.JoinedTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, g := range readN(t, ctx, r, 40) {
		var i int
		fmt.Sscanf(string(g.Key), "k%d", &i)
		if g.Partition != (i%6)%partitions || !bytes.Equal(g.Value, recs[i].Value) {
			t.Errorf("record %s in partition %d (%d bytes), want partition %d, %d bytes", g.Key, g.Partition, len(g.Value), (i%6)%partitions, len(recs[i].Value))
		}
	}
	// The broker made the joiner's other topics too.
	for _, topic := range []string{eventlog.AuditTopic, eventlog.DeadLetterTopic} {
		if n, err := kafkalog.PartitionCount(ctx, b.Addrs(), topic); err != nil || n != partitions {
			t.Errorf("%s has %d partitions (%v), want %d", topic, n, err, partitions)
		}
	}
}

// TestBrokerWrapConn checks that WrapConn sees every connection clients
// make, so tests can inject faults into them.
func TestBrokerWrapConn(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	var conns atomic.Int32
	b, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir(),
		WrapConn: func(c net.Conn) net.Conn { conns.Add(1); return c }}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	before := conns.Load()
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, 1, 1, 0)
	if conns.Load() <= before || before == 0 {
		t.Errorf("wrapped %d connections before the write and %d after", before, conns.Load())
	}
}

// TestGroupClaimReread checks that a claim reads its partition again from
// any offset, forward and back, whatever it has fetched.
func TestGroupClaimReread(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 10, 0)
	g := kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: b.Addrs(), GroupID: "reread", Topic: eventlog.EventsTopic}, testLog())
	done := errors.New("done")
	err := g.Consume(ctx, func(ctx context.Context, c eventlog.Claim) error {
		if c.Partition() != 1 {
			<-ctx.Done()
			return ctx.Err()
		}
		for range 10 {
			if _, err := c.Fetch(ctx); err != nil {
				return err
			}
		}
		for _, from := range []int64{6, 2, 9} {
			r, err := c.(eventlog.Rereader).Reread(ctx, from)
			if err != nil {
				return err
			}
			got := readN(t, ctx, r, int(10-from))
			r.Close()
			for i, rec := range got {
				if want := fmt.Sprintf("1/%d", from+int64(i)); rec.Offset != from+int64(i) || rec.Partition != 1 || string(rec.Value) != want {
					t.Errorf("reread from %d: record %d is %q at %d/%d, want %q at 1/%d", from, i, rec.Value, rec.Partition, rec.Offset, want, from+int64(i))
				}
			}
		}
		return done
	})
	if !errors.Is(err, done) {
		t.Fatalf("Consume returned %v", err)
	}
}
