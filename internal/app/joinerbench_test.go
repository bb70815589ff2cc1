package app

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// benchRanks returns n different payloads of rank records: the wire bytes
// of Rank requests (random values) that rank records carry, as servers
// write them, or with BENCH_RECORDS=context the DSJson contexts rendered
// from them, as servers wrote them before the request field (the joiner
// then has nothing to render). The requests are of 12 actions with 15
// features each and 15 context features, with the rest of the rank
// record about 5 KB as a context, 3.4 KB as a request; with
// BENCH_WORKLOAD=seed the seed's (bench --workload seed): 10 actions x 45
// features and 50 context features, a 7.4 KB request. Different, so that
// compression sees what it would in production: the same names, other
// values. actions is the requests' number of actions; rendered tells
// contexts from requests.
func benchRanks(b *testing.B, n int) (payloads [][]byte, actions int, rendered bool) {
	actions, nFeatures, nContext := 12, 15, 15
	switch w := os.Getenv("BENCH_WORKLOAD"); w {
	case "":
	case "seed":
		actions, nFeatures, nContext = seedActions, seedFeatures, seedContext
	default:
		b.Fatalf("BENCH_WORKLOAD=%q: want seed or nothing", w)
	}
	switch f := os.Getenv("BENCH_RECORDS"); f {
	case "", "request":
	case "context":
		rendered = true
	default:
		b.Fatalf("BENCH_RECORDS=%q: want request or context", f)
	}
	r := rand.New(rand.NewPCG(1, 2))
	payloads = make([][]byte, n)
	for i := range payloads {
		req := sim.Request(r, actions, nFeatures, nContext)
		if rendered {
			payloads[i] = features.AppendContext(nil, req.GetContextFeatures(), req.GetActions())
			continue
		}
		var err error
		if payloads[i], err = proto.Marshal(req); err != nil {
			b.Fatal(err)
		}
	}
	return payloads, actions, rendered
}

// benchCompression is how the benchmark's records are compressed, in and
// out: none, the default of dev and joiner, unless BENCH_COMPRESSION says.
func benchCompression() string { return os.Getenv("BENCH_COMPRESSION") }

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkJoiner measures the joiner on its own: b.N events (a rank
// record of [benchRanks] and a reward record each) are written to the embedded broker
// (4 partitions, data on disk) before the clock starts; one joiner then
// consumes them, joins them and writes the joined lines, acks=all, to the
// same broker. Ten events are stamped per millisecond and the reward wait
// is 1s, so about 10,000 events are pending at any time (BENCH_JOIN_WAIT
// sets another wait). MB/s counts the input records (keys and values)
// consumed; MB/cpu-s and cpu-µs/event divide by the process's CPU time,
// the broker's included. The clock starts when the first event is joined
// or pending, so that joining the consumer group is left out.
func BenchmarkJoiner(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	if base := os.Getenv("BENCH_DATA_DIR"); base != "" {
		// For a data dir on another file system, such as tmpfs.
		var err error
		if dir, err = os.MkdirTemp(base, "joinerbench"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	broker, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: dir}, testLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer broker.Close()
	brokers := broker.Addrs()

	payloads, actions, rendered := benchRanks(b, 1024)
	// Every event ranks the actions, the chosen one first.
	ranking, probs := make([]uint32, actions), make([]float32, actions)
	for a := range ranking {
		ranking[a], probs[a] = uint32(a), 0.1/float32(actions-1)
	}
	probs[0] = 0.9
	base := time.Now().Add(-time.Hour)
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: brokers, Topic: eventlog.EventsTopic, Compression: benchCompression()})
	var recs []eventlog.Record
	perEvent := 0
	for i := range b.N {
		key := fmt.Sprintf("bench/e%09d", i)
		at := base.Add(time.Duration(i/10) * time.Millisecond)
		ev := &eventsv1.RankEvent{Loop: "bench", EventId: key[6:], Ranking: ranking, Probabilities: probs,
			ModelVersion: "7", LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
		if rendered {
			ev.Context = payloads[i%len(payloads)]
		} else {
			ev.Request = payloads[i%len(payloads)]
		}
		rank, _ := proto.Marshal(ev)
		reward, _ := proto.Marshal(&eventsv1.RewardEvent{Loop: "bench", EventId: key[6:], Value: 1, Id: uint64(i + 1)})
		recs = append(recs,
			eventlog.Record{Key: []byte(key), Value: rank, Time: at, Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}},
			eventlog.Record{Key: []byte(key), Value: reward, Time: at.Add(time.Millisecond), Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeReward)}}})
		perEvent = 2*len(key) + len(rank) + len(reward)
		if len(recs) == 2000 || i == b.N-1 {
			if err := w.Write(ctx, recs...); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	// A tick in every partition past the last window closes it.
	for p := range kafkalog.DefaultEventsPartitions {
		recs = append(recs, eventlog.Record{Partition: p, Time: base.Add(time.Duration(b.N/10)*time.Millisecond + time.Hour),
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeTick)}}})
	}
	if err := w.Write(ctx, recs...); err != nil {
		b.Fatal(err)
	}
	w.Close()

	out := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: brokers, ByPartition: true, Compression: benchCompression()})
	defer out.Close()
	ticks := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: brokers, Topic: eventlog.EventsTopic})
	defer ticks.Close()
	rewardWait := time.Second
	if v := os.Getenv("BENCH_JOIN_WAIT"); v != "" {
		var err error
		if rewardWait, err = time.ParseDuration(v); err != nil {
			b.Fatal(err)
		}
	}
	cfg := joiner.Config{
		Rules: joiner.Rules{RewardWait: rewardWait, Backward: 2 * time.Second, DefaultReward: 0, Aggregation: joiner.Earliest,
			LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE},
		// No wall-clock ticks: the records' times are an hour old.
		TickInterval: time.Hour, CommitInterval: time.Second,
		RankCache: 32 << 20, // the flag's default
	}
	if v := os.Getenv("BENCH_RANK_CACHE"); v != "" {
		var err error
		if cfg.RankCache, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	group := kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: brokers, GroupID: "bench", Topic: eventlog.EventsTopic}, testLogger())
	j := joiner.New(cfg, testLogger(), group, out, ticks, time.Now)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- j.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	wait := func(n int64) {
		wctx, stop := context.WithTimeout(ctx, 10*time.Minute)
		defer stop()
		if err := j.Wait(wctx, func(s joiner.Stats) bool { return s.Emitted >= n }); err != nil {
			b.Fatalf("waiting for %d joined events: %v (%+v)", n, err, j.Counters())
		}
	}
	// The first event joined, or with a long wait the first pending.
	wctx, stop := context.WithTimeout(ctx, 10*time.Minute)
	if err := j.Wait(wctx, func(s joiner.Stats) bool { return s.Emitted > 0 || j.Pending() > 0 }); err != nil {
		b.Fatal(err)
	}
	stop()
	b.SetBytes(int64(perEvent))
	// -cpuprofile would include writing the input; this profiles the
	// join alone.
	if path := os.Getenv("BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	cpu := cpuTime()
	b.ResetTimer()
	wait(int64(b.N))
	b.StopTimer()
	cpu = cpuTime() - cpu
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	// CPU time of the whole process, broker included: what the rate would
	// be with both cores to itself.
	b.ReportMetric(float64(b.N)*float64(perEvent)/1e6/cpu.Seconds(), "MB/cpu-s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
	if st := j.Counters(); st.Emitted != int64(b.N) || st.Learnable != int64(b.N) || st.DefaultRewards != 0 {
		b.Errorf("joined %+v, want %d events with their reward", st, b.N)
	}
}
