package learner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
)

// lockedBuffer is a log destination the learner writes from its own
// goroutine while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// lines returns the JSON log lines at level.
func (b *lockedBuffer) lines(t *testing.T, level string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["level"] == level {
			out = append(out, m)
		}
	}
	return out
}

const testLoop = "test"

// joined returns the joined records of events first..last-1 (keys
// test/eN), as the joiner writes them.
func joined(first, last int) []eventlog.Record {
	var recs []eventlog.Record
	for i := first; i < last; i++ {
		line := fmt.Sprintf(`{"_label_cost":%d,"_label_probability":0.5,"_label_Action":%d,"_labelIndex":%d,"EventId":"e%d","a":[%d,%d],`+
			`"c":{"U":{"i":%d,"k":"k%d"},"_multi":[{"A":{"x":1}},{"B":{"x":2}}]},"p":[0.5,0.5]}`,
			-(i % 2), i%2+1, i%2, i, i%2+1, 2-i%2, i, i%3)
		recs = append(recs, eventlog.Record{Topic: eventlog.JoinedTopic, Key: fmt.Appendf(nil, "%s/e%d", testLoop, i), Value: []byte(line)})
	}
	return recs
}

// run is one learner process: a learner on the joined topic of log,
// checkpointing in dir, and the keys it learned.
type run struct {
	l      *Learner
	store  *Store
	logs   *lockedBuffer
	cancel context.CancelFunc
	done   chan error

	mu      sync.Mutex
	learned map[string]int
}

// startRun starts a learner in dir; call it inside the test's bubble.
func startRun(t *testing.T, log *eventlog.Mem, dir string) *run {
	t.Helper()
	return startConfig(t, log, Config{Loop: testLoop, Policy: bandit.DefaultPolicy, ExportEvery: 10 * time.Second, Dir: dir, Remember: 1000})
}

// startConfig starts a learner of cfg, recording what it learns; call it
// inside the test's bubble.
func startConfig(t *testing.T, log *eventlog.Mem, cfg Config) *run {
	t.Helper()
	r := &run{store: NewStore(), logs: new(lockedBuffer), done: make(chan error, 1), learned: map[string]int{}}
	cfg.Learned = func(key []byte, _ float32) {
		r.mu.Lock()
		r.learned[string(key)]++
		r.mu.Unlock()
	}
	var err error
	r.l, err = New(cfg, slog.New(slog.NewJSONHandler(r.logs, nil)), r.store, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.done <- r.l.Run(ctx, func(_ context.Context, start map[int]int64) (eventlog.Reader, error) {
			return log.Reader(eventlog.JoinedTopic, start), nil
		})
	}()
	return r
}

// stop ends Run and returns its error.
func (r *run) stop() error {
	r.cancel()
	return <-r.done
}

// keys returns the keys learned, each with how often.
func (r *run) keys() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.learned)
}

// keySet returns the keys of events first..last-1, each once.
func keySet(first, last int) map[string]int {
	m := map[string]int{}
	for i := first; i < last; i++ {
		m[fmt.Sprintf("%s/e%d", testLoop, i)] = 1
	}
	return m
}

// breakDir makes dir unusable in a way that holds for root too: it moves
// the directory aside and puts a regular file in its place, so creating
// the checkpoint's temporary file fails. The returned func repairs it.
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

