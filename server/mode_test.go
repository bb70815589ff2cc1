package server

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// modeServer is a server in mode whose records go to the returned log.
func modeServer(t *testing.T, mode eventsv1.LearningMode) (*Server, *eventlog.Mem) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	pub := NewPublisher(mem, BufferLimits{Records: 100, Bytes: 1 << 30}, 0, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pub.Run(ctx, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	return New(Config{Loop: "test", LearningMode: mode}, pub, log, func() time.Time { return testNow }), mem
}

// loggedRecord waits for the n-th record of the log.
func loggedRecord(t *testing.T, mem *eventlog.Mem, n int) eventlog.Record {
	t.Helper()
	r := mem.Reader(eventlog.EventsTopic, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rec eventlog.Record
	for range n {
		var err error
		if rec, err = r.Fetch(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return rec
}

// TestLearningModes checks what Rank answers and logs in each mode, on a
// request whose event id makes the (uniform, model-less) draw pick a
// non-baseline action.
func TestLearningModes(t *testing.T) {
	t.Parallel()
	req := validRank()
	req.Actions = actions(4)
	req.ExcludedActions = []string{req.Actions[0].Id} // the baseline is the first eligible: actions[1]
	// Find an event id whose draw is not the baseline.
	var eventID string
	{
		srv, _ := modeServer(t, eventsv1.LearningMode_LEARNING_MODE_ONLINE)
		for i := 0; eventID == ""; i++ {
			req.EventId = proto.String(string(rune('a'+i%26)) + string(rune('a'+i/26)))
			resp, err := srv.Rank(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.RewardActionId != req.Actions[1].Id {
				eventID = req.GetEventId()
			}
		}
	}
	req.EventId = proto.String(eventID)
	ids := func(rs []*personalizerv1.RankedAction) (out []string) {
		for _, r := range rs {
			out = append(out, r.Id)
		}
		return out
	}
	online, _ := modeServer(t, eventsv1.LearningMode_LEARNING_MODE_ONLINE)
	model, err := online.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	baselineOrder := []string{req.Actions[1].Id, req.Actions[2].Id, req.Actions[3].Id, req.Actions[0].Id}
	tests := []struct {
		mode        eventsv1.LearningMode
		answer      []string // ranking ids the caller gets
		loggedModel bool     // the logged ranking is the model's
	}{
		{eventsv1.LearningMode_LEARNING_MODE_ONLINE, ids(model.Ranking), true},
		{eventsv1.LearningMode_LEARNING_MODE_APPRENTICE, baselineOrder, true},
		{eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY, baselineOrder, false},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			t.Parallel()
			srv, mem := modeServer(t, tt.mode)
			resp, err := srv.Rank(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(resp.Ranking); !slices.Equal(got, tt.answer) || resp.RewardActionId != tt.answer[0] {
				t.Errorf("answered %v (reward action %s), want %v", got, resp.RewardActionId, tt.answer)
			}
			for _, r := range resp.Ranking[:3] {
				if r.Probability != 1.0/3 {
					t.Errorf("%s has probability %v, want 1/3", r.Id, r.Probability)
				}
			}
			var ev eventsv1.RankEvent
			if err := proto.Unmarshal(loggedRecord(t, mem, 1).Value, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.LearningMode != tt.mode {
				t.Errorf("logged mode %v, want %v", ev.LearningMode, tt.mode)
			}
			modelChoice := model.RewardActionId
			loggedChoice := req.Actions[1+ev.Ranking[0]].Id
			if tt.loggedModel && loggedChoice != modelChoice || !tt.loggedModel && loggedChoice != req.Actions[1].Id {
				t.Errorf("logged choice %s (ranking %v); model chose %s, baseline is %s", loggedChoice, ev.Ranking, modelChoice, req.Actions[1].Id)
			}
		})
	}
}

// TestOutcomeIDs checks that every Reward and Activate record carries its
// own non-zero id, which the joiner uses to count writer retries once.
func TestOutcomeIDs(t *testing.T) {
	t.Parallel()
	srv, mem := modeServer(t, 0)
	ctx := context.Background()
	for range 2 {
		if _, err := srv.Reward(ctx, &personalizerv1.RewardRequest{EventId: "e", Value: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Activate(ctx, &personalizerv1.ActivateRequest{EventId: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint64]bool{}
	for i := 1; i <= 4; i++ {
		rec := loggedRecord(t, mem, i)
		var id uint64
		switch rec.Type() {
		case eventlog.TypeReward:
			var ev eventsv1.RewardEvent
			if err := proto.Unmarshal(rec.Value, &ev); err != nil {
				t.Fatal(err)
			}
			id = ev.Id
		case eventlog.TypeActivate:
			var ev eventsv1.ActivateEvent
			if err := proto.Unmarshal(rec.Value, &ev); err != nil {
				t.Fatal(err)
			}
			id = ev.Id
		}
		if id == 0 || seen[id] {
			t.Errorf("record %d (%s) has id %d, zero or repeated", i, rec.Type(), id)
		}
		seen[id] = true
	}
}
