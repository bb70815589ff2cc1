package learner

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// TestHistoryAndRollback keeps the last 3 versions: older ones are not
// kept (GetModel NotFound, saying which are), a kept one is served by
// GetModel, a rollback publishes its model as the next version and
// learning goes on from it, and a restart keeps the history.
func TestHistoryAndRollback(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		at := clock(start)
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 1})
		cfg := Config{Loop: testLoop, Policy: bandit.DefaultPolicy, ExportEvery: 10 * time.Second, Dir: dir, Remember: 1000, History: 3}
		r := startConfig(t, log, cfg)
		data := map[uint64][]byte{}
		for v := range uint64(5) { // versions 1 to 5, of 2, 4, ... 10 examples
			writeRecs(t, log, joined(int(2*v), int(2*v+2))...)
			at(time.Duration(v+1) * 10 * time.Second)
			latest := r.store.Latest()
			if latest.GetInfo().GetVersion() != v+1 {
				t.Fatalf("version %v, want %d", latest.GetInfo(), v+1)
			}
			data[v+1] = latest.GetData()
		}
		svc := NewService(testLoop, r.store, r.l)
		list, err := svc.ListModels(t.Context(), &eventsv1.ListModelsRequest{Loop: testLoop})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, info := range list.GetModels() {
			got = append(got, fmt.Sprintf("%d:%d:%d", info.GetVersion(), info.GetExamples(), info.GetRollbackOf()))
		}
		if want := []string{"5:10:0", "4:8:0", "3:6:0"}; !slices.Equal(got, want) {
			t.Errorf("ListModels = %v, want %v (version:examples:rollbackOf, newest first)", got, want)
		}
		if _, err := svc.ListModels(t.Context(), &eventsv1.ListModelsRequest{Loop: "other"}); status.Code(err) != codes.NotFound {
			t.Errorf("ListModels(other loop) = %v, want NotFound", err)
		}
		for v := uint64(1); v <= 5; v++ {
			mv, err := svc.GetModel(t.Context(), &eventsv1.GetModelRequest{Loop: testLoop, Version: v})
			switch {
			case v <= 2:
				if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != fmt.Sprintf("model version %d is not kept; the learner keeps the last 3 versions, now 3 to 5", v) {
					t.Errorf("GetModel(%d) = %v, want NotFound naming versions 3 to 5", v, err)
				}
			case err != nil || !bytes.Equal(mv.GetData(), data[v]) || mv.GetInfo().GetVersion() != v || mv.GetInfo().GetExamples() != 2*v:
				t.Errorf("GetModel(%d) = %v, %v", v, mv.GetInfo(), err)
			}
		}
		if _, err := r.l.Rollback(t.Context(), 1); !errors.Is(err, ErrNotKept) {
			t.Errorf("Rollback(1) = %v, want ErrNotKept", err)
		}
		if _, err := svc.RollbackModel(t.Context(), &eventsv1.RollbackModelRequest{Loop: testLoop, Version: 2}); status.Code(err) != codes.NotFound {
			t.Errorf("RollbackModel(2) = %v, want NotFound", err)
		}

		at(55 * time.Second)
		resp, err := svc.RollbackModel(t.Context(), &eventsv1.RollbackModelRequest{Loop: testLoop, Version: 3})
		if err != nil {
			t.Fatal(err)
		}
		info := resp.GetInfo()
		if latest := r.store.Latest(); latest.GetInfo() != info || info.GetVersion() != 6 || info.GetRollbackOf() != 3 || info.GetExamples() != 6 ||
			!info.GetModelCreated().AsTime().Equal(start) || !bytes.Equal(latest.GetData(), data[3]) {
			t.Fatalf("rollback published %v, want version 6 of version 3's model (6 examples)", info)
		}
		if st := r.l.Stats(); st.Version != 6 || st.Examples != 6 || st.Learned != 10 || st.Rollbacks != 1 {
			t.Errorf("stats after the rollback: %+v", st)
		}
		if list, err := svc.ListModels(t.Context(), &eventsv1.ListModelsRequest{Loop: testLoop}); err != nil || len(list.GetModels()) != 3 ||
			list.GetModels()[0].GetVersion() != 6 || list.GetModels()[0].GetRollbackOf() != 3 || list.GetModels()[2].GetVersion() != 4 {
			t.Errorf("ListModels after the rollback = %v, %v, want 6 (rollback of 3), 5, 4", list.GetModels(), err)
		}
		checkCheckpoint(t, dir, 6, 6, map[int]int64{0: 10}, keySet(0, 10))

		// Learning goes on from version 3's model.
		writeRecs(t, log, joined(10, 14)...)
		at(70 * time.Second)
		latest := r.store.Latest()
		if info := latest.GetInfo(); info.GetVersion() != 7 || info.GetExamples() != 10 || info.GetRollbackOf() != 0 {
			t.Errorf("after the rollback: %v, want version 7 of 10 examples", info)
		}
		sameModel(t, latest.GetData(), learnRecords(t, data[3], joined(10, 14)), joined(0, 14))
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}

		// A restart keeps the history: versions 5 to 7.
		r2 := startConfig(t, log, cfg)
		synctest.Wait()
		if got := r2.l.history.Versions(); len(got) != 3 || got[0] != 5 || got[2] != 7 {
			t.Errorf("history after the restart: %v, want 5 to 7", got)
		}
		if mv, err := r2.store.Get(5); err != nil || !bytes.Equal(mv.GetData(), data[5]) {
			t.Errorf("version 5 after the restart: %v, %v", mv.GetInfo(), err)
		}
		if mv, err := r2.store.Get(6); err != nil || mv.GetInfo().GetRollbackOf() != 3 {
			t.Errorf("version 6 after the restart: %v, %v", mv.GetInfo(), err)
		}
		if err := r2.stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOpenHistory forgets versions past the checkpoint's and beyond its
// size.
func TestOpenHistory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, err := OpenHistory(dir, 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 5; v++ {
		if err := h.Add(&eventsv1.GetModelResponse{Info: &eventsv1.ModelInfo{Version: v}, Data: []byte{byte(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	h, err = OpenHistory(dir, 2, 4) // version 5 is past the checkpoint; 2 kept
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Versions(); len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("versions %v, want 3 and 4", got)
	}
	if mv, err := h.Get(4); err != nil || !bytes.Equal(mv.GetData(), []byte{4}) {
		t.Errorf("Get(4) = %v, %v", mv, err)
	}
	for _, v := range []uint64{2, 5} {
		if _, err := h.Get(v); !errors.Is(err, ErrNotKept) {
			t.Errorf("Get(%d) = %v, want ErrNotKept", v, err)
		}
	}
	if _, err := OpenHistory(dir, 0, 4); err == nil {
		t.Error("a history of 0 versions opened")
	}
}
