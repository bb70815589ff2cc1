package app

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// testConfig is `personalizer dev` with ephemeral ports and a fast loop.
func testConfig(t testing.TB, dir string, extra ...string) devConfig {
	t.Helper()
	var cfg devConfig
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.registerFlags(fs)
	args := append([]string{
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--broker-addr", "127.0.0.1:0",
		"--data-dir", dir, "--reward-wait", "1s", "--tick-interval", "50ms", "--commit-interval", "100ms",
		"--model-export-frequency", "100ms",
		// Personalizer's default policy with a larger learning rate: -l 0.001
		// needs far more events than a test should take to learn this world.
		"--policy", "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.01 --cb_type mtr -q ::",
	}, extra...)
	if err := parseFlags(fs, args, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startTestDev(t testing.TB, cfg devConfig) (*dev, personalizerv1.PersonalizerServiceClient) {
	t.Helper()
	log := slog.New(slog.NewJSONHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := startDev(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(d.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return d, personalizerv1.NewPersonalizerServiceClient(conn)
}

// TestLoopLearns runs the whole loop in one process against the embedded
// broker: simulated users, every event joined and learned exactly once,
// reward clearly up, and a restart that keeps the model.
func TestLoopLearns(t *testing.T) {
	// A bound for failures, not a wait: with -race on a 2-core machine
	// that other processes keep busy this test has taken 4 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	d, client := startTestDev(t, cfg)

	// The first window (1000 events at most 2000/s) ends before the first
	// reward window (1s) closes, so it is served without any model.
	const events = 12000
	res, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: 7, Window: 1000, Concurrency: 4, Rate: 2000}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("simulation: %+v", res)
	// Every ranked event is joined and learned: wait for the count, then
	// check that nothing was learned twice or lost.
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= events }); err != nil {
		t.Fatalf("waiting for %d learned events: %v (stats %+v)", events, err, d.learner.Stats())
	}
	if st := d.learner.Stats(); st.Learned != events || st.Malformed != 0 || st.NotLearnable != 0 {
		t.Errorf("learner stats %+v, want exactly %d learned", st, events)
	}
	// The joiner counts a line once its write is acknowledged, which can
	// be after the learner has read it: wait for the count, then check it.
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		t.Fatalf("waiting for %d joined events: %v (counters %+v)", events, err, d.joiner.Counters())
	}
	if c := d.joiner.Counters(); c.Emitted != events || c.Learnable != events || c.Undecodable != 0 {
		t.Errorf("joiner counters %+v, want %d emitted", c, events)
	}
	if res.RewardLastWindow < res.RewardFirstWindow+0.05 || res.RewardLastWindow < res.RandomPolicyReward+0.05 {
		t.Errorf("did not learn: first window %.3f, last window %.3f, random policy %.3f, best policy %.3f",
			res.RewardFirstWindow, res.RewardLastWindow, res.RandomPolicyReward, res.BestPolicyReward)
	}
	// Wait for the version with everything in it, then stop.
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return d.store.Latest().GetInfo().GetExamples() == events }); err != nil {
		t.Fatal(err)
	}
	joined := joinedIDs(t, d)
	if len(joined) != events {
		t.Errorf("%d distinct events in %s, want %d", len(joined), eventlog.JoinedTopic, events)
	}
	before := d.store.Latest().GetInfo()
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	// Counted when acknowledged, like the joiner's lines, and final once
	// the publisher has stopped.
	if ps := d.pub.Stats(); ps.Written != 2*events || ps.Refused != 0 || ps.Lost != 0 {
		t.Errorf("publisher stats %+v, want %d written", ps, 2*events)
	}

	// A restart serves the learned model at once and keeps learning.
	d, client = startTestDev(t, cfg)
	defer d.close()
	after := d.store.Latest().GetInfo()
	if !bytes.Equal(after.GetSha256(), before.GetSha256()) || after.GetVersion() != before.GetVersion() || d.srv.ModelVersion() != before.GetVersion() {
		t.Fatalf("after restart model %v, served version %d; before %v", after, d.srv.ModelVersion(), before)
	}
	again, err := sim.Run(ctx, client, sim.Config{Events: 500, Seed: 7, Window: 500, Concurrency: 4}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if again.RewardFirstWindow < res.RandomPolicyReward+0.05 {
		t.Errorf("after restart the first %d events earned %.3f, random policy %.3f: the learned model is not served",
			again.Events, again.RewardFirstWindow, res.RandomPolicyReward)
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= events+500 }); err != nil {
		t.Fatalf("after restart: %v (stats %+v)", err, d.learner.Stats())
	}
	if st := d.learner.Stats(); st.Learned != events+500 {
		t.Errorf("after restart learned %d, want %d", st.Learned, events+500)
	}
}

// joinedIDs reads every record of personalizer.joined and returns the
// distinct keys.
func joinedIDs(t *testing.T, d *dev) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := kafkalog.NewTopicReader(ctx, d.broker.Addrs(), eventlog.JoinedTopic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	total := d.joiner.Counters().Emitted
	ids := map[string]int{}
	for n := int64(0); n < total; n++ {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatalf("after %d of %d joined records: %v", n, total, err)
		}
		ids[string(rec.Key)]++
	}
	return ids
}

func TestDevRefusesCorruptCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	if err := os.MkdirAll(cfg.Learner.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Learner.Dir, "checkpoint"), []byte("PZCKPT01 garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := startDev(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("started with a corrupt checkpoint")
	}
	t.Log(err)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
