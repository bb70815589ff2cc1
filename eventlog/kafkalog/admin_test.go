package kafkalog_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

// startOffsets returns the log start offset of every partition of topic.
func startOffsets(t testing.TB, ctx context.Context, brokers []string, topic string) map[int]int64 {
	t.Helper()
	n, err := kafkalog.PartitionCount(ctx, brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range n {
		req.Topics[topic] = append(req.Topics[topic], kafka.FirstOffsetOf(p))
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}).ListOffsets(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	starts := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatal(p.Error)
		}
		starts[p.Partition] = p.FirstOffset
	}
	return starts
}

// describeTopic returns the values of the named configs of topic, read
// with DescribeConfigs.
func describeTopic(t testing.TB, ctx context.Context, brokers []string, topic string, names ...string) map[string]string {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}).DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: names}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]string{}
	for _, r := range resp.Resources {
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		for _, e := range r.ConfigEntries {
			cfg[e.ConfigName] = e.ConfigValue
		}
	}
	return cfg
}

func TestLogTimes(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	if _, _, err := kafkalog.LogTimes(ctx, b.Addrs(), eventlog.EventsTopic, eventlog.JoinedTopic); !errors.Is(err, eventlog.ErrNoRecords) {
		t.Fatalf("LogTimes of empty topics: %v, want ErrNoRecords", err)
	}

	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: b.Addrs()})
	t.Cleanup(func() { w.Close() })
	// Partitions 2 and 3 of the events topic stay empty. Within a
	// partition times need not grow: the first and last records count,
	// not the smallest and largest times.
	recs := []eventlog.Record{
		{Topic: eventlog.EventsTopic, Partition: 0, Time: at(60)},
		{Topic: eventlog.EventsTopic, Partition: 0, Time: at(10)},
		{Topic: eventlog.EventsTopic, Partition: 0, Time: at(120)},
		{Topic: eventlog.EventsTopic, Partition: 1, Time: at(30)},
		{Topic: eventlog.EventsTopic, Partition: 1, Time: at(240)},
		{Topic: eventlog.JoinedTopic, Partition: 2, Time: at(5)},
		{Topic: eventlog.JoinedTopic, Partition: 2, Time: at(300)},
	}
	for i := range recs {
		recs[i].Value = []byte("v")
	}
	if err := w.Write(ctx, recs...); err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T, topics []string, first, last time.Time) {
		t.Helper()
		gotFirst, gotLast, err := kafkalog.LogTimes(ctx, b.Addrs(), topics...)
		if err != nil {
			t.Fatal(err)
		}
		if !gotFirst.Equal(first) || !gotLast.Equal(last) {
			t.Errorf("LogTimes(%v) = %v, %v, want %v, %v", topics, gotFirst, gotLast, first, last)
		}
	}
	tests := []struct {
		name        string
		topics      []string
		first, last time.Time
	}{
		{"events", []string{eventlog.EventsTopic}, at(30), at(240)},
		{"joined", []string{eventlog.JoinedTopic}, at(5), at(300)},
		{"both", []string{eventlog.EventsTopic, eventlog.JoinedTopic}, at(5), at(300)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { check(t, tt.topics, tt.first, tt.last) })
	}

	t.Run("after deleting records", func(t *testing.T) {
		// Partition 1 loses its first record; partition 0 starts at
		// its second, which is older than partition 1's second.
		if err := kafkalog.DeleteRecords(ctx, b.Addrs(), eventlog.EventsTopic, map[int]int64{0: 1, 1: 1}); err != nil {
			t.Fatal(err)
		}
		check(t, []string{eventlog.EventsTopic}, at(10), at(240))
		if err := kafkalog.DeleteRecords(ctx, b.Addrs(), eventlog.JoinedTopic, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := kafkalog.LogTimes(ctx, b.Addrs(), eventlog.JoinedTopic); !errors.Is(err, eventlog.ErrNoRecords) {
			t.Errorf("LogTimes after deleting every record: %v, want ErrNoRecords", err)
		}
		check(t, []string{eventlog.EventsTopic, eventlog.JoinedTopic}, at(10), at(240))
	})
	t.Run("unknown topic", func(t *testing.T) {
		if _, _, err := kafkalog.LogTimes(ctx, b.Addrs(), eventlog.EventsTopic, "no.such.topic"); err == nil {
			t.Error("LogTimes succeeded, want error")
		}
	})
}