// TestCheckpointOutage breaks the checkpoint's directory under a running
// learner: learning goes on in memory, the failures are retried with
// backoff (1s, 2s, 4s, 8s, then every ExportEvery of 10s) and counted
// exactly, no version is published, and the log has one ERROR line when
// the streak starts and a summary a minute later. Repaired, the next
// attempt writes a checkpoint that holds exactly the offsets and keys
// learned; a last checkpoint that fails at shutdown is an error; and
// restarts from the checkpoints learn every event exactly once.
func TestCheckpointOutage(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "learner")
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		at := func(d time.Duration) { // sleeps until start+d, then lets the learner finish what is due
			time.Sleep(time.Until(start.Add(d)))
			synctest.Wait()
		}
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 2})
		write := func(recs []eventlog.Record) {
			t.Helper()
			if err := log.Write(context.Background(), recs...); err != nil {
				t.Fatal(err)
			}
		}
		r1 := startRun(t, log, dir)

		// Ten events, checkpointed as version 1 at 10s.
		write(joined(0, 10))
		at(10 * time.Second)
		if st := r1.l.Stats(); st.Version != 1 || st.Learned != 10 || st.CheckpointFailures != 0 || st.CheckpointFailing || !st.LastCheckpoint.Equal(start.Add(10*time.Second)) {
			t.Fatalf("before the outage: %+v", st)
		}

		// The directory breaks: ten more events and two repeats are
		// learned in memory; the export at 20s fails, and so do the
		// retries at 21s, 23s, 27s and 35s.
		repair := breakDir(t, dir)
		write(joined(10, 20))
		write(joined(0, 2))
		at(36 * time.Second)
		st := r1.l.Stats()
		if st.Learned != 20 || st.Duplicates != 2 || st.Version != 1 {
			t.Errorf("during the outage: %+v, want 20 learned, 2 duplicates, version 1", st)
		}
		if st.CheckpointFailures != 5 || !st.CheckpointFailing || !st.FailingSince.Equal(start.Add(20*time.Second)) ||
			!strings.Contains(st.CheckpointError, "not a directory") || !st.LastCheckpoint.Equal(start.Add(10*time.Second)) {
			t.Errorf("during the outage: %+v, want 5 failures since 20s, failing with the error", st)
		}
		if info := r1.store.Latest().GetInfo(); info.GetVersion() != 1 || info.GetExamples() != 10 {
			t.Errorf("published during the outage: %v, want version 1 of 10 examples", info)
		}
		if errs := r1.logs.lines(t, "ERROR"); len(errs) != 1 || errs[0]["msg"] != "checkpoint not written; learning goes on in memory, servers keep the last checkpointed version" {
			t.Errorf("ERROR lines %v, want the streak's first", errs)
		}

		// Retries every 10s from 35s: at 45s, ..., 95s, eleven failures
		// in all; the one at 85s is a minute after the first and is
		// summed up.
		at(100 * time.Second)
		st = r1.l.Stats()
		if st.CheckpointFailures != 11 || !st.CheckpointFailing || !st.FailingSince.Equal(start.Add(20*time.Second)) {
			t.Errorf("at 100s: %+v, want 11 failures since 20s", st)
		}
		errs := r1.logs.lines(t, "ERROR")
		if len(errs) != 2 || errs[1]["msg"] != "checkpoints still failing" || errs[1]["failures"] != 9.0 || errs[1]["failures_in_streak"] != 10.0 {
			t.Errorf("ERROR lines %v, want the first and a summary of 9 more failures", errs)
		}

		// Repaired, the retry at 105s writes version 2.
		repair()
		at(105 * time.Second)
		st = r1.l.Stats()
		if st.Version != 2 || st.Learned != 20 || st.CheckpointFailures != 11 || st.CheckpointFailing || st.CheckpointError != "" ||
			!st.FailingSince.IsZero() || !st.LastCheckpoint.Equal(start.Add(105*time.Second)) {
			t.Errorf("after the repair: %+v, want version 2, 11 failures, not failing", st)
		}
		if info := r1.store.Latest().GetInfo(); info.GetVersion() != 2 || info.GetExamples() != 20 {
			t.Errorf("published after the repair: %v, want version 2 of 20 examples", info)
		}
		infos := r1.logs.lines(t, "INFO")
		if !slices.ContainsFunc(infos, func(m map[string]any) bool {
			return m["msg"] == "checkpoint written again; publishing model versions again" && m["failures"] == 11.0 && m["failing_for"] == float64(85*time.Second)
		}) {
			t.Errorf("no recovery line in %v", infos)
		}
		if n := len(r1.logs.lines(t, "ERROR")); n != 2 {
			t.Errorf("%d ERROR lines, want 2", n)
		}
		// The checkpoint holds exactly what was learned: every record
		// read, the keys of the 20 events.
		checkCheckpoint(t, dir, 2, 20, map[int]int64{0: int64(len(log.Records(eventlog.JoinedTopic, 0))), 1: int64(len(log.Records(eventlog.JoinedTopic, 1)))}, keySet(0, 20))

		// Five more events; then the directory breaks again and the
		// last checkpoint, at shutdown, fails: Run says so.
		write(joined(20, 25))
		synctest.Wait()
		repair = breakDir(t, dir)
		err := r1.stop()
		if err == nil || !strings.Contains(err.Error(), "the last checkpoint could not be written; 5 examples learned since version 2 are not in it") {
			t.Errorf("Run at shutdown: %v, want the last checkpoint's failure", err)
		}
		if st := r1.l.Stats(); st.CheckpointFailures != 12 || st.Learned != 25 || st.Version != 2 {
			t.Errorf("after shutdown: %+v, want 12 failures, 25 learned, version 2", st)
		}
		if got, want := r1.keys(), keySet(0, 25); !maps.Equal(got, want) {
			t.Errorf("first learner learned %v, want %v", got, want)
		}
		repair()

		// A restart resumes from version 2 and learns once what it did
		// not hold, the last five events, then new events, dropping
		// repeats of events in the checkpoint and of events it learned.
		r2 := startRun(t, log, dir)
		synctest.Wait()
		if st := r2.l.Stats(); st.Version != 2 || st.Learned != 25 || st.Duplicates != 0 || st.CheckpointFailures != 0 || st.LastCheckpoint.IsZero() {
			t.Errorf("restart: %+v, want version 2 and 25 learned", st)
		}
		if got, want := r2.keys(), keySet(20, 25); !maps.Equal(got, want) {
			t.Errorf("restart learned %v, want %v", got, want)
		}
		write(joined(25, 27))
		write(append(joined(3, 4), append(joined(21, 22), joined(10, 11)...)...))
		synctest.Wait()
		if err := r2.stop(); err != nil {
			t.Fatal(err)
		}
		if st := r2.l.Stats(); st.Version != 3 || st.Learned != 27 || st.Duplicates != 3 {
			t.Errorf("restart: %+v, want version 3, 27 learned, 3 duplicates", st)
		}
		if got, want := r2.keys(), keySet(20, 27); !maps.Equal(got, want) {
			t.Errorf("restart learned %v, want %v", got, want)
		}
		checkCheckpoint(t, dir, 3, 27, map[int]int64{0: int64(len(log.Records(eventlog.JoinedTopic, 0))), 1: int64(len(log.Records(eventlog.JoinedTopic, 1)))}, keySet(0, 27))

		// A restart from a checkpoint that holds everything learns
		// nothing and reads no record twice.
		r3 := startRun(t, log, dir)
		synctest.Wait()
		if err := r3.stop(); err != nil {
			t.Fatal(err)
		}
		if st := r3.l.Stats(); st.Version != 3 || st.Learned != 27 || st.Duplicates != 0 {
			t.Errorf("second restart: %+v, want version 3, 27 learned, nothing read", st)
		}
		if got := r3.keys(); len(got) != 0 {
			t.Errorf("second restart learned %v", got)
		}
	})
}

// checkCheckpoint checks the checkpoint in dir: its version and examples,
// the next offset of every partition, and the keys it remembers.
func checkCheckpoint(t *testing.T, dir string, version, examples uint64, offsets map[int]int64, keys map[string]int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := unmarshalCheckpoint(data)
	if err != nil {
		t.Fatal(err)
	}
	if c.version != version || c.examples != examples || !maps.Equal(c.offsets, offsets) {
		t.Errorf("checkpoint version %d of %d examples at offsets %v, want version %d of %d at %v", c.version, c.examples, c.offsets, version, examples, offsets)
	}
	want := newDedupe(len(keys))
	for k := range keys {
		want.add([]byte(k))
	}
	got := slices.Sorted(slices.Values(c.seen))
	if w := slices.Sorted(slices.Values(want.keys())); !slices.Equal(got, w) {
		t.Errorf("checkpoint remembers %d keys, want the %d learned", len(got), len(w))
	}
	matches, err := filepath.Glob(filepath.Join(dir, "checkpoint.tmp*"))
	if err != nil || len(matches) != 0 {
		t.Errorf("temporary files left: %v %v", matches, err)
	}
}
