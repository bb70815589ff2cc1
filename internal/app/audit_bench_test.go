package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/joiner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// BenchmarkDecisionAudit measures GetDecision over gRPC in dev mode after
// 20,000 rewarded events (about 10,000 records in each of the 4
// partitions of personalizer.events), against Rank in the same process:
// an event among the last ranked (found in the first chunk read back from
// the end), one of the first ranked (the whole partition read back), and
// the first ranked again with a time hint (?at=, read forward from the
// partition's first record of that time).
func BenchmarkDecisionAudit(b *testing.B) {
	const events = 20000
	var cfg devConfig
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.registerFlags(fs)
	err := parseFlags(fs, []string{
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--broker-addr", "127.0.0.1:0",
		"--data-dir", b.TempDir(), "--reward-wait", "200ms", "--tick-interval", "50ms",
		"--model-export-frequency", "1s", "--log-level", "error",
	}, func(string) string { return "" })
	if err == nil {
		err = cfg.validate()
	}
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	d, err := startDev(ctx, cfg, slog.New(slog.DiscardHandler))
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
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	for i := range events {
		req := auditRequest(rng, fmt.Sprintf("b%d", i))
		resp, err := client.Rank(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: req.GetEventId(), Value: auditReward(req, resp.GetRewardActionId())}); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		b.Fatal(err)
	}
	audit := func(b *testing.B, id func(i int) string, at *timestamppb.Timestamp) {
		for i := 0; b.Loop(); i++ {
			if _, err := client.GetDecision(ctx, &personalizerv1.GetDecisionRequest{EventId: id(i), At: at}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("Rank", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := client.Rank(ctx, auditRequest(rng, fmt.Sprintf("r%d", i))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AuditLast", func(b *testing.B) {
		audit(b, func(i int) string { return fmt.Sprintf("b%d", events-1-i%100) }, nil)
	})
	b.Run("AuditFirst", func(b *testing.B) {
		audit(b, func(i int) string { return fmt.Sprintf("b%d", i%100) }, nil)
	})
	b.Run("AuditFirstAt", func(b *testing.B) {
		audit(b, func(i int) string { return fmt.Sprintf("b%d", i%100) }, timestamppb.New(start.Add(-time.Second)))
	})
}
