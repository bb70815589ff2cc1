package kafkalog_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

// TestScan writes keyed records in several batches and scans them back:
// Partition says where the writer put each key, Scan gives exactly the
// records of a range in order (stopping at the high watermark, or when fn
// says so), OffsetAt and EndOffset agree with what was written.
func TestScan(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir())
	ctx := testContext(t)
	w := newWriter(t, b, eventlog.EventsTopic)
	n, err := kafkalog.PartitionCount(ctx, b.Addrs(), eventlog.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	base := time.UnixMilli(1_700_000_000_000)
	want := map[int][]string{} // keys by partition, in order
	for batch := range 5 {
		var recs []eventlog.Record
		for i := range 40 {
			k := fmt.Sprintf("loop/e%d-%d", batch, i)
			recs = append(recs, eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(k), Value: []byte("v" + k), Time: base.Add(time.Duration(batch) * time.Minute)})
			p := kafkalog.Partition([]byte(k), n)
			want[p] = append(want[p], k)
		}
		if err := w.Write(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	insp := kafkalog.NewInspector(b.Addrs())
	defer insp.Close()
	counts, err := insp.PartitionCounts(ctx, eventlog.EventsTopic, eventlog.JoinedTopic)
	if err != nil || counts[eventlog.EventsTopic] != n || counts[eventlog.JoinedTopic] != n {
		t.Fatalf("PartitionCounts = %v, %v; want %d each", counts, err, n)
	}
	for p := range n {
		end, err := insp.EndOffset(ctx, eventlog.EventsTopic, p)
		if err != nil || end != int64(len(want[p])) {
			t.Fatalf("partition %d: EndOffset = %d, %v; want %d", p, end, err, len(want[p]))
		}
		var got []string
		err = insp.Scan(ctx, eventlog.EventsTopic, p, 0, end+100, func(r eventlog.Record) bool {
			if r.Offset != int64(len(got)) || string(r.Value) != "v"+string(r.Key) || r.Partition != p {
				t.Errorf("partition %d: record %d is %+v", p, len(got), r)
			}
			got = append(got, string(r.Key))
			return true
		})
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want[p]) {
			t.Fatalf("partition %d: Scan = %v, %v; want %v", p, got, err, want[p])
		}
		var some []int64
		err = insp.Scan(ctx, eventlog.EventsTopic, p, 3, end, func(r eventlog.Record) bool {
			some = append(some, r.Offset)
			return len(some) < 4
		})
		if err != nil || fmt.Sprint(some) != "[3 4 5 6]" {
			t.Errorf("partition %d: Scan from 3 until told to stop = %v, %v", p, some, err)
		}
		// The first record of the third batch's minute.
		first := int64(0)
		for _, k := range want[p] {
			if k >= "loop/e2" {
				break
			}
			first++
		}
		if off, err := insp.OffsetAt(ctx, eventlog.EventsTopic, p, base.Add(2*time.Minute)); err != nil || off != first {
			t.Errorf("partition %d: OffsetAt = %d, %v; want %d", p, off, err, first)
		}
		if off, err := insp.OffsetAt(ctx, eventlog.EventsTopic, p, base.Add(time.Hour)); err != nil || off != -1 {
			t.Errorf("partition %d: OffsetAt after the last = %d, %v; want -1", p, off, err)
		}
	}
}

// BenchmarkScan reads 10,000 records of 300 bytes with Scan, against one
// ListOffsets round trip (EndOffset) as the baseline.
func BenchmarkScan(b *testing.B) {
	br := startBroker(b, b.TempDir())
	ctx := testContext(b)
	for range 10 {
		var recs []eventlog.Record
		for i := range 1000 {
			recs = append(recs, eventlog.Record{Topic: eventlog.EventsTopic, Partition: 0, Value: make([]byte, 300+i%2)})
		}
		w2 := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: br.Addrs(), Topic: eventlog.EventsTopic, ByPartition: true})
		if err := w2.Write(ctx, recs...); err != nil {
			b.Fatal(err)
		}
		w2.Close()
	}
	insp := kafkalog.NewInspector(br.Addrs())
	defer insp.Close()
	b.Run("EndOffset", func(b *testing.B) {
		for b.Loop() {
			if _, err := insp.EndOffset(ctx, eventlog.EventsTopic, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Scan10000", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := insp.Scan(ctx, eventlog.EventsTopic, 0, 0, 10000, func(eventlog.Record) bool { n++; return true }); err != nil || n != 10000 {
				b.Fatal(n, err)
			}
		}
	})
}
