package joiner

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
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
	var recs []eventlog.Record
	g := newBenchEvents()
	for i := range n {
		rank, reward := g.event(i)
		recs = append(recs, rank, reward)
	}
	return recs
}

// benchEvents makes the events of benchRecords one at a time. Their rank
// records carry the request, as servers write them, or with
// BENCH_RECORDS=context the DSJson context rendered from it, as servers
// wrote them before the request field.
type benchEvents struct {
	request, ctx []byte
	ranking      []uint32
	probs        []float32
}

func newBenchEvents() *benchEvents {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 12, 15, 15)
	g := &benchEvents{ranking: make([]uint32, 12), probs: make([]float32, 12)}
	if benchContextRecords() {
		g.ctx = features.AppendContext(nil, req.GetContextFeatures(), req.GetActions())
	} else {
		g.request, _ = proto.Marshal(req)
	}
	for a := range g.ranking {
		g.ranking[a], g.probs[a] = uint32(a), 0.1/11
	}
	g.probs[0] = 0.9
	return g
}

// benchContextRecords tells whether the benchmarks' rank records carry the
// rendered context (BENCH_RECORDS=context) instead of the request.
func benchContextRecords() bool { return os.Getenv("BENCH_RECORDS") == "context" }

// event returns event i's rank and reward records, each in its own
// buffers.
func (g *benchEvents) event(i int) (rank, reward eventlog.Record) {
	key := fmt.Sprintf("bench/e%09d", i)
	at := t0.Add(time.Duration(i/10) * time.Millisecond)
	rv, _ := proto.Marshal(&eventsv1.RankEvent{Loop: "bench", EventId: key[6:], Request: g.request, Context: g.ctx,
		Ranking: g.ranking, Probabilities: g.probs, ModelVersion: "7", LearningMode: online})
	wv, _ := proto.Marshal(&eventsv1.RewardEvent{Loop: "bench", EventId: key[6:], Value: 1, Id: uint64(i + 1)})
	return eventlog.Record{Key: []byte(key), Value: rv, Time: at, Offset: int64(2 * i),
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}},
		eventlog.Record{Key: []byte(key), Value: wv, Time: at.Add(time.Millisecond), Offset: int64(2*i + 1),
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeReward)}}}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkWindowPending decodes and adds events (rank and reward) whose
// windows stay open, each record in its own buffer as kafka-go returns
// them, and reports the heap the window holds per pending event
// (B/pending): 20,000 events, and 1,000,000. The window keeps no record:
// the joiner reads a rank back when its window closes. ns/op is the time
// to make, decode and add the events.
func BenchmarkWindowPending(b *testing.B) {
	for _, n := range []int{20_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchPending(b, n) })
	}
}

func benchPending(b *testing.B, n int) {
	g := newBenchEvents()
	r := testRules()
	r.RewardWait = time.Hour
	var out Output
	var perEvent float64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		before := heapInUse()
		b.StartTimer()
		w := NewWindow(r)
		for i := range n {
			rank, reward := g.event(i)
			w.Add(decode(rank), &out)
			w.Add(decode(reward), &out)
		}
		b.StopTimer()
		if w.Pending() != n || len(out.Joined) != 0 {
			b.Fatalf("%d pending, %d joined", w.Pending(), len(out.Joined))
		}
		perEvent = float64(heapInUse()-before) / float64(n)
		runtime.KeepAlive(w)
		b.StartTimer()
	}
	b.ReportMetric(perEvent, "B/pending")
}

// BenchmarkWindowJoin is the state machine alone at its steady state:
// decode a record, add it, close what it closes, with about 10,000 events
// pending. MB/s counts the input records' bytes; cpu-ns/op is the
// process's CPU time per record, GC included, which other load on the
// machine changes less than the wall-clock time.
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
	cpu := cpuTime()
	defer func() { b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op") }()
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
	rank, _ := newBenchEvents().event(0)
	in := decode(rank)
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

// BenchmarkRankCache fills a partition's rank cache at the flag's default
// size (32 MiB) with the benchmark's ranks, decoded as the joiner caches
// them, each record in its own buffer, and reports the heap it holds:
// per cached rank (B/rank) and against the budget (held/budget).
func BenchmarkRankCache(b *testing.B) {
	g := newBenchEvents()
	const budget = 32 << 20
	var perRank, ratio float64
	for range b.N {
		b.StopTimer()
		before := heapInUse()
		b.StartTimer()
		c := rankCache{budget: budget}
		for i := 0; i < 2*budget/5000; i++ {
			rank, _ := g.event(i)
			in := decode(rank)
			c.put(in, rankBytes(rank.Value, in.Rank))
		}
		b.StopTimer()
		held := float64(heapInUse() - before)
		perRank, ratio = held/float64(c.q.len()), held/budget
		runtime.KeepAlive(&c)
		b.StartTimer()
	}
	b.ReportMetric(perRank, "B/rank")
	b.ReportMetric(ratio, "held/budget")
}

// BenchmarkDecodeRank is the joiner's decoding of one rank record in the
// two forms: the context rendered by the server (records before the
// request field) and the request, which the joiner renders. Two requests:
// 5 KB (20 actions x 15 features, 15 context features, as the server's
// BenchmarkRank) and the seed's 7.4 KB (10 actions x 45 features, 50
// context features, as bench --workload seed). cpu-ns/op is the process's
// CPU time per record, GC included.
func BenchmarkDecodeRank(b *testing.B) {
	for _, shape := range []struct {
		name                        string
		actions, features, contexts int
	}{{"5KB", 20, 15, 15}, {"seed", 10, 45, 50}} {
		req := sim.Request(rand.New(rand.NewPCG(1, 2)), shape.actions, shape.features, shape.contexts)
		wire, err := proto.Marshal(req)
		if err != nil {
			b.Fatal(err)
		}
		ranking, probs := make([]uint32, shape.actions), make([]float32, shape.actions)
		for a := range ranking {
			ranking[a], probs[a] = uint32(a), 1/float32(shape.actions)
		}
		for _, form := range []struct {
			name string
			ev   *eventsv1.RankEvent
		}{
			{"context", &eventsv1.RankEvent{Context: features.AppendContext(nil, req.ContextFeatures, req.Actions)}},
			{"request", &eventsv1.RankEvent{Request: wire}},
		} {
			ev := form.ev
			ev.Loop, ev.EventId, ev.Ranking, ev.Probabilities, ev.ModelVersion = "bench", "e1", ranking, probs, "7"
			value, err := proto.Marshal(ev)
			if err != nil {
				b.Fatal(err)
			}
			rec := eventlog.Record{Key: []byte("bench/e1"), Value: value, Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}}
			b.Run(shape.name+"/"+form.name, func(b *testing.B) {
				b.SetBytes(int64(len(value)))
				b.ReportAllocs()
				cpu := cpuTime()
				for b.Loop() {
					if in := decode(rec); in.Kind != Rank {
						b.Fatal(in.Err)
					}
				}
				b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
			})
		}
	}
}
