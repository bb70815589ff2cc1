package server

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/sim"
)

// BenchmarkRankLiveConfig is BenchmarkRank with the loop's configuration
// at version 1, as a server following the configuration topic runs after
// the first change: Rank reads the live configuration and every rank
// record carries its join rules (BenchmarkRank runs on version 0, made
// from the server's fields, whose records carry none).
func BenchmarkRankLiveConfig(b *testing.B) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	srv, stop := benchServerPolicy(b, req, bandit.DefaultPolicy)
	defer stop()
	svc := srv.LoopConfig().Service
	svc.ExplorationPercentage = 0.1
	c, err := srv.LoopConfig().Update(svc, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	srv.Configs().Set(c)
	srv.syncLoops() // what WatchConfig does on the change, without its goroutine
	if lc := srv.def.live.Load(); lc.cfg.Version != 1 || lc.rules == nil || lc.set.Epsilon != 0.1 {
		b.Fatalf("live configuration %+v, want version 1 with join rules and epsilon 0.1", lc)
	}
	// The loop of benchmarkRankOf, on this server.
	b.SetBytes(int64(proto.Size(req)))
	loopCPU(b, func() error {
		_, err := srv.Rank(context.Background(), req)
		return err
	})
}
