package app

// Disk tests: the learner's checkpoint directory, or the embedded
// broker's data directory, is unusable while a dev loop serves Rank and
// Reward calls. Disk trouble is an outage, not a crash: serving goes on,
// health and metrics say what is wrong, and every event is written,
// joined and learned exactly once once the disk is back.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// diskDev is a dev loop on dir whose log (warnings and errors) goes to
// logs and whose learner records every event it learns with its cost.
// close stops it once; the test checks its error.
type diskDev struct {
	outageDev
	close func() error
}

func startDiskDev(t *testing.T, cfg devConfig) *diskDev {
	t.Helper()
	o := &diskDev{outageDev: outageDev{cfg: cfg, logs: new(syncBuffer), learned: map[string][]float32{}}}
	o.cfg.Learner.Learned = func(key []byte, cost float32) {
		o.mu.Lock()
		o.learned[string(key)] = append(o.learned[string(key)], cost)
		o.mu.Unlock()
	}
	var err error
	o.dev, err = startDev(context.Background(), o.cfg, slog.New(slog.NewJSONHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	o.close = sync.OnceValue(o.dev.close)
	t.Cleanup(func() { o.close() })
	o.client = personalizerv1.NewPersonalizerServiceClient(dial(t, o.grpcAddr()))
	return o
}

// rankAndReward calls Rank for events first..last-1 and Reward 1 for
// two of every three, one after the other, and adds what each event must
// be learned with to want (cost -1 rewarded, 0 the default reward). It
// returns how many rewards it sent.
func rankAndReward(ctx context.Context, t *testing.T, client personalizerv1.PersonalizerServiceClient, first, last int, want map[string]float32) (rewards int) {
	t.Helper()
	for i := first; i < last; i++ {
		id := fmt.Sprintf("d%d", i)
		if _, err := client.Rank(ctx, rankRequest(id)); err != nil {
			t.Fatalf("rank %s: %v", id, err)
		}
		want["default/"+id] = 0
		if i%3 == 2 {
			continue
		}
		if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: id, Value: 1}); err != nil {
			t.Fatalf("reward %s: %v", id, err)
		}
		want["default/"+id] = -1
		rewards++
	}
	return rewards
}

// breakDir makes dir unusable, for root too, by moving it aside and
// putting a regular file in its place: creating a file in it fails with
// "not a directory". The returned func repairs it.
func breakDir(t *testing.T, dir string) (repair func()) {
	t.Helper()
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dir+".away", dir); err != nil {
			t.Fatal(err)
		}
	}
}

// healthz returns a process's GET /healthz, decoded as a T.
func healthz[T any](t *testing.T, addr string) T {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	var st T
	if err := json.Unmarshal(buf.Bytes(), &st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s, %v: %s", resp.Status, err, buf.Bytes())
	}
	return st
}

// waitHealth watches service's gRPC health at addr until it is want.
func waitHealth(ctx context.Context, t *testing.T, addr, service string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch, err := healthpb.NewHealthClient(dial(t, addr)).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	for {
		got, err := watch.Recv()
		if err != nil {
			t.Fatalf("waiting for %q health %v: %v", service, want, err)
		}
		if got.GetStatus() == want {
			return
		}
	}
}

// waitServed waits until the server answers with model version v. The
// server has no counter to wait on, so this polls; ctx bounds it.
func waitServed(ctx context.Context, t *testing.T, d *dev, v uint64) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for d.srv.ModelVersion() != v {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for the server to answer with version %d: %v (it has %d)", v, ctx.Err(), d.srv.ModelVersion())
		case <-tick.C:
		}
	}
}