func TestDeleteRecords(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 10, 0)

	steps := []struct {
		name    string
		before  map[int]int64
		wantErr error // nil: success; errAny: any error
		starts  map[int]int64
	}{
		{"some partitions", map[int]int64{0: 3, 2: 10}, nil, map[int]int64{0: 3, 1: 0, 2: 10, 3: 0}},
		{"empty map", map[int]int64{}, nil, map[int]int64{0: 3, 1: 0, 2: 10, 3: 0}},
		{"below the log start deletes nothing", map[int]int64{0: 1, 2: 10}, nil, map[int]int64{0: 3, 1: 0, 2: 10, 3: 0}},
		{"past the end; others still deleted", map[int]int64{1: 11, 3: 4}, kafka.OffsetOutOfRange, map[int]int64{0: 3, 1: 0, 2: 10, 3: 4}},
		{"negative offset", map[int]int64{1: -1}, errAny, map[int]int64{0: 3, 1: 0, 2: 10, 3: 4}},
		{"unknown partition", map[int]int64{partitions: 0}, kafka.UnknownTopicOrPartition, map[int]int64{0: 3, 1: 0, 2: 10, 3: 4}},
		{"nil map deletes everything", nil, nil, map[int]int64{0: 10, 1: 10, 2: 10, 3: 10}},
	}
	for _, s := range steps {
		// Steps build on each other, so they run in order and stop at
		// the first failure.
		err := kafkalog.DeleteRecords(ctx, b.Addrs(), eventlog.EventsTopic, s.before)
		switch {
		case s.wantErr == nil && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		case s.wantErr == errAny && err == nil:
			t.Fatalf("%s: succeeded, want an error", s.name)
		case s.wantErr != nil && s.wantErr != errAny && !errors.Is(err, s.wantErr):
			t.Fatalf("%s: %v, want %v", s.name, err, s.wantErr)
		}
		if got := startOffsets(t, ctx, b.Addrs(), eventlog.EventsTopic); !maps.Equal(got, s.starts) {
			t.Fatalf("%s: log start offsets %v, want %v", s.name, got, s.starts)
		}
	}
	if err := kafkalog.DeleteRecords(ctx, b.Addrs(), "no.such.topic", nil); err == nil {
		t.Error("DeleteRecords of an unknown topic succeeded")
	}
}

// errAny stands for any error in test tables.
var errAny = errors.New("any error")

