package learner

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/joiner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// memSource is an eventlog.Mem consumer group as a joiner's source.
type memSource struct{ m *eventlog.Mem }

func (s memSource) Consume(ctx context.Context, fn eventlog.ClaimFunc) error {
	return s.m.Consume(ctx, "joiner", eventlog.EventsTopic, fn)
}

// slotsEvents returns the events records of n multi-slot ranks of loop
// testLoop (4 actions, 3 slots, each slot's action drawn uniformly from
// what earlier slots left, as the reference data's logging policy), a
// reward for one slot of each and, for event 0, a reward of a slot the
// request does not have; every fifth event is deferred and never
// activated, every seventh deferred and activated.
func slotsEvents(t *testing.T, n int) (recs []eventlog.Record, skipped map[string]bool) {
	t.Helper()
	r := rand.New(rand.NewPCG(11, 12))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	num := func(name string, v float64) *personalizerv1.Feature {
		return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_NumberValue{NumberValue: v}}
	}
	rec := func(typ, key string, m proto.Message, at time.Time) eventlog.Record {
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(key), Value: v, Time: at,
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(typ)}}}
	}
	slots := []string{"hero", "side", "foot"}
	skipped = map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("e%d", i)
		key := testLoop + "/" + id
		at := t0.Add(time.Duration(i) * time.Millisecond)
		req := &personalizerv1.MultiSlotRankRequest{
			ContextFeatures: []*personalizerv1.Namespace{{Name: "U", Features: []*personalizerv1.Feature{num("u", float64(r.IntN(10))/4)}}},
			DeferActivation: i%5 == 4 || i%7 == 6,
		}
		for a := range 4 {
			req.Actions = append(req.Actions, &personalizerv1.Action{Id: fmt.Sprintf("a%d", a),
				Features: []*personalizerv1.Namespace{{Name: "A", Features: []*personalizerv1.Feature{num("f", float64(a))}}}})
		}
		rank := &eventsv1.RankEvent{Loop: testLoop, EventId: id, Deferred: req.DeferActivation, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
		left := []uint32{0, 1, 2, 3}
		for k, s := range slots {
			req.Slots = append(req.Slots, &personalizerv1.Slot{Id: s, BaselineAction: fmt.Sprintf("a%d", k),
				Features: []*personalizerv1.Namespace{{Name: "S", Features: []*personalizerv1.Feature{num("size", float64(k+1))}}}})
			c := r.IntN(len(left))
			left[0], left[c] = left[c], left[0]
			d := &eventsv1.SlotDecision{Ranking: append([]uint32(nil), left...)}
			for range left {
				d.Probabilities = append(d.Probabilities, 1/float32(len(left)))
			}
			rank.Slots = append(rank.Slots, d)
			left = left[1:]
		}
		var err error
		if rank.MultiSlotRequest, err = proto.Marshal(req); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec(eventlog.TypeRank, key, rank, at),
			rec(eventlog.TypeReward, key, &eventsv1.RewardEvent{Loop: testLoop, EventId: id, Value: 1, Id: uint64(2*i + 1), SlotId: slots[i%3]}, at.Add(time.Second)))
		switch {
		case i == 0:
			recs = append(recs, rec(eventlog.TypeReward, key, &eventsv1.RewardEvent{Loop: testLoop, EventId: id, Value: 1, Id: 1 << 40, SlotId: "nowhere"}, at.Add(time.Second)))
		case i%5 == 4:
			skipped[key] = true
		case i%7 == 6:
			recs = append(recs, rec(eventlog.TypeActivate, key, &eventsv1.ActivateEvent{Loop: testLoop, EventId: id, Id: uint64(2*i + 2)}, at.Add(time.Second)))
		}
	}
	return recs, skipped
}

// joinAll runs a joiner over events until it has joined n events, and
// returns the joined records and the joiner's counters.
func joinAll(t *testing.T, events []eventlog.Record, n int64) ([]eventlog.Record, joiner.Stats) {
	t.Helper()
	m := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 2, eventlog.JoinedTopic: 2, eventlog.AuditTopic: 2, eventlog.DeadLetterTopic: 2})
	if err := m.Write(context.Background(), events...); err != nil {
		t.Fatal(err)
	}
	rules := joiner.Rules{RewardWait: 10 * time.Second, Backward: 2 * time.Minute, Aggregation: joiner.Earliest, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
	end := events[len(events)-1].Time.Add(time.Hour) // ticks past every window
	j := joiner.New(joiner.Config{Rules: rules, TickInterval: 10 * time.Millisecond}, slog.New(slog.DiscardHandler), memSource{m}, m.Direct(), m, func() time.Time { return end })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	if err := j.Wait(ctx, func(s joiner.Stats) bool { return s.Emitted == n }); err != nil {
		t.Fatalf("joining: %v (counters %+v)", err, j.Counters())
	}
	cancel()
	if err := <-done; err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
	var joined []eventlog.Record
	for p := range 2 {
		joined = append(joined, m.Records(eventlog.JoinedTopic, p)...)
	}
	return joined, j.Counters()
}

