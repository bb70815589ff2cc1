package kafkalog_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

const (
	benchRecordBytes = 5 << 10
	benchBatch       = 1000 // records per Write, as a busy joiner would send
)

// benchRecords returns n keyed 5 KB records spread over every partition.
func benchRecords(n int) []eventlog.Record {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]eventlog.Record, n)
	for i := range recs {
		v := make([]byte, benchRecordBytes)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		recs[i] = eventlog.Record{
			Key:     fmt.Appendf(nil, "loop/event-%d", i),
			Value:   v,
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}},
		}
	}
	return recs
}

func writeBench(b *testing.B, ctx context.Context, w *kafkalog.Writer, recs []eventlog.Record, n int) {
	for i := 0; i < n; i += len(recs) {
		if err := w.Write(ctx, recs[:min(len(recs), n-i)]...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite measures synchronous writes of 5 KB records through the
// embedded broker (acks=all, data dir on disk), 1000 records per Write.
func BenchmarkWrite(b *testing.B) {
	ctx := b.Context()
	br := startBroker(b, b.TempDir())
	w := newWriter(b, br, eventlog.EventsTopic)
	recs := benchRecords(benchBatch)
	b.SetBytes(benchRecordBytes)
	b.ResetTimer()
	writeBench(b, ctx, w, recs, b.N)
}

// BenchmarkGroupFetch measures reading 5 KB records with one group member's
// claims (4 partitions, 4 goroutines), committing every 1000 records. The
// time includes joining the group.
func BenchmarkGroupFetch(b *testing.B) {
	ctx := b.Context()
	br := startBroker(b, b.TempDir())
	w := newWriter(b, br, eventlog.EventsTopic)
	writeBench(b, ctx, w, benchRecords(benchBatch), b.N)
	b.SetBytes(benchRecordBytes)
	b.ResetTimer()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var left atomic.Int64
	left.Store(int64(b.N))
	g := kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: br.Addrs(), GroupID: "bench", Topic: eventlog.EventsTopic}, testLog())
	err := g.Consume(ctx, func(ctx context.Context, c eventlog.Claim) error {
		for i := 1; ; i++ {
			rec, err := c.Fetch(ctx)
			if err != nil {
				return err
			}
			if i%1000 == 0 {
				if err := c.Commit(ctx, rec.Offset+1, ""); err != nil {
					return err
				}
			}
			if left.Add(-1) == 0 {
				cancel()
			}
		}
	})
	if err != context.Canceled {
		b.Fatal(err)
	}
}

// BenchmarkTopicReaderFetch measures the learner's merged reader on 5 KB
// records.
func BenchmarkTopicReaderFetch(b *testing.B) {
	ctx := b.Context()
	br := startBroker(b, b.TempDir())
	w := newWriter(b, br, eventlog.EventsTopic)
	writeBench(b, ctx, w, benchRecords(benchBatch), b.N)
	b.SetBytes(benchRecordBytes)
	b.ResetTimer()

	r, err := kafkalog.NewTopicReader(ctx, br.Addrs(), eventlog.EventsTopic, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for range b.N {
		if _, err := r.Fetch(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
