package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/open-personalizer/personalizer/internal/sim"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:50051", "gRPC address of the service")
	asJSON := fs.Bool("json", false, "end with one JSON summary line")
	var cfg sim.Config
	fs.IntVar(&cfg.Events, "events", 20000, "simulated events")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the users and of the hidden reward model")
	fs.IntVar(&cfg.Window, "window", 0, "events per reported window (default events/10)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 4, "users in parallel")
	fs.Float64Var(&cfg.Rate, "rate", 1000, "events per second (0: as fast as the service answers)")
	fs.IntVar(&cfg.Slots, "slots", 0, "rank a carousel of this many slots per event (MultiSlotRank, for a multi-slot loop: a --ccb_explore_adf policy); 0: single-slot Rank")
	var caller callerConfig
	caller.registerFlags(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	dial, err := caller.dialOptions()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, dial...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", *addr, err)
	}
	defer conn.Close()
	res, err := sim.Run(ctx, personalizerv1.NewPersonalizerServiceClient(conn), cfg, stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "random policy %.3f, best policy %.3f, first window %.3f, last window %.3f\n",
		res.RandomPolicyReward, res.BestPolicyReward, res.RewardFirstWindow, res.RewardLastWindow)
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	return nil
}
