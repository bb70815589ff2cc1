package learner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/loop"
)

// Two policies other than the default one.
const (
	policyB = "--cb_explore_adf --epsilon 0.1 --power_t 0 -l 0.01 --cb_type ips -q ::"
	policyC = "--cb_explore_adf --epsilon 0.3 --cb_type dr"
)

// modelBytes returns m in bandit's file format.
func modelBytes(t *testing.T, m *bandit.Model) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// freshModel returns a new model of policy in bandit's file format.
func freshModel(t *testing.T, policy string) []byte {
	t.Helper()
	p, err := bandit.ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	return modelBytes(t, bandit.NewModel(p))
}

// learnRecords returns the model file data after learning recs' lines.
func learnRecords(t *testing.T, data []byte, recs []eventlog.Record) []byte {
	t.Helper()
	m, err := bandit.ReadModel(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var (
		parser bandit.DSJSONParser
		ev     bandit.Event
		pred   bandit.Prediction
	)
	for _, r := range recs {
		ev.Reset()
		if err := parser.Parse(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		m.Learn(&ev, &pred)
	}
	return modelBytes(t, m)
}

// predictions returns the PMF the model file data gives each of recs.
func predictions(t *testing.T, data []byte, recs []eventlog.Record) []string {
	t.Helper()
	m, err := bandit.ReadModel(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var (
		parser bandit.DSJSONParser
		ev     bandit.Event
		pred   bandit.Prediction
		out    []string
	)
	for _, r := range recs {
		ev.Reset()
		if err := parser.Parse(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		m.Predict(&ev, &pred)
		out = append(out, fmt.Sprint(pred.PMF()))
	}
	return out
}

// sameModel checks that the published model file got is want, byte for
// byte, and predicts as want does.
func sameModel(t *testing.T, got, want []byte, probe []eventlog.Record) {
	t.Helper()
	if g, w := predictions(t, got, probe), predictions(t, want, probe); !slices.Equal(g, w) {
		t.Errorf("predictions %v, want %v", g, w)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("model of %d bytes differs from the expected one of %d", len(got), len(want))
	}
}

// clock returns the test's at(d): sleep until start+d, then let the
// learner finish what is due.
func clock(start time.Time) func(time.Duration) {
	return func(d time.Duration) {
		time.Sleep(time.Until(start.Add(d)))
		synctest.Wait()
	}
}

func writeRecs(t *testing.T, log *eventlog.Mem, recs ...eventlog.Record) {
	t.Helper()
	if err := log.Write(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
}

// TestReset resets a learner: the version published at once has
// Examples 0, the reset's time as ModelCreated and a fresh model's bytes
// and predictions; the learner then learns on from there, and the next
// version is the fresh model trained on the events since.
func TestReset(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		at := clock(start)
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 1})
		r := startRun(t, log, dir)
		writeRecs(t, log, joined(0, 10)...)
		at(10 * time.Second)
		if info := r.store.Latest().GetInfo(); info.GetVersion() != 1 || info.GetExamples() != 10 || !info.GetModelCreated().AsTime().Equal(start) {
			t.Fatalf("before the reset: %v, want version 1 of 10 examples, model created at the start", info)
		}

		at(12 * time.Second)
		info, err := r.l.Reset(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		latest := r.store.Latest()
		if latest.GetInfo() != info || info.GetVersion() != 2 || info.GetExamples() != 0 || !info.GetModelCreated().AsTime().Equal(start.Add(12*time.Second)) {
			t.Errorf("Reset = %v, published %v; want version 2 of 0 examples created at 12s", info, latest.GetInfo())
		}
		fresh := freshModel(t, bandit.DefaultPolicy)
		sameModel(t, latest.GetData(), fresh, joined(0, 10))
		if st := r.l.Stats(); st.Version != 2 || st.Examples != 0 || st.Learned != 10 || st.Resets != 1 || !st.ModelCreated.Equal(start.Add(12*time.Second)) {
			t.Errorf("stats after the reset: %+v", st)
		}
		checkCheckpoint(t, dir, 2, 0, map[int]int64{0: 10}, keySet(0, 10))

		// It learns on; the events it learned before stay remembered.
		writeRecs(t, log, joined(10, 15)...)
		writeRecs(t, log, joined(3, 4)...)
		at(20 * time.Second)
		latest = r.store.Latest()
		if info := latest.GetInfo(); info.GetVersion() != 3 || info.GetExamples() != 5 || !info.GetModelCreated().AsTime().Equal(start.Add(12*time.Second)) {
			t.Errorf("after the reset: %v, want version 3 of 5 examples created at 12s", info)
		}
		sameModel(t, latest.GetData(), learnRecords(t, fresh, joined(10, 15)), joined(0, 15))
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		if st := r.l.Stats(); st.Learned != 15 || st.Duplicates != 1 || st.Examples != 5 {
			t.Errorf("stats: %+v, want 15 learned all time, 5 since the reset, 1 duplicate", st)
		}

		// A restart resumes the reset model, with its creation time.
		r2 := startRun(t, log, dir)
		synctest.Wait()
		if st := r2.l.Stats(); st.Version != 3 || st.Examples != 5 || st.Learned != 15 || !st.ModelCreated.Equal(start.Add(12*time.Second)) {
			t.Errorf("restart: %+v", st)
		}
		if err := r2.stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestImport imports a model that Train wrote (personalizer train -f),
// of another policy: the published version is that model, byte for byte,
// and predicts as it does, and learning goes on from it. Files that are
// not such a model are ErrBadModel and change nothing.
func TestImport(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "learner")
	data := filepath.Join(t.TempDir(), "train.dsjson")
	var lines []byte
	for _, r := range joined(100, 140) {
		lines = append(append(lines, r.Value...), '\n')
	}
	if err := os.WriteFile(data, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(t.TempDir(), "model")
	if _, err := Train(t.Context(), TrainConfig{Data: data, Policy: policyB, Final: final, Quiet: true}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(final)
	if err != nil {
		t.Fatal(err)
	}

	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		at := clock(start)
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 1})
		r := startRun(t, log, dir)
		writeRecs(t, log, joined(0, 10)...)
		at(10 * time.Second)
		before := r.store.Latest()
		ckpt, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
		if err != nil {
			t.Fatal(err)
		}

		flipped := bytes.Clone(file)
		flipped[len(flipped)/2] ^= 0x40
		bad := []struct {
			name string
			data []byte
		}{
			{"empty", nil},
			{"not a model", []byte("{\"weights\": [1, 2, 3]}\n")},
			{"truncated", file[:len(file)/2]},
			{"one byte changed", flipped},
			{"a learner checkpoint", ckpt},
		}
		for _, tt := range bad {
			info, err := r.l.Import(t.Context(), tt.data)
			if !errors.Is(err, ErrBadModel) || info != nil {
				t.Errorf("%s: Import = %v, %v; want ErrBadModel", tt.name, info, err)
			}
			t.Logf("%s: %v", tt.name, err)
		}
		synctest.Wait()
		if r.store.Latest() != before {
			t.Errorf("bad imports published %v", r.store.Latest().GetInfo())
		}
		if st := r.l.Stats(); st.Version != 1 || st.Examples != 10 || st.Imports != 0 || st.Policy != bandit.DefaultPolicy {
			t.Errorf("stats after bad imports: %+v", st)
		}
		if now, _ := os.ReadFile(filepath.Join(dir, "checkpoint")); !bytes.Equal(now, ckpt) {
			t.Error("bad imports changed the checkpoint")
		}
		// The learner goes on learning into the same model.
		writeRecs(t, log, joined(10, 12)...)
		at(15 * time.Second)
		info, err := r.l.Import(t.Context(), file)
		if err != nil {
			t.Fatal(err)
		}
		if latest := r.store.Latest(); latest.GetInfo() != info || info.GetVersion() != 2 || info.GetExamples() != 0 ||
			!info.GetModelCreated().AsTime().Equal(start.Add(15*time.Second)) {
			t.Errorf("Import = %v, published %v; want version 2 of 0 examples created at 15s", info, latest.GetInfo())
		}
		sameModel(t, r.store.Latest().GetData(), file, joined(0, 20))
		if st := r.l.Stats(); st.Policy != policyB || st.Imports != 1 || st.Learned != 12 {
			t.Errorf("stats after the import: %+v", st)
		}

		writeRecs(t, log, joined(12, 20)...)
		at(20 * time.Second)
		if info := r.store.Latest().GetInfo(); info.GetVersion() != 3 || info.GetExamples() != 8 {
			t.Errorf("after the import: %v, want version 3 of 8 examples", info)
		}
		sameModel(t, r.store.Latest().GetData(), learnRecords(t, file, joined(12, 20)), joined(0, 20))
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}

		// A restart with the flags' policy resumes the imported model:
		// the flags' policy is still the one configured.
		r2 := startRun(t, log, dir)
		synctest.Wait()
		if st := r2.l.Stats(); st.Version != 3 || st.Policy != policyB || st.Examples != 8 || !st.ModelCreated.Equal(start.Add(15*time.Second)) {
			t.Errorf("restart: %+v", st)
		}
		if err := r2.stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestCommandsWithoutRun: without Run, commands end with their context.
func TestCommandsWithoutRun(t *testing.T) {
	t.Parallel()
	l, err := New(Config{Loop: testLoop, Policy: bandit.DefaultPolicy, ExportEvery: time.Second, Dir: t.TempDir(), Remember: 10},
		testLogger(), NewStore(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := l.Reset(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Reset = %v, want DeadlineExceeded", err)
	}
	if _, err := l.Import(ctx, freshModel(t, bandit.DefaultPolicy)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Import = %v, want DeadlineExceeded", err)
	}
}

// TestExportFrequency follows the configuration's export frequency: the
// flags' cadence while the registry has none, then each new frequency at
// once, the export timer restarted.
func TestExportFrequency(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		at := clock(start)
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 2})
		reg := loop.NewRegistry()
		r := startConfig(t, log, Config{Loop: testLoop, Policy: bandit.DefaultPolicy, ExportEvery: 10 * time.Second, Dir: dir, Remember: 100, Configs: reg})
		version := func() uint64 { return r.store.Latest().GetInfo().GetVersion() }

		// No configuration: the flags' 10s.
		writeRecs(t, log, joined(0, 5)...)
		at(9 * time.Second)
		if v := version(); v != 0 {
			t.Fatalf("version %d at 9s", v)
		}
		at(10 * time.Second)
		if v := version(); v != 1 {
			t.Fatalf("version %d at 10s, want 1", v)
		}

		// At 12s, every 3s: from 12s, not from the last export.
		at(12 * time.Second)
		cfg := loop.Default(testLoop)
		cfg.Service.ModelExportFrequency = loop.Duration(3 * time.Second)
		reg.Set(cfg)
		writeRecs(t, log, joined(5, 10)...)
		at(14 * time.Second)
		if v, st := version(), r.l.Stats(); v != 1 || st.ExportEvery != 3*time.Second {
			t.Fatalf("at 14s: version %d, cadence %v; want 1, 3s", v, st.ExportEvery)
		}
		at(15 * time.Second)
		if v := version(); v != 2 {
			t.Fatalf("version %d at 15s, want 2", v)
		}

		// At 16s, every 20s: the export due at 18s moves to 36s.
		at(16 * time.Second)
		next := *cfg
		next.Version++
		next.Service.ModelExportFrequency = loop.Duration(20 * time.Second)
		reg.Set(&next)
		writeRecs(t, log, joined(10, 12)...)
		at(35 * time.Second)
		if v := version(); v != 2 {
			t.Fatalf("version %d at 35s, want 2", v)
		}
		at(36 * time.Second)
		if info := r.store.Latest().GetInfo(); info.GetVersion() != 3 || info.GetExamples() != 12 {
			t.Fatalf("at 36s: %v, want version 3 of 12 examples", info)
		}
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		if st := r.l.Stats(); st.PolicyChanges != 0 || st.Retraining {
			t.Errorf("the default policy retrained: %+v", st)
		}
		var changes int
		for _, m := range r.logs.lines(t, "INFO") {
			if m["msg"] == "model export frequency changed" {
				changes++
			}
		}
		if changes != 2 {
			t.Errorf("%d export frequency changes logged, want 2", changes)
		}
	})
}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// memOffsetsAt is kafkalog.OffsetsAt for partition 0 of log's joined
// topic. Each call tells asked the time asked for, then waits for the
// test's answer: an error to fail with, or nil to answer.
func memOffsetsAt(log *eventlog.Mem, asked chan<- time.Time, answer <-chan error) func(context.Context, time.Time) (map[int]int64, error) {
	return func(ctx context.Context, at time.Time) (map[int]int64, error) {
		select {
		case asked <- at:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case err := <-answer:
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		recs := log.Records(eventlog.JoinedTopic, 0)
		i, _ := slices.BinarySearchFunc(recs, at, func(r eventlog.Record, at time.Time) int { return r.Time.Compare(at) })
		return map[int]int64{0: int64(i)}, nil
	}
}

// trainLines trains a model of policy offline, with Train, on the lines
// of recs, and returns its model file.
func trainLines(t *testing.T, policy string, recs []eventlog.Record) []byte {
	t.Helper()
	dir := t.TempDir()
	var lines []byte
	for _, r := range recs {
		lines = append(append(lines, r.Value...), '\n')
	}
	data, final := filepath.Join(dir, "data.dsjson"), filepath.Join(dir, "model")
	if err := os.WriteFile(data, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Train(context.Background(), TrainConfig{Data: data, Policy: policy, Final: final, Quiet: true}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(final)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPolicyChange changes the configured policy of a learner whose log
// holds events older than the retrain window, then events within it
// mixed with repeats, other loops' records and a malformed line. While
// it retrains, the old model is served and live learning waits; a
// retrain that cannot find its offsets keeps the old model and policy
// and is tried again 5s later. The model swapped in is exactly what
// Train makes of the window's events with the new policy, and it learns
// on from there. A restart keeps it, and a retrain cut short by shutdown
// changes nothing.
func TestPolicyChange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		at := clock(start)
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 1})
		reg := loop.NewRegistry(loop.Default(testLoop))
		asked, answer := make(chan time.Time), make(chan error)
		cfg := Config{
			Loop: testLoop, Policy: bandit.DefaultPolicy, ExportEvery: 10 * time.Minute, Dir: dir, Remember: 1000,
			Configs: reg, RetrainWindow: time.Hour, OffsetsAt: memOffsetsAt(log, asked, answer),
		}
		r := startConfig(t, log, cfg)
		other := func(i int) eventlog.Record {
			rec := joined(i, i+1)[0]
			rec.Key = fmt.Appendf(nil, "other/e%d", i)
			return rec
		}

		// Old events, out of the window when the policy changes.
		writeRecs(t, log, joined(0, 10)...)
		at(10 * time.Minute) // version 1
		// Events within it, at 2h01m: 23 to learn.
		at(2*time.Hour + time.Minute)
		writeRecs(t, log, joined(10, 25)...)
		writeRecs(t, log, joined(12, 14)...)
		writeRecs(t, log, other(50), eventlog.Record{Topic: eventlog.JoinedTopic, Key: []byte(testLoop + "/bad"), Value: []byte("{not json")})
		writeRecs(t, log, joined(25, 30)...)
		synctest.Wait()
		v1 := r.store.Latest()
		if st := r.l.Stats(); v1.GetInfo().GetVersion() != 1 || st.Learned != 30 || st.Duplicates != 2 || st.OtherLoops != 1 || st.Malformed != 1 {
			t.Fatalf("before the change: version %d, %+v", v1.GetInfo().GetVersion(), st)
		}

		// At 2h02m the policy changes: the retrain asks where the last
		// hour starts, and waits for the answer.
		at(2*time.Hour + 2*time.Minute)
		changed := time.Now()
		cfgB, err := reg.Get(testLoop).SetPolicy(loop.Policy{Name: "b", Arguments: policyB}, changed)
		if err != nil {
			t.Fatal(err)
		}
		reg.Set(cfgB)
		if got := <-asked; !got.Equal(changed.Add(-time.Hour)) {
			t.Errorf("OffsetsAt(%v), want an hour before the change, %v", got, changed.Add(-time.Hour))
		}
		writeRecs(t, log, joined(30, 33)...) // waits in the log
		synctest.Wait()
		if st := r.l.Stats(); !st.Retraining || st.Learned != 30 || st.Policy != bandit.DefaultPolicy {
			t.Errorf("retraining: %+v, want Retraining, 30 learned, the old policy", st)
		}

		// It fails: the old model and policy stay, learning goes on.
		answer <- errors.New("broker unavailable")
		synctest.Wait()
		if st := r.l.Stats(); st.Retraining || st.RetrainFailures != 1 || st.PolicyChanges != 0 || st.Learned != 33 || st.Policy != bandit.DefaultPolicy {
			t.Errorf("after a failed retrain: %+v", st)
		}
		if r.store.Latest() != v1 {
			t.Errorf("a failed retrain published %v", r.store.Latest().GetInfo())
		}
		warns := slices.DeleteFunc(r.logs.lines(t, "WARN"), func(m map[string]any) bool { return m["msg"] == "skipping malformed joined event" })
		if len(warns) != 1 || warns[0]["msg"] != "policy change: retraining failed; the current model and policy stay" || warns[0]["retry_in"] != float64(5*time.Second) {
			t.Errorf("WARN lines %v, want the failed retrain", warns)
		}

		// 5s later it retrains again, and takes its time: the export
		// due at 2h10m waits, servers keep version 1.
		retried := changed.Add(5 * time.Second)
		if got := <-asked; !got.Equal(retried.Add(-time.Hour)) || !time.Now().Equal(retried) {
			t.Errorf("retry at %v asked for %v, want at %v for an hour before", time.Now(), got, retried)
		}
		at(2*time.Hour + 15*time.Minute)
		if st := r.l.Stats(); !st.Retraining || r.store.Latest() != v1 {
			t.Errorf("retraining again: %+v, version %v; want version 1 served", st, r.store.Latest().GetInfo())
		}
		answer <- nil
		synctest.Wait()

		// The window's events, in log order, repeats and other loops
		// left out, make the new model.
		window := slices.Concat(joined(10, 25), joined(25, 30), joined(30, 33))
		want := trainLines(t, policyB, window)
		swapped := r.store.Latest()
		if info := swapped.GetInfo(); info.GetVersion() != 2 || info.GetExamples() != 23 || !info.GetModelCreated().AsTime().Equal(start.Add(2*time.Hour+15*time.Minute)) {
			t.Errorf("swapped in: %v, want version 2 of 23 examples created at 2h15m", info)
		}
		sameModel(t, swapped.GetData(), want, joined(0, 40))
		if st := r.l.Stats(); st.Retraining || st.RetrainLearned != 23 || st.PolicyChanges != 1 || st.RetrainFailures != 1 ||
			st.Policy != policyB || st.Examples != 23 || st.Learned != 33 {
			t.Errorf("after the policy change: %+v", st)
		}
		var started, done int
		for _, m := range r.logs.lines(t, "INFO") {
			switch m["msg"] {
			case "policy change: retraining":
				started++
			case "policy change: retrained":
				done++
				if m["examples"] != 23.0 || m["duplicates"] != 2.0 || m["other_loops"] != 1.0 || m["malformed"] != 1.0 || m["to"] != policyB {
					t.Errorf("end of retrain logged as %v", m)
				}
			}
		}
		if started != 2 || done != 1 {
			t.Errorf("%d retrain starts and %d ends logged, want 2 and 1", started, done)
		}

		// It learns on.
		writeRecs(t, log, joined(33, 36)...)
		at(2*time.Hour + 30*time.Minute)
		if info := r.store.Latest().GetInfo(); info.GetVersion() != 3 || info.GetExamples() != 26 {
			t.Errorf("learning on: %v, want version 3 of 26 examples", info)
		}
		sameModel(t, r.store.Latest().GetData(), trainLines(t, policyB, slices.Concat(window, joined(33, 36))), joined(0, 40))
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}

		// A restart keeps the new model: nothing to retrain.
		r2 := startConfig(t, log, cfg)
		synctest.Wait()
		if st := r2.l.Stats(); st.Version != 3 || st.Policy != policyB || st.Retraining || st.PolicyChanges != 0 {
			t.Errorf("restart: %+v", st)
		}
		// Another change, cut short by shutdown: nothing changes.
		cfgC, err := reg.Get(testLoop).SetPolicy(loop.Policy{Name: "c", Arguments: policyC}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		reg.Set(cfgC)
		<-asked
		if err := r2.stop(); err != nil {
			t.Fatal(err)
		}
		if st := r2.l.Stats(); st.Version != 3 || st.Policy != policyB || st.Retraining || st.RetrainFailures != 0 {
			t.Errorf("after a retrain cut short: %+v", st)
		}
		data, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
		if err != nil {
			t.Fatal(err)
		}
		if c, err := unmarshalCheckpoint(data); err != nil || c.version != 3 || c.configured != policyB {
			t.Errorf("checkpoint after a retrain cut short: version %d configured %q, %v", c.version, c.configured, err)
		}
	})
}

// TestPolicyChangeEmpty: with no retrain window the new model starts
// empty, at once.
func TestPolicyChangeEmpty(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 2})
		reg := loop.NewRegistry(loop.Default(testLoop))
		r := startConfig(t, log, Config{Loop: testLoop, Policy: bandit.DefaultPolicy, ExportEvery: time.Minute, Dir: t.TempDir(), Remember: 100, Configs: reg})
		writeRecs(t, log, joined(0, 10)...)
		synctest.Wait()
		cfgB, err := reg.Get(testLoop).SetPolicy(loop.Policy{Name: "b", Arguments: policyB}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		reg.Set(cfgB)
		synctest.Wait()
		if info := r.store.Latest().GetInfo(); info.GetVersion() != 1 || info.GetExamples() != 0 {
			t.Errorf("after the change: %v, want version 1 of 0 examples", info)
		}
		sameModel(t, r.store.Latest().GetData(), freshModel(t, policyB), joined(0, 10))
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	})
}