// TestLearnerDiskOutage breaks the learner's checkpoint directory under a
// dev loop taking Rank and Reward calls over gRPC: every call answers,
// every event is written, joined and learned exactly once, the server
// keeps the last checkpointed version, and /healthz, /metrics and gRPC
// health show the failure until the directory is repaired and the next
// checkpoint holds everything. A last checkpoint that fails at shutdown
// makes close fail after the server's events were flushed, and a
// restart learns again, once, exactly what that checkpoint missed.
func TestLearnerDiskOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := testConfig(t, t.TempDir())
	o := startDiskDev(t, cfg)
	httpAddr := o.api.httpLis.Addr().String()
	want := map[string]float32{}
	waitLearned := func(l *learner.Learner, n int64) {
		t.Helper()
		if err := l.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= n }); err != nil {
			t.Fatalf("waiting for %d learned: %v (learner %+v, joiner %+v)", n, err, l.Stats(), o.joiner.Counters())
		}
	}

	// 30 events, checkpointed and served.
	rewards := rankAndReward(ctx, t, o.client, 0, 30, want)
	if err := o.learner.Wait(ctx, func(learner.Stats) bool { return o.store.Latest().GetInfo().GetExamples() == 30 }); err != nil {
		t.Fatalf("waiting for a version of 30 examples: %v (learner %+v)", err, o.learner.Stats())
	}
	v1 := o.learner.Stats().Version
	waitServed(ctx, t, o.dev, v1)
	if st := healthz[devStatus](t, httpAddr); st.Learner.Checkpoint.Failing || st.Learner.Checkpoint.LastWritten == nil || st.ModelVersion != v1 {
		t.Errorf("/healthz before the outage: %+v", st)
	}

	// The directory breaks; 60 more events are answered, written, joined
	// and learned in memory while the checkpoints fail and are retried.
	repair := breakDir(t, cfg.Learner.Dir)
	rewards += rankAndReward(ctx, t, o.client, 30, 90, want)
	waitLearned(o.learner, 90)
	if err := o.learner.Wait(ctx, func(s learner.Stats) bool { return s.CheckpointFailures >= 3 }); err != nil {
		t.Fatalf("waiting for retried checkpoints: %v (learner %+v)", err, o.learner.Stats())
	}
	waitHealth(ctx, t, o.grpcAddr(), checkpointService, healthpb.HealthCheckResponse_NOT_SERVING)
	waitHealth(ctx, t, o.grpcAddr(), "", healthpb.HealthCheckResponse_SERVING)
	before := o.learner.Stats()
	health, metrics := healthz[devStatus](t, httpAddr), scrape(t, httpAddr)
	after := o.learner.Stats()
	if before.Learned != 90 || before.Version != v1 || !before.CheckpointFailing || !strings.Contains(before.CheckpointError, "not a directory") {
		t.Errorf("learner during the outage: %+v, want 90 learned, version %d, failing", before, v1)
	}
	if info := o.store.Latest().GetInfo(); info.GetVersion() != v1 || info.GetExamples() != 30 || o.srv.ModelVersion() != v1 {
		t.Errorf("during the outage the learner published %v and the server answers with %d, want version %d of 30 examples", info, o.srv.ModelVersion(), v1)
	}
	ck := health.Learner.Checkpoint
	if !ck.Failing || ck.Failures < before.CheckpointFailures || ck.Failures > after.CheckpointFailures || !strings.Contains(ck.Error, "not a directory") ||
		ck.FailingSince == nil || !ck.FailingSince.Equal(before.FailingSince) || health.Learner.ModelVersion != v1 || health.Learner.Examples != 90 ||
		health.ModelVersion != v1 || !health.LearnerReachable {
		t.Errorf("/healthz during the outage: %+v; learner %+v", health, before)
	}
	checkMetrics(t, metrics, map[string]float64{
		"personalizer_learner_checkpoint_failing{loop=\"default\"}": 1,
		"personalizer_learner_examples_total{loop=\"default\"}":     90,
		"personalizer_learner_model_version{loop=\"default\"}":      float64(v1),
		"personalizer_server_model_version{loop=\"default\"}":       float64(v1),
	})
	if n := metrics["personalizer_learner_checkpoint_failures_total{loop=\"default\"}"]; n < float64(before.CheckpointFailures) || n > float64(after.CheckpointFailures) {
		t.Errorf("personalizer_learner_checkpoint_failures_total = %v, want %d to %d", n, before.CheckpointFailures, after.CheckpointFailures)
	}
	if n := strings.Count(o.logs.String(), "checkpoint not written;"); n != 1 {
		t.Errorf("%d ERROR lines starting the streak, want 1", n)
	}

	// Repaired: the next attempt writes a version of all 90 examples,
	// the server takes it, and the failure state clears everywhere.
	repair()
	if err := o.learner.Wait(ctx, func(s learner.Stats) bool {
		return !s.CheckpointFailing && o.store.Latest().GetInfo().GetExamples() == 90
	}); err != nil {
		t.Fatalf("waiting for the checkpoint after the repair: %v (learner %+v)", err, o.learner.Stats())
	}
	waitHealth(ctx, t, o.grpcAddr(), checkpointService, healthpb.HealthCheckResponse_SERVING)
	st := o.learner.Stats()
	v2 := st.Version
	waitServed(ctx, t, o.dev, v2)
	health = healthz[devStatus](t, httpAddr)
	if ck := health.Learner.Checkpoint; v2 <= v1 || ck.Failing || ck.Failures != st.CheckpointFailures || ck.Error != "" || ck.FailingSince != nil ||
		ck.LastWritten == nil || !ck.LastWritten.Equal(st.LastCheckpoint) || health.ModelVersion != v2 || health.Learner.ModelVersion != v2 {
		t.Errorf("/healthz after the repair: %+v; learner %+v", health, st)
	}
	checkMetrics(t, scrape(t, httpAddr), map[string]float64{
		"personalizer_learner_checkpoint_failing{loop=\"default\"}":                0,
		"personalizer_learner_checkpoint_failures_total{loop=\"default\"}":         float64(st.CheckpointFailures),
		"personalizer_learner_last_checkpoint_timestamp_seconds{loop=\"default\"}": unixSeconds(st.LastCheckpoint),
		"personalizer_learner_examples_total{loop=\"default\"}":                    90,
		"personalizer_learner_model_version{loop=\"default\"}":                     float64(v2),
		"personalizer_server_model_version{loop=\"default\"}":                      float64(v2),
	})
	// Every event written, joined and learned once, with its reward.
	if err := o.joiner.Wait(ctx, func(s joiner.Stats) bool { return s.Emitted >= 90 }); err != nil {
		t.Fatal(err)
	}
	o.checkLearned(t, want)
	if c := o.joiner.Counters(); c.Emitted != 90 || c.Learnable != 90 || c.DefaultRewards != int64(90-rewards) || c.Late != 0 || c.Dangling != 0 {
		t.Errorf("joiner %+v, want 90 joined, %d with the default reward", c, 90-rewards)
	}
	if ps := o.pub.Stats(); ps.Written != int64(90+rewards) || ps.Refused != 0 || ps.Lost != 0 {
		t.Errorf("publisher %+v, want %d written", ps, 90+rewards)
	}

	// The directory breaks again: 20 more events are learned, then the
	// last checkpoint at shutdown fails. close says so, after the server
	// flushed its events.
	repair = breakDir(t, cfg.Learner.Dir)
	rewards += rankAndReward(ctx, t, o.client, 90, 110, want)
	waitLearned(o.learner, 110)
	err := o.close()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the last checkpoint could not be written; 20 examples learned since version %d are not in it", v2)) {
		t.Errorf("close with the checkpoint failing: %v, want the last checkpoint's failure", err)
	}
	if ps := o.pub.Stats(); ps.Written != int64(110+rewards) || ps.Lost != 0 {
		t.Errorf("publisher %+v, want %d written", ps, 110+rewards)
	}
	o.checkLearned(t, want)
	repair()

	// A restart resumes from version v2 and learns the 20 events it did
	// not hold, each once, and nothing else.
	r := startDiskDev(t, cfg)
	if st := r.learner.Stats(); st.Version != v2 || st.Learned != 90 {
		t.Errorf("restart: %+v, want version %d of 90 examples", st, v2)
	}
	waitLearned(r.learner, 110)
	if err := r.learner.Wait(ctx, func(learner.Stats) bool { return r.store.Latest().GetInfo().GetExamples() == 110 }); err != nil {
		t.Fatalf("waiting for a version of 110 examples: %v (learner %+v)", err, r.learner.Stats())
	}
	again := map[string]float32{}
	for i := 90; i < 110; i++ {
		key := fmt.Sprintf("default/d%d", i)
		again[key] = want[key]
	}
	r.checkLearned(t, again)
	if st := r.learner.Stats(); st.Learned != 110 || st.CheckpointFailures != 0 || st.Version <= v2 {
		t.Errorf("restart: %+v, want 110 learned in version %d or later", st, v2+1)
	}
	if err := r.close(); err != nil {
		t.Error(err)
	}
	t.Logf("%d events, %d rewards; %d checkpoint failures during the outage", len(want), rewards, st.CheckpointFailures)
}

