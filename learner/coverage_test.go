package learner

import (
	"context"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// TestVersionJoinedOffsets checks what a published version says it has
// learned (ModelInfo.joined_offsets) against what it learned, exactly:
// the learnable records before its offsets, read since its model was
// created, are the very events its model learned, and its model is the
// one learning exactly those lines in that order gives. The joined log
// mixes in what the learner reads but does not learn: repeats, another
// loop's record and a _skipLearn line; a reset starts a model that holds
// none of what came before.
func TestVersionJoinedOffsets(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const partitions = 3
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: partitions})
		var mu sync.Mutex
		var order []string // keys in the order the model learned them
		store := NewStore()
		l, err := New(Config{Loop: testLoop, Policy: bandit.DefaultPolicy, ExportEvery: time.Second, Dir: filepath.Join(t.TempDir(), "l"), Remember: 1000,
			Learned: func(key []byte, _ float32) {
				mu.Lock()
				order = append(order, string(key))
				mu.Unlock()
			}}, slog.New(slog.DiscardHandler), store, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- l.Run(ctx, func(_ context.Context, start map[int]int64) (eventlog.Reader, error) {
				return log.Reader(eventlog.JoinedTopic, start), nil
			})
		}()

		// write puts recs round robin on the partitions, as keys hash.
		n := 0
		write := func(recs ...eventlog.Record) {
			t.Helper()
			for _, r := range recs {
				r.Partition = n % partitions
				n++
				if err := log.Direct().Write(context.Background(), r); err != nil {
					t.Fatal(err)
				}
			}
		}
		other := joined(1000, 1001)[0]
		other.Key = []byte("other/e1000")
		skip := eventlog.Record{Topic: eventlog.JoinedTopic, Key: []byte(testLoop + "/skip"),
			Value: []byte(`{"_skipLearn":true,"a":[1],"c":{"_multi":[{"A":{"x":1}}]}}`)}

		// check compares version info with the log: from (the offsets
		// where its model started) to its offsets, and the learned order
		// from index first.
		check := func(v *eventsv1.GetModelResponse, from map[int32]int64, first int) {
			t.Helper()
			info := v.GetInfo()
			mu.Lock()
			learned := slices.Clone(order[first : first+int(info.GetExamples())])
			mu.Unlock()
			covered := map[string]bool{}
			seen := map[string]bool{}
			for p := range partitions {
				for _, r := range log.Records(eventlog.JoinedTopic, p) {
					if r.Offset < from[int32(p)] || r.Offset >= info.GetJoinedOffsets()[int32(p)] {
						continue
					}
					if k := string(r.Key); k != "other/e1000" && k != testLoop+"/skip" {
						covered[k] = true
					}
				}
			}
			for _, k := range learned {
				if seen[k] {
					t.Errorf("version %d learned %s twice", info.GetVersion(), k)
				}
				seen[k] = true
			}
			if !maps.Equal(seen, covered) {
				t.Errorf("version %d at offsets %v (from %v) learned %d events %v, its offsets cover %v",
					info.GetVersion(), info.GetJoinedOffsets(), from, len(learned), learned, slices.Sorted(maps.Keys(covered)))
			}
			byKey := map[string]eventlog.Record{}
			for p := range partitions {
				for _, r := range log.Records(eventlog.JoinedTopic, p) {
					byKey[string(r.Key)] = r
				}
			}
			var recs []eventlog.Record
			for _, k := range learned {
				recs = append(recs, byKey[k])
			}
			if want := learnRecords(t, freshModel(t, bandit.DefaultPolicy), recs); !slices.Equal(v.GetData(), want) {
				t.Errorf("version %d is not the model of the %d events it covers", info.GetVersion(), len(recs))
			}
		}

		var versions []*eventsv1.GetModelResponse
		step := func(recs ...eventlog.Record) *eventsv1.GetModelResponse {
			t.Helper()
			write(recs...)
			time.Sleep(time.Second)
			synctest.Wait()
			v := store.Latest()
			versions = append(versions, v)
			return v
		}
		v1 := step(joined(0, 7)...)
		v2 := step(slices.Concat(joined(7, 12), []eventlog.Record{other, skip}, joined(2, 4))...)
		v3 := step(joined(12, 20)...)
		if got := []uint64{v1.GetInfo().GetVersion(), v2.GetInfo().GetVersion(), v3.GetInfo().GetVersion()}; !slices.Equal(got, []uint64{1, 2, 3}) {
			t.Fatalf("versions %v, want 1, 2, 3", got)
		}
		if want := map[int32]int64{0: 8, 1: 8, 2: 8}; !maps.Equal(v3.GetInfo().GetJoinedOffsets(), want) {
			t.Errorf("version 3 at offsets %v, want every record read: %v", v3.GetInfo().GetJoinedOffsets(), want)
		}
		for _, v := range versions {
			check(v, nil, 0)
		}

		// A reset: the next version covers only what came after it.
		reset, err := l.Reset(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		first := len(order)
		mu.Unlock()
		if reset.GetExamples() != 0 || !maps.Equal(reset.GetJoinedOffsets(), v3.GetInfo().GetJoinedOffsets()) {
			t.Errorf("reset version %v, want 0 examples at version 3's offsets", reset)
		}
		v5 := step(joined(20, 25)...)
		if v5.GetInfo().GetVersion() != 5 || v5.GetInfo().GetExamples() != 5 {
			t.Fatalf("after the reset: %v, want version 5 of 5 examples", v5.GetInfo())
		}
		check(v5, reset.GetJoinedOffsets(), first)

		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := len(order); got != 25 {
			t.Errorf("learned %d events, want 25", got)
		}
	})
}
