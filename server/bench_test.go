package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	_ "github.com/open-personalizer/personalizer/internal/vtcodec"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// discard is an event log that drops everything.
type discard struct{}

func (discard) Write(context.Context, ...eventlog.Record) error { return nil }

// benchServer returns a server whose model was trained on a few requests
// like req, so that scoring does real work, and whose events are dropped.
func benchServer(b *testing.B, req *personalizerv1.RankRequest) (*Server, func()) {
	return benchServerPolicy(b, req, bandit.DefaultPolicy)
}

func benchServerPolicy(b *testing.B, req *personalizerv1.RankRequest, args string) (*Server, func()) {
	b.Helper()
	log := slog.New(slog.DiscardHandler)
	pub := NewPublisher(discard{}, BufferLimits{Records: 1 << 16, Bytes: 1 << 30}, 0, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pub.Run(ctx, time.Second); close(done) }()
	srv := New(Config{Loop: "bench"}, pub, log, time.Now)

	policy, err := bandit.ParsePolicy(args)
	if err != nil {
		b.Fatal(err)
	}
	m := bandit.NewModel(policy)
	var ev bandit.Event
	var pred bandit.Prediction
	for i := range 100 {
		ev.Reset()
		features.Build(&ev, req.GetContextFeatures(), req.GetActions())
		ev.SetLabel(i%len(req.Actions), -1, 0.5)
		m.Learn(&ev, &pred)
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		b.Fatal(err)
	}
	if err := srv.Load(versionOf(buf.Bytes(), 1)); err != nil {
		b.Fatal(err)
	}
	return srv, func() { cancel(); <-done }
}

// versionOf is model file data published as version v, having learned
// 100 examples (a version that learned none is served uniformly).
func versionOf(data []byte, v uint64) *eventsv1.GetModelResponse {
	sum := sha256.Sum256(data)
	return &eventsv1.GetModelResponse{Info: &eventsv1.ModelInfo{Version: v, Sha256: sum[:], Examples: 100}, Data: data}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRank is the Rank handler alone on a 5 KB request (20 actions x
// 15 features, 15 context features) with a copy of its bytes, as the gRPC
// path has them: validation, hashing, scoring, exploration, the response and the
// encoded rank record. cpu-µs/op is the
// CPU of the whole process, the publisher's goroutine included: less
// sensitive than ns/op to other load on the machine.
func BenchmarkRank(b *testing.B) {
	benchmarkRank(b, bandit.DefaultPolicy)
}

// BenchmarkRankEncoding is BenchmarkRank without the request's bytes, as
// REST and RankStream call it: the request is encoded for its record.
func BenchmarkRankEncoding(b *testing.B) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	srv, stop := benchServer(b, req)
	defer stop()
	b.SetBytes(int64(proto.Size(req)))
	loopCPU(b, func() error {
		_, err := srv.Rank(context.Background(), req)
		return err
	})
}

// BenchmarkRankNoInteractions is BenchmarkRank with the default policy
// less its -q ::, so about 31 features per action instead of 560.
func BenchmarkRankNoInteractions(b *testing.B) {
	benchmarkRank(b, "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr")
}

// BenchmarkRankAtInteractionLimit is BenchmarkRank on a request just
// under the default --max-interaction-features: 2 actions and 1,400
// context features in one namespace, which -q :: makes 1.96 million
// features to score. features/op is that count.
func BenchmarkRankAtInteractionLimit(b *testing.B) {
	req := validRank()
	req.Actions = req.Actions[:2]
	for i := range 1400 - 1 {
		req.ContextFeatures[0].Features = append(req.ContextFeatures[0].Features, num(fmt.Sprint("f", i), 1))
	}
	var ev bandit.Event
	var pred bandit.Prediction
	features.Build(&ev, req.GetContextFeatures(), req.GetActions())
	n := mustParse(b, bandit.DefaultPolicy).CountFeatures(&ev, &pred)
	if n > DefaultLimits.MaxInteractionFeatures {
		b.Fatalf("%d features, over the limit", n)
	}
	benchmarkRankOf(b, req, bandit.DefaultPolicy)
	b.ReportMetric(float64(n), "features/op")
}

func benchmarkRank(b *testing.B, policy string) {
	benchmarkRankOf(b, sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15), policy)
}

func benchmarkRankOf(b *testing.B, req *personalizerv1.RankRequest, policy string) {
	srv, stop := benchServerPolicy(b, req, policy)
	defer stop()
	wire, err := proto.Marshal(req) // as the gRPC path has them
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wire)))
	loopCPU(b, func() error {
		// The copy the gRPC path makes of the bytes gRPC received.
		_, err := srv.rankWire(context.Background(), req, withRoom(wire))
		return err
	})
}

// loopCPU runs call b.Loop times, reporting allocations and cpu-µs/op:
// the CPU of the whole process per call, the publisher's goroutine
// included, less sensitive than ns/op to other load on the machine.
func loopCPU(b *testing.B, call func() error) {
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		if err := call(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// BenchmarkRankGRPC is Rank over real gRPC on loopback TCP with parallel
// clients. cpu-µs/op is the CPU of the whole process, client included.
func BenchmarkRankGRPC(b *testing.B) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	srv, stop := benchServer(b, req)
	defer stop()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	personalizerv1.RegisterPersonalizerServiceServer(gs, srv)
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := personalizerv1.NewPersonalizerServiceClient(conn)
	if _, err := client.Rank(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(proto.Size(req)))
	b.SetParallelism(8)
	b.ResetTimer()
	cpu0 := cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Rank(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}