// TestBrokerDiskOutage starts a dev loop whose broker cannot create its
// partitions' directories (the data dir has a regular file named
// "partitions"): kfake answers every produce with an error and stores
// nothing, so the server's buffer holds the events of Rank calls that
// keep answering, the joiner's ticks are retried, and once the file is
// gone every event is written, joined and learned exactly once.
func TestBrokerDiskOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// The events wait in the server's buffer while the joiner's ticks
	// wait in their own retries, and either may be written first once
	// the broker can write: the slack covers the outage (as in
	// TestKafkaOutage).
	cfg := testConfig(t, t.TempDir(), "--join-slack", "30s")
	parts := filepath.Join(cfg.Broker.DataDir, "partitions")
	if err := os.MkdirAll(cfg.Broker.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(parts, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := startDiskDev(t, cfg)
	want := map[string]float32{}
	rewards := rankAndReward(ctx, t, o.client, 0, 50, want)

	// kfake logs every batch it could not persist; wait for the first.
	for {
		_, changed := o.logs.line("\x00") // no line starts with NUL: this is the next write
		if strings.Contains(o.logs.String(), "persist batch mkdir") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no produce refused: %v (publisher %+v)", ctx.Err(), o.pub.Stats())
		case <-changed:
		}
	}
	if ps := o.pub.Stats(); ps.Written != 0 || ps.Refused != 0 {
		t.Errorf("broker unable to write: publisher %+v, want nothing written, nothing refused", ps)
	}
	if c := o.joiner.Counters(); c.Emitted != 0 {
		t.Errorf("broker unable to write: joiner %+v, want nothing joined", c)
	}

	if err := os.Remove(parts); err != nil {
		t.Fatal(err)
	}
	rewards += rankAndReward(ctx, t, o.client, 50, 60, want)
	if err := o.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= 60 }); err != nil {
		t.Fatalf("waiting for 60 learned: %v (learner %+v, joiner %+v, publisher %+v)", err, o.learner.Stats(), o.joiner.Counters(), o.pub.Stats())
	}
	if err := o.joiner.Wait(ctx, func(s joiner.Stats) bool { return s.Emitted >= 60 }); err != nil {
		t.Fatal(err)
	}
	o.checkLearned(t, want)
	if c := o.joiner.Counters(); c.Emitted != 60 || c.DefaultRewards != int64(60-rewards) || c.Late != 0 || c.Dangling != 0 {
		t.Errorf("joiner %+v, want 60 joined, %d with the default reward", c, 60-rewards)
	}
	if ps := o.pub.Stats(); ps.Written != int64(60+rewards) || ps.Refused != 0 || ps.Lost != 0 || ps.Buffered != 0 {
		t.Errorf("publisher %+v, want %d written", ps, 60+rewards)
	}
	if err := o.close(); err != nil {
		t.Error(err)
	}
}

