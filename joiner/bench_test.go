package joiner

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// benchRecords returns n events as the joiner fetches them: a rank record
// of about 5 KB (12 actions x 15 features, 15 context features, as
// BenchmarkJoiner) and a reward record each, ten events per millisecond.
func benchRecords(n int) []eventlog.Record {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 12, 15, 15)
	ctx := features.AppendContext(nil, req.GetContextFeatures(), req.GetActions())
	ranking, probs := make([]uint32, 12), make([]float32, 12)
	for a := range ranking {
		ranking[a], probs[a] = uint32(a), 0.1/11
	}
	probs[0] = 0.9
	var recs []eventlog.Record
	for i := range n {
		key := fmt.Sprintf("bench/e%09d", i)
		at := t0.Add(time.Duration(i/10) * time.Millisecond)
		rank, _ := proto.Marshal(&eventsv1.RankEvent{Loop: "bench", EventId: key[6:], Context: ctx, Ranking: ranking, Probabilities: probs,
			ModelVersion: "7", LearningMode: online})
		reward, _ := proto.Marshal(&eventsv1.RewardEvent{Loop: "bench", EventId: key[6:], Value: 1, Id: uint64(i + 1)})
		recs = append(recs,
			eventlog.Record{Key: []byte(key), Value: rank, Time: at, Offset: int64(2 * i),
				Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}},
			eventlog.Record{Key: []byte(key), Value: reward, Time: at.Add(time.Millisecond), Offset: int64(2*i + 1),
				Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeReward)}}})
	}
	return recs
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkWindowPending decodes and adds 20,000 events (rank and reward)
// whose windows stay open, each record in its own buffer as kafka-go
// returns them, and reports the heap they hold per pending event:
// B/pending in all, overhead-B/pending beyond the rank record's bytes
// (which the joiner keeps: the line is written from them). ns/op is the
// time to decode and add the 20,000 events.
func BenchmarkWindowPending(b *testing.B) {
	const n = 20000
	recs := benchRecords(n)
	r := testRules()
	r.RewardWait = time.Hour
	var out Output
	var perEvent, overhead float64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		before := heapInUse()
		b.StartTimer()
		w := NewWindow(r)
		for _, rec := range recs {
			rec.Value = bytes.Clone(rec.Value)
			w.Add(decode(rec), &out)
		}
		b.StopTimer()
		if w.Pending() != n || len(out.Joined) != 0 {
			b.Fatalf("%d pending, %d joined", w.Pending(), len(out.Joined))
		}
		held := float64(heapInUse() - before)
		perEvent = held / n
		overhead = perEvent - float64(len(recs[0].Value))
		runtime.KeepAlive(w)
		b.StartTimer()
	}
	b.ReportMetric(perEvent, "B/pending")
	b.ReportMetric(overhead, "overhead-B/pending")
}

// BenchmarkWindowJoin is the state machine alone at its steady state:
// decode a record, add it, close what it closes, with about 10,000 events
// pending. MB/s counts the input records' bytes.
func BenchmarkWindowJoin(b *testing.B) {
	recs := benchRecords(50000)
	r := testRules()
	r.RewardWait = time.Second
	var out Output
	var size int
	for _, rec := range recs {
		size += len(rec.Key) + len(rec.Value)
	}
	b.SetBytes(int64(size / len(recs)))
	b.ReportAllocs()
	b.ResetTimer()
	w := NewWindow(r)
	for i := range b.N {
		rec := recs[i%len(recs)]
		if i%len(recs) == 0 && i > 0 {
			// Start over with fresh time.
			b.StopTimer()
			w = NewWindow(r)
			b.StartTimer()
		}
		w.Add(decode(rec), &out)
		out.Reset()
	}
}

// BenchmarkAppendDSJSON renders one joined event of the benchmark shape
// (12 actions, a 4.7 KB context, one reward) with the float cache the
// joiner keeps per partition.
func BenchmarkAppendDSJSON(b *testing.B) {
	in := decode(benchRecords(1)[0])
	j := Joined{Key: in.Key, Rank: in.Rank, Time: in.Time, Outcomes: []Outcome{{Value: 1, Time: in.Time}}, Reward: 1, Original: 1, Learnable: true}
	var fc floatCache
	buf := appendDSJSON(nil, &j, &fc)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		buf = appendDSJSON(buf[:0], &j, &fc)
	}
}
