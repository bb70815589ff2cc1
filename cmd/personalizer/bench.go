package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/internal/sim"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:50051", "gRPC address of the service")
	concurrency := fs.Int("concurrency", 8, "requests in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to send requests")
	actions := fs.Int("actions", 20, "actions per request")
	features := fs.Int("features", 15, "features per action")
	nContext := fs.Int("context", 15, "context features")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", *addr, err)
	}
	defer conn.Close()
	client := personalizerv1.NewPersonalizerServiceClient(conn)
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), *actions, *features, *nContext)
	if _, err := client.Rank(ctx, req); err != nil {
		return fmt.Errorf("rank: %w", err)
	}
	fmt.Fprintf(stdout, "Rank: %d B request (%d actions x %d features, %d context features), %d in flight, %v\n",
		proto.Size(req), *actions, *features, *nContext, *concurrency, *duration)

	// Requests use ctx itself, not a context with the run's deadline: the
	// server would fail in-flight requests at the deadline.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(*duration)
	for range *concurrency {
		wg.Go(func() {
			var mine []time.Duration
			for t := time.Now(); t.Before(end) && ctx.Err() == nil; t = time.Now() {
				_, err := client.Rank(ctx, req)
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
						cancel()
					}
					break
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return fmt.Errorf("rank: %w", firstErr)
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Fprintf(stdout, "requests %d  QPS %.0f  latency p50 %v  p90 %v  p99 %v  max %v\n",
		len(lat), float64(len(lat))/elapsed.Seconds(), q(0.5), q(0.9), q(0.99), lat[len(lat)-1])
	return nil
}