func TestSetRetention(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	topic := eventlog.JoinedTopic

	// The embedded broker keeps records forever unless told otherwise.
	if got, err := kafkalog.Retention(ctx, b.Addrs(), topic); err != nil || got >= 0 {
		t.Fatalf("default retention %v, %v; want negative (forever)", got, err)
	}
	tests := []struct {
		name    string
		d       time.Duration
		wantMS  string // retention.ms read back with DescribeConfigs
		wantErr bool
	}{
		{"days", 30 * 24 * time.Hour, "2592000000", false},
		{"rounded down to ms", 90*time.Minute + 999*time.Microsecond, "5400000", false},
		{"forever", -1, "-1", false},
		{"any negative is forever", -time.Hour, "-1", false},
		{"zero", 0, "", true},
		{"under a millisecond", time.Microsecond, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Subtests share the topic, so they run in order.
			err := kafkalog.SetRetention(ctx, b.Addrs(), topic, tt.d)
			if tt.wantErr {
				if err == nil {
					t.Errorf("SetRetention(%v) succeeded, want an error", tt.d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := describeTopic(t, ctx, b.Addrs(), topic, "retention.ms")["retention.ms"]; got != tt.wantMS {
				t.Errorf("retention.ms %q, want %q", got, tt.wantMS)
			}
			got, err := kafkalog.Retention(ctx, b.Addrs(), topic)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.d.Truncate(time.Millisecond); tt.d < 0 && got >= 0 || tt.d >= 0 && got != want {
				t.Errorf("Retention() = %v after SetRetention(%v)", got, tt.d)
			}
		})
	}
	t.Run("unknown topic", func(t *testing.T) {
		if err := kafkalog.SetRetention(ctx, b.Addrs(), "no.such.topic", time.Hour); err == nil {
			t.Error("SetRetention of an unknown topic succeeded")
		}
	})

	// The broker enforces it: a batch older than the retention goes.
	t.Run("enforced", func(t *testing.T) {
		w := newWriter(t, b, eventlog.AuditTopic)
		now := time.Now().Truncate(time.Millisecond)
		for _, at := range []time.Time{now.Add(-2 * time.Hour), now} {
			if err := w.Write(ctx, eventlog.Record{Partition: 0, Value: []byte("v"), Time: at}); err != nil {
				t.Fatal(err)
			}
		}
		if err := kafkalog.SetRetention(ctx, b.Addrs(), eventlog.AuditTopic, time.Hour); err != nil {
			t.Fatal(err)
		}
		b.Cluster().ApplyRetention()
		if got := startOffsets(t, ctx, b.Addrs(), eventlog.AuditTopic)[0]; got != 1 {
			t.Errorf("log start %d after retention, want 1", got)
		}
		if first, _, err := kafkalog.LogTimes(ctx, b.Addrs(), eventlog.AuditTopic); err != nil || !first.Equal(now) {
			t.Errorf("LogTimes first = %v, %v; want %v", first, err, now)
		}
	})
}

// TestTopicReaderBelowLogStart starts a topic reader below the log start of
// partitions whose first records were deleted: it continues from the log
// start.
func TestTopicReaderBelowLogStart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 10, 0)
	if err := kafkalog.DeleteRecords(ctx, b.Addrs(), eventlog.EventsTopic, map[int]int64{0: 5, 1: 10, 2: 3}); err != nil {
		t.Fatal(err)
	}
	// Partition 0 starts below its log start, 1 at its end (empty), 2
	// from the earliest offset, 3 from where it asks.
	r, err := kafkalog.NewTopicReader(ctx, b.Addrs(), eventlog.EventsTopic, map[int]int64{0: 1, 1: 2, 3: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	from := map[int]int64{0: 5, 1: 10, 2: 3, 3: 4}
	want := map[partOff]bool{}
	for p, off := range from {
		for ; off < 10; off++ {
			want[partOff{p, off}] = true
		}
	}
	for _, g := range readN(t, ctx, r, len(want)) {
		k := partOff{g.Partition, g.Offset}
		if !want[k] {
			t.Errorf("unexpected or repeated record %d/%d", k.p, k.off)
		}
		delete(want, k)
	}
	// Nothing else: the next record of each partition is a marker.
	writeKeyless(t, ctx, w, partitions, 1, 1000)
	for _, g := range readN(t, ctx, r, partitions) {
		if g.Offset != 10 {
			t.Errorf("got %d/%d %q, want the marker at offset 10", g.Partition, g.Offset, g.Value)
		}
	}
}

// TestGroupResumesAfterDeletedRecords deletes records past a group's
// committed offsets while no member runs: the next member continues from
// the log start.
func TestGroupResumesAfterDeletedRecords(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	writeKeyless(t, ctx, w, partitions, 10, 0)

	stopAt := map[int]int64{0: 2, 1: 2, 2: 2, 3: 2}
	first := newTracker()
	stop := member(t, ctx, b, "deleted", first.claimFunc("first", stopAt))
	first.waitFor(t, ctx, "first member commits", first.allCommitted(partitions, 2))
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume returned %v, want context.Canceled", err)
	}
	if got, err := kafkalog.CommittedOffsets(ctx, b.Addrs(), "deleted", eventlog.EventsTopic); err != nil || !maps.Equal(got, stopAt) {
		t.Fatalf("CommittedOffsets = %v, %v; want %v", got, err, stopAt)
	}
	if got, err := kafkalog.CommittedOffsets(ctx, b.Addrs(), "no-such-group", eventlog.EventsTopic); err != nil || len(got) != 0 {
		t.Fatalf("CommittedOffsets of a group without commits = %v, %v; want none", got, err)
	}

	// Past the commits in 0 and 1, every record in 2, none in 3.
	deleted := map[int]int64{0: 6, 1: 3, 2: 10}
	if err := kafkalog.DeleteRecords(ctx, b.Addrs(), eventlog.EventsTopic, deleted); err != nil {
		t.Fatal(err)
	}
	second := newTracker()
	stop = member(t, ctx, b, "deleted", second.claimFunc("second", nil))
	second.waitFor(t, ctx, "second member reaches the end", func() bool {
		for _, p := range []int{0, 1, 3} {
			if second.committed[p] != 10 {
				return false
			}
		}
		return true
	})
	// A write after the deletion reaches the partition that lost every
	// record, so the member did not stall there either.
	writeKeyless(t, ctx, w, partitions, 1, 10)
	second.waitFor(t, ctx, "second member reads the new records", second.allCommitted(partitions, 11))
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume returned %v, want context.Canceled", err)
	}
	for p := range partitions {
		from := max(deleted[p], 2)
		for off := range int64(11) {
			want := 0
			if off >= from {
				want = 1
			}
			if got := second.seen[partOff{p, off}]; got != want {
				t.Errorf("second member saw %d/%d %d times, want %d", p, off, got, want)
			}
		}
	}
	if len(second.errs) > 0 {
		t.Errorf("claim errors: %v", second.errs)
	}
}