// TestLearnJoinedSlots joins multi-slot events with the joiner and learns
// its CCB lines under a --ccb_explore_adf policy: the live learner learns
// every learnable event and counts the deferred ones never activated as
// not learnable; `personalizer train` on the same lines counts every
// event, each labelled, and drops the others as VW does.
func TestLearnJoinedSlots(t *testing.T) {
	t.Parallel()
	const n = 40
	events, skipped := slotsEvents(t, n)
	joined, st := joinAll(t, events, n)
	learnable := n - len(skipped)
	if st.Emitted != n || st.Learnable != int64(learnable) || st.UnknownSlots != 1 || st.Undecodable != 0 {
		t.Fatalf("joiner counters %+v", st)
	}

	path := filepath.Join(t.TempDir(), "joined.dsjson")
	var data []byte
	for _, r := range joined {
		data = append(append(data, r.Value...), '\n')
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, _, _ := trainCCB(t, TrainConfig{Data: path, Policy: ccbPolicy})
	if s.Examples != int64(learnable) || s.Labeled != int64(learnable) || s.Dropped != len(skipped) || s.Malformed != 0 {
		t.Errorf("train: %+v, want %d examples, all labelled, %d dropped", s.Counts, learnable, len(skipped))
	}

	synctest.Test(t, func(t *testing.T) {
		at := clock(time.Now())
		log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 2})
		for _, r := range joined {
			writeRecs(t, log, eventlog.Record{Topic: eventlog.JoinedTopic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Time: r.Time})
		}
		r := startConfig(t, log, Config{Loop: testLoop, Policy: ccbPolicy, ExportEvery: 10 * time.Second, Dir: t.TempDir(), Remember: 1000})
		at(10 * time.Second) // an export
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
		if st := r.l.Stats(); st.Learned != int64(learnable) || st.NotLearnable != int64(len(skipped)) || st.Malformed != 0 || st.Duplicates != 0 {
			t.Errorf("learner stats %+v, want %d learned, %d not learnable", st, learnable, len(skipped))
		}
		want := map[string]int{}
		for i := range n {
			if key := fmt.Sprintf("%s/e%d", testLoop, i); !skipped[key] {
				want[key] = 1
			}
		}
		if got := r.keys(); !maps.Equal(got, want) {
			t.Errorf("learned %v, want %v", got, want)
		}
		if info := r.store.Latest().GetInfo(); info.GetExamples() != uint64(learnable) {
			t.Errorf("published %v, want a model of %d examples", info, learnable)
		}
	})
}

var updateJoined = flag.Bool("update-joined", false, "rewrite testdata/vw-ccb/joined_slots.dsjson from the joiner")

// TestJoinedSlotsVW: the joiner's CCB lines of 300 multi-slot ranks are
// testdata/vw-ccb/joined_slots.dsjson byte for byte (-update-joined
// rewrites it), and VW 9.11.2 read that file as labelled CCB events:
// `personalizer train` gives VW's example count, average loss and every
// slot's -p line (testdata/vw-ccb/README.md).
func TestJoinedSlotsVW(t *testing.T) {
	t.Parallel()
	const n = 300
	events, skipped := slotsEvents(t, n)
	joined, _ := joinAll(t, events, n)
	var data []byte
	for _, r := range joined {
		data = append(append(data, r.Value...), '\n')
	}
	path := ccbDir + "joined_slots.dsjson"
	if *updateJoined {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want) {
		t.Fatalf("the joiner's lines differ from %s at %s", path, firstDiff(data, want))
	}
	s, stderr, got := trainCCB(t, TrainConfig{Data: path, Policy: ccbPolicy + " -l 0.1"})
	learnable := n - len(skipped)
	for _, line := range []string{"number of examples = " + strconv.Itoa(learnable), "average loss = " + joinedSlotsVWLoss, "total feature number = 82228"} {
		if !strings.Contains(stderr, "\n"+line+"\n") {
			t.Errorf("summary lacks VW's %q:\n%s", line, stderr)
		}
	}
	if s.Labeled != int64(learnable) || s.Dropped != len(skipped) || s.Malformed != 0 {
		t.Errorf("summary %+v, want %d labelled, %d dropped", s.Counts, learnable, len(skipped))
	}
	if w := gunzipFile(t, ccbDir+"joined_slots.pred.gz"); !bytes.Equal(got, w) {
		t.Errorf("predictions differ from VW's at %s", firstDiff(got, w))
	}
}

// joinedSlotsVWLoss is VW 9.11.2's average loss on joined_slots.dsjson
// (testdata/vw-ccb/README.md).
const joinedSlotsVWLoss = "-0.480000"
