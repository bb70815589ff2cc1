package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// BenchmarkPipeline measures the whole loop in dev mode: 5 KB Rank
// requests (20 actions x 15 features, 15 context features) and a reward
// each, over gRPC, through the embedded broker, the joiner and the learner,
// until every event is learned. events/s and MB/s (of Rank requests) are
// end to end, so they include one reward window at the end.
func BenchmarkPipeline(b *testing.B) {
	const events = 20000
	var cfg devConfig
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.registerFlags(fs)
	err := parseFlags(fs, []string{
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--broker-addr", "127.0.0.1:0",
		"--data-dir", b.TempDir(), "--reward-wait", "200ms", "--tick-interval", "50ms",
		"--model-export-frequency", "1s",
	}, func(string) string { return "" })
	if err == nil {
		err = cfg.validate()
	}
	if err != nil {
		b.Fatal(err)
	}
	d, err := startDev(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	conn, err := grpc.NewClient(d.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := personalizerv1.NewPersonalizerServiceClient(conn)
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	size := proto.Size(req)

	ctx := context.Background()
	var learned int64
	b.ResetTimer()
	for range b.N {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for next.Add(1) <= events {
					resp, err := client.Rank(ctx, req)
					if err == nil {
						_, err = client.Reward(ctx, &personalizerv1.RewardRequest{EventId: resp.GetEventId(), Value: 1})
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		learned += events
		if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= learned }); err != nil {
			b.Fatal(err)
		}
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(learned)/secs, "events/s")
	b.ReportMetric(float64(learned)*float64(size)/secs/1e6, "MB/s")
	b.ReportMetric(0, "ns/op")
}