// TestLearnerRoleDiskOutage runs `personalizer learner` on the embedded
// broker with its checkpoint directory broken: it learns on, its
// /healthz, /metrics and gRPC health say the checkpoint fails and clear
// once the directory is repaired, and a last checkpoint that fails makes
// it stop with an error saying so.
func TestLearnerRoleDiskOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	broker, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	var cfg learnerConfig
	fs := flag.NewFlagSet("learner", flag.ContinueOnError)
	cfg.registerFlags(fs)
	err = parseFlags(fs, []string{"--kafka-brokers", broker.Addrs()[0], "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--model-export-frequency", "100ms"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	l, err := startLearner(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	closeRole := sync.OnceValue(l.close)
	t.Cleanup(func() { closeRole() })
	httpAddr := l.api.httpLis.Addr().String()
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: broker.Addrs(), Topic: eventlog.JoinedTopic})
	defer w.Close()
	write := func(first, last int) {
		t.Helper()
		var recs []eventlog.Record
		for i := first; i < last; i++ {
			recs = append(recs, eventlog.Record{Key: fmt.Appendf(nil, "default/j%d", i), Value: fmt.Appendf(nil,
				`{"_label_cost":-1,"_label_probability":0.5,"_label_Action":1,"_labelIndex":0,"EventId":"j%d","a":[1,2],"c":{"U":{"i":%d},"_multi":[{"A":{"x":1}},{"B":{"x":2}}]},"p":[0.5,0.5]}`, i, i)})
		}
		if err := w.Write(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what string, cond func(learner.Stats) bool) {
		t.Helper()
		if err := l.learner.Wait(ctx, cond); err != nil {
			t.Fatalf("waiting for %s: %v (learner %+v)", what, err, l.learner.Stats())
		}
	}

	write(0, 5)
	wait("a version of 5 examples", func(s learner.Stats) bool { return s.Version > 0 && s.Learned == 5 })
	v1 := l.learner.Stats().Version
	if st := healthz[learnerStatus](t, httpAddr); st.ModelVersion != v1 || st.Examples != 5 || st.Checkpoint.Failing || st.Checkpoint.LastWritten == nil {
		t.Errorf("/healthz before the outage: %+v", st)
	}

	repair := breakDir(t, cfg.Learner.Dir)
	write(5, 10)
	wait("failing checkpoints", func(s learner.Stats) bool { return s.Learned == 10 && s.CheckpointFailures >= 2 })
	waitHealth(ctx, t, l.api.grpcAddr(), checkpointService, healthpb.HealthCheckResponse_NOT_SERVING)
	waitHealth(ctx, t, l.api.grpcAddr(), "", healthpb.HealthCheckResponse_SERVING)
	if st := healthz[learnerStatus](t, httpAddr); st.ModelVersion != v1 || st.Examples != 10 || !st.Checkpoint.Failing || st.Checkpoint.Failures < 2 ||
		!strings.Contains(st.Checkpoint.Error, "not a directory") || st.Checkpoint.FailingSince == nil {
		t.Errorf("/healthz during the outage: %+v", st)
	}
	checkMetrics(t, scrape(t, httpAddr), map[string]float64{
		"personalizer_learner_checkpoint_failing{loop=\"default\"}": 1,
		"personalizer_learner_model_version{loop=\"default\"}":      float64(v1),
		"personalizer_learner_examples_total{loop=\"default\"}":     10,
	})

	repair()
	wait("the checkpoint after the repair", func(s learner.Stats) bool { return !s.CheckpointFailing })
	waitHealth(ctx, t, l.api.grpcAddr(), checkpointService, healthpb.HealthCheckResponse_SERVING)
	st := l.learner.Stats()
	if hs := healthz[learnerStatus](t, httpAddr); hs.ModelVersion != st.Version || st.Version <= v1 || hs.Checkpoint.Failing || hs.Checkpoint.Failures != st.CheckpointFailures ||
		hs.Checkpoint.Error != "" || hs.Checkpoint.FailingSince != nil {
		t.Errorf("/healthz after the repair: %+v, learner %+v", hs, st)
	}

	repair = breakDir(t, cfg.Learner.Dir)
	defer repair()
	write(10, 13)
	wait("13 learned", func(s learner.Stats) bool { return s.Learned == 13 })
	if err := closeRole(); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the last checkpoint could not be written; 3 examples learned since version %d", st.Version)) {
		t.Errorf("close: %v, want the last checkpoint's failure", err)
	}
}