// TestTopicReaderRecordsDeletedWhileReading deletes records the reader has
// not fetched yet, while it holds some it read ahead: it returns what it
// holds, then continues from the new log start without an error.
func TestTopicReaderRecordsDeletedWhileReading(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	// 6 MB, three times what one fetch takes, in 2 KB records.
	const n, deleteTo = 3000, 2900
	value := make([]byte, 2<<10)
	for range n / 500 {
		recs := make([]eventlog.Record, 500)
		for i := range recs {
			recs[i] = eventlog.Record{Partition: 0, Value: value}
		}
		if err := w.Write(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	r, err := kafkalog.NewTopicReader(ctx, b.Addrs(), eventlog.EventsTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	first := readN(t, ctx, r, 1)[0]
	if err := kafkalog.DeleteRecords(ctx, b.Addrs(), eventlog.EventsTopic, map[int]int64{0: deleteTo}); err != nil {
		t.Fatal(err)
	}
	prev, skipped := first.Offset, false
	for prev < n-1 {
		g := readN(t, ctx, r, 1)[0]
		switch {
		case g.Offset <= prev:
			t.Fatalf("offset %d after %d", g.Offset, prev)
		case g.Offset > prev+1:
			if g.Offset != deleteTo || skipped {
				t.Fatalf("skipped from %d to %d, want one skip to %d", prev, g.Offset, deleteTo)
			}
			skipped = true
		}
		prev = g.Offset
	}
	// The reader holds at most its queue (1024 records) and one fetch
	// (2 MiB) ahead, far short of the deleted records.
	if !skipped {
		t.Error("nothing was skipped: the reader had read every record ahead")
	}
}

// TestInspector reads partitions' bounds and the times of records at
// offsets, in one batch or another, before and after records are deleted.
func TestInspector(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: b.Addrs()})
	t.Cleanup(func() { w.Close() })
	for batch := range 2 { // two writes: two batches in partition 1
		var recs []eventlog.Record
		for i := range 5 {
			recs = append(recs, eventlog.Record{Topic: eventlog.JoinedTopic, Partition: 1, Value: []byte("v"), Time: at(5*batch + i)})
		}
		if err := w.Write(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	in := kafkalog.NewInspector(b.Addrs())
	defer in.Close()
	bounds, err := in.Bounds(ctx, eventlog.JoinedTopic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]kafkalog.Bounds{0: {}, 1: {Start: 0, End: 10}, 2: {}, 3: {}}
	if !maps.Equal(bounds, want) {
		t.Errorf("bounds %v, want %v", bounds, want)
	}
	check := func(off int64, want time.Time, wantOK bool) {
		t.Helper()
		got, ok, err := in.RecordTime(ctx, eventlog.JoinedTopic, 1, off, 10)
		if err != nil || ok != wantOK || !got.Equal(want) {
			t.Errorf("RecordTime at %d = %v, %v, %v; want %v, %v", off, got, ok, err, want, wantOK)
		}
	}
	check(0, at(0), true)
	check(3, at(3), true)
	check(7, at(7), true) // in the second batch
	check(9, at(9), true)
	check(10, time.Time{}, false) // the end: no record yet

	if err := kafkalog.DeleteRecords(ctx, b.Addrs(), eventlog.JoinedTopic, map[int]int64{1: 4}); err != nil {
		t.Fatal(err)
	}
	if bounds, err = in.Bounds(ctx, eventlog.JoinedTopic); err != nil || bounds[1] != (kafkalog.Bounds{Start: 4, End: 10}) {
		t.Errorf("bounds after deleting 4 records: %v, %v", bounds, err)
	}
	check(2, at(4), true) // the first stored after it
	if _, err := in.Bounds(ctx, "no.such.topic"); err == nil {
		t.Error("Bounds of an unknown topic succeeded, want error")
	}
}
