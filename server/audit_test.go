package server

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// memDecisions finds an event's rank record in an [eventlog.Mem] (it
// waits for the publisher to write it); nothing is ever joined.
type memDecisions struct{ mem *eventlog.Mem }

func (m memDecisions) FindDecision(ctx context.Context, key string, _ time.Time) (*DecisionRecords, error) {
	r := m.mem.Reader(eventlog.EventsTopic, nil)
	defer r.Close()
	for {
		rec, err := r.Fetch(ctx)
		if err != nil {
			return nil, err
		}
		if string(rec.Key) == key && rec.Type() == eventlog.TypeRank {
			return &DecisionRecords{Rank: rec}, nil
		}
	}
}

var _ DecisionLog = memDecisions{}

// TestDecisionApprentice audits a Rank made in Apprentice mode: the
// ranking is the baseline Rank answered with, the chosen action the one
// the model sampled (the record's), and the scores follow the ranking.
// Without a model history only the served version is explained.
func TestDecisionApprentice(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	pub := NewPublisher(mem, BufferLimits{Records: 100, Bytes: 1 << 20}, 0, log)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var wg sync.WaitGroup
	wg.Go(func() { pub.Run(ctx, time.Second) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	srv := New(Config{Loop: "test", LearningMode: eventsv1.LearningMode_LEARNING_MODE_APPRENTICE}, pub, log, time.Now)
	if err := srv.Load(versionOf(modelFile(t), 1)); err != nil {
		t.Fatal(err)
	}
	NewAdmin(srv, AdminConfig{Decisions: memDecisions{mem}})

	id := "app-1"
	req := &personalizerv1.RankRequest{EventId: &id, ExcludedActions: []string{"b"}, ContextFeatures: []*personalizerv1.Namespace{{Name: "U", Features: []*personalizerv1.Feature{
		{Name: "x", Value: &personalizerv1.Feature_NumberValue{NumberValue: 0.5}}}}}}
	for _, a := range []string{"a", "b", "c", "d"} {
		req.Actions = append(req.Actions, &personalizerv1.Action{Id: a})
	}
	resp, err := srv.Rank(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := srv.GetDecision(ctx, &personalizerv1.GetDecisionRequest{EventId: id, Top: 2})
	if err != nil {
		t.Fatal(err)
	}
	d := got.GetDecision()
	rank, err := memDecisions{mem}.FindDecision(ctx, "test/"+id, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var ev eventsv1.RankEvent
	if err := proto.Unmarshal(rank.Rank.Value, &ev); err != nil {
		t.Fatal(err)
	}
	eligible := []string{"a", "c", "d"}
	if sameRankingOf(d.GetRanking(), resp.GetRanking()) != "" || d.GetRewardActionId() != "a" || resp.GetRewardActionId() != "a" ||
		d.GetChosenActionId() != eligible[ev.GetRanking()[0]] || d.GetLearningMode() != "Apprentice" || d.GetModelVersion() != "1" ||
		!proto.Equal(d.GetRequest(), req) || d.GetOutcome().GetStatus() != "pending" {
		t.Fatalf("audit %v; Rank returned %v, logged %v", d, resp, &ev)
	}
	if len(d.GetScores()) != 3 || len(d.GetExplanations()) != 3 || d.GetBreakdownUnavailable() != "" {
		t.Fatalf("breakdown: %v %v %q", d.GetScores(), d.GetExplanations(), d.GetBreakdownUnavailable())
	}
	for i, s := range d.GetScores() {
		if s.GetId() != d.GetRanking()[i].GetId() || d.GetExplanations()[i].GetId() != s.GetId() || len(d.GetExplanations()[i].GetFeatures()) > 2 {
			t.Errorf("scores %v, explanations %v: not in the ranking's order %v, or more than 2 features", d.GetScores(), d.GetExplanations(), d.GetRanking())
		}
	}

	// Another version: this server has no history to ask.
	if err := srv.Load(versionOf(modelFile(t), 2)); err != nil {
		t.Fatal(err)
	}
	got, err = srv.GetDecision(ctx, &personalizerv1.GetDecisionRequest{EventId: id})
	if err != nil || got.GetDecision().GetBreakdownUnavailable() != "model version 1 is not the one this server ranks with, and it has no model history to ask" ||
		len(got.GetDecision().GetScores()) != 0 || got.GetDecision().GetRewardActionId() != "a" {
		t.Errorf("audit under version 2: %v, %v", got, err)
	}
	for _, tt := range []struct {
		req  *personalizerv1.GetDecisionRequest
		code codes.Code
	}{
		{&personalizerv1.GetDecisionRequest{}, codes.InvalidArgument},
		{&personalizerv1.GetDecisionRequest{EventId: id, Top: -1}, codes.InvalidArgument},
	} {
		if _, err := srv.GetDecision(ctx, tt.req); status.Code(err) != tt.code {
			t.Errorf("GetDecision(%v) = %v, want %v", tt.req, err, tt.code)
		}
	}
}

// sameRankingOf says how got differs from want, "" if it does not.
func sameRankingOf(got, want []*personalizerv1.RankedAction) string {
	if len(got) != len(want) {
		return "lengths differ"
	}
	for i := range got {
		if got[i].GetId() != want[i].GetId() || got[i].GetProbability() != want[i].GetProbability() {
			return got[i].String() + " != " + want[i].String()
		}
	}
	return ""
}
