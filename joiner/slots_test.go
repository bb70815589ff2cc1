package joiner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// slotsRequest is the multi-slot request of the tests: three actions, a
// "hero" slot with a named namespace and baseline a0, and a "side" slot
// with an unnamed feature that excludes a0, baseline a1.
func slotsRequest() *personalizerv1.MultiSlotRankRequest {
	num := func(n string, v float64) *personalizerv1.Feature {
		return &personalizerv1.Feature{Name: n, Value: &personalizerv1.Feature_NumberValue{NumberValue: v}}
	}
	return &personalizerv1.MultiSlotRankRequest{
		ContextFeatures: []*personalizerv1.Namespace{{Name: "U", Features: []*personalizerv1.Feature{num("u", 1)}}},
		Actions: []*personalizerv1.Action{
			{Id: "a0", Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{num("f", 1)}}}},
			{Id: "a1"}, {Id: "a2"},
		},
		Slots: []*personalizerv1.Slot{
			{Id: "hero", BaselineAction: "a0", Features: []*personalizerv1.Namespace{{Name: "S", Features: []*personalizerv1.Feature{
				{Name: "pos", Value: &personalizerv1.Feature_StringValue{StringValue: "top"}}}}}},
			{Id: "side", BaselineAction: "a1", ExcludedActions: []string{"a0"}, Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{num("w", 2)}}}},
		},
	}
}

// slotsContext is the "c" of slotsRequest: every action under "_multi",
// the slots under "_slots", side limited to a1 and a2.
const slotsContext = `{"U":{"u":1},"_multi":[{"_tag":"a0","i":{"constant":1,"id":"a0"},"j":{"f":1}},{"_tag":"a1","i":{"constant":1,"id":"a1"}},{"_tag":"a2","i":{"constant":1,"id":"a2"}}],` +
	`"_slots":[{"_id":"hero","S":{"pos":"top"}},{"_id":"side","w":2,"_inc":[1,2]}]}`

// slotsRank is a rank record of req (slotsRequest if nil) as a server
// writes it: hero logged a0 (p 0.8), side logged a2 (p 0.9).
func slotsRank(eventID string, req *personalizerv1.MultiSlotRankRequest, deferred bool, mode eventsv1.LearningMode) *eventsv1.RankEvent {
	if req == nil {
		req = slotsRequest()
	}
	b, err := proto.Marshal(req)
	if err != nil {
		panic(err)
	}
	return &eventsv1.RankEvent{Loop: "l", EventId: eventID, MultiSlotRequest: b, Deferred: deferred, LearningMode: mode, ModelVersion: "3",
		Slots: []*eventsv1.SlotDecision{
			{Ranking: []uint32{0, 1, 2}, Probabilities: []float32{0.8, 0.1, 0.1}},
			{Ranking: []uint32{2, 1}, Probabilities: []float32{0.9, 0.1}},
		}}
}

// decoded is rank as the joiner decodes its record.
func decoded(key string, rank *eventsv1.RankEvent) Input {
	return decode(record(eventlog.TypeRank, key, rank, t0))
}

// slotReward is a reward record of slot (none if empty), decoded.
func slotReward(key, slot string, v float32, id uint64) Input {
	return decode(record(eventlog.TypeReward, key, &eventsv1.RewardEvent{Loop: "l", EventId: key, Value: v, Id: id, SlotId: slot}, t0))
}

func activateID(key string, id uint64) Input { return Input{Kind: Activate, Key: key, ID: id} }

// joinOne runs s, which must close exactly one event, through a window of
// testRules and returns it as the joiner writes it, with the number of
// rewards that named no slot of it.
func joinOne(t *testing.T, s script) (*Joined, int) {
	t.Helper()
	w := NewWindow(testRules())
	var out Output
	var joined []Joined
	for _, in := range s {
		w.Add(in, &out)
		joined = append(joined, out.Joined...)
		out.Reset()
	}
	if len(joined) != 1 {
		t.Fatalf("%d events joined, want 1", len(joined))
	}
	j := &joined[0]
	in := s[j.Offset]
	if in.Kind != Rank || !w.IsKey(j, []byte(in.Key)) {
		t.Fatalf("joined offset %d is not the rank", j.Offset)
	}
	return j, j.setRank(&in)
}

// TestSlotsLine joins multi-slot events and checks their CCB DSJson lines
// byte for byte: per slot its rewards, aggregated by the event's rules or
// its default reward, activations in every slot, unknown slots left out,
// Apprentice per slot, "_skipLearn" for what must not be learned. Each
// line is then read as `vw --ccb_explore_adf --dsjson` reads it: every
// slot labelled with its logged action, -reward and its probability.
func TestSlotsLine(t *testing.T) {
	t.Parallel()
	const key = "l/e1"
	rank := func(mod func(*eventsv1.RankEvent)) Input {
		ev := slotsRank("e1", nil, false, online)
		if mod != nil {
			mod(ev)
		}
		return decoded(key, ev)
	}
	rules := func(dflt float32, agg string) func(*eventsv1.RankEvent) {
		return func(ev *eventsv1.RankEvent) {
			ev.Rules = &eventsv1.JoinRules{RewardWaitMs: wait.Milliseconds(), DefaultReward: dflt, Aggregation: agg}
		}
	}
	const head = `{"Timestamp":"2026-01-01T00:00:00.0000000Z","Version":"1","EventId":"e1","c":` + slotsContext + `,"_outcomes":[`
	tests := []struct {
		name    string
		in      script
		want    string
		unknown int
		skip    bool
	}{
		{
			name: "two slots, a reward for one: the other gets the default reward",
			in:   script{}.at(0, rank(nil)).at(time.Second, slotReward(key, "hero", 1, 1)).at(time.Hour, tick()),
			want: head +
				`{"_label_cost":-1,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[{"v":1,"EventId":"e1","Index":"hero","ActionTaken":false}],"_original_label_cost":-1},` +
				`{"_label_cost":0.5,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[],"_original_label_cost":0.5}],` +
				`"_ba":[0,1],"VWState":{"m":"3"}}`,
		},
		{
			name: "no reward: the record's default reward for every slot",
			in:   script{}.at(0, rank(rules(0.25, "earliest"))).at(time.Hour, tick()),
			want: head +
				`{"_label_cost":-0.25,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[],"_original_label_cost":-0.25},` +
				`{"_label_cost":-0.25,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[],"_original_label_cost":-0.25}],` +
				`"_ba":[0,1],"VWState":{"m":"3"}}`,
		},
		{
			name: "sum over two rewards of one slot",
			in: script{}.at(0, rank(rules(0, "sum"))).at(time.Second, slotReward(key, "side", 0.25, 1)).
				at(2*time.Second, slotReward(key, "hero", 1, 2)).at(3*time.Second, slotReward(key, "side", 0.5, 3)).at(time.Hour, tick()),
			want: head +
				`{"_label_cost":-1,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[{"v":1,"EventId":"e1","Index":"hero","ActionTaken":false}],"_original_label_cost":-1},` +
				`{"_label_cost":-0.75,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[{"v":0.25,"EventId":"e1","Index":"side","ActionTaken":false},{"v":0.5,"EventId":"e1","Index":"side","ActionTaken":false}],"_original_label_cost":-0.75}],` +
				`"_ba":[0,1],"VWState":{"m":"3"}}`,
		},
		{
			name: "a reward naming an unknown slot, or none, is left out",
			in: script{}.at(0, rank(nil)).at(time.Second, slotReward(key, "footer", 1, 1)).at(2*time.Second, slotReward(key, "hero", 0.5, 2)).
				at(3*time.Second, slotReward(key, "", 1, 3)).at(time.Hour, tick()),
			want: head +
				`{"_label_cost":-0.5,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[{"v":0.5,"EventId":"e1","Index":"hero","ActionTaken":false}],"_original_label_cost":-0.5},` +
				`{"_label_cost":0.5,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[],"_original_label_cost":0.5}],` +
				`"_ba":[0,1],"VWState":{"m":"3"}}`,
			unknown: 2,
		},
		{
			name: "deferred and activated: the activation in every slot",
			in: script{}.at(0, rank(func(ev *eventsv1.RankEvent) { ev.Deferred = true })).at(time.Second, slotReward(key, "side", 1, 1)).
				at(2*time.Second, activateID(key, 2)).at(time.Hour, tick()),
			want: head +
				`{"_label_cost":0.5,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[{"EventId":"e1","ActionTaken":true}],"_original_label_cost":0.5},` +
				`{"_label_cost":-1,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[{"v":1,"EventId":"e1","Index":"side","ActionTaken":false},{"EventId":"e1","ActionTaken":true}],"_original_label_cost":-1}],` +
				`"_ba":[0,1],"VWState":{"m":"3"}}`,
		},
		{
			name: "deferred, never activated",
			in: script{}.at(0, rank(func(ev *eventsv1.RankEvent) { ev.Deferred = true })).at(time.Second, slotReward(key, "hero", 1, 1)).
				at(time.Hour, tick()),
			want: head +
				`{"_label_cost":-1,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[{"v":1,"EventId":"e1","Index":"hero","ActionTaken":false}],"_original_label_cost":-1},` +
				`{"_label_cost":0.5,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[],"_original_label_cost":0.5}],` +
				`"_ba":[0,1],"VWState":{"m":"3"},"_skipLearn":true}`,
			skip: true,
		},
		{
			// hero logged its baseline a0, side a2 instead of a1.
			name: "Apprentice: 1 for each slot that logged its baseline, else 0",
			in: script{}.at(0, rank(func(ev *eventsv1.RankEvent) {
				rules(-0.5, "earliest")(ev) // made in Apprentice mode
				ev.LearningMode, ev.ModelVersion = apprentice, ""
			})).
				at(time.Second, slotReward(key, "hero", 0.25, 1)).at(time.Hour, tick()),
			want: `{"Timestamp":"2026-01-01T00:00:00.0000000Z","Version":"1","EventId":"e1","c":` + slotsContext + `,"_outcomes":[` +
				`{"_label_cost":-1,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[{"v":0.25,"EventId":"e1","Index":"hero","ActionTaken":false}],"_original_label_cost":-0.25},` +
				`{"_label_cost":-0,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[],"_original_label_cost":0.5}],` +
				`"_ba":[0,1],"VWState":{"m":"N/A"}}`,
		},
		{
			name: "subsampled",
			in:   script{}.at(0, rank(func(ev *eventsv1.RankEvent) { ev.Pdrop = 0.25 })).at(time.Hour, tick()),
			want: `{"Timestamp":"2026-01-01T00:00:00.0000000Z","Version":"1","EventId":"e1","pdrop":0.25,"c":` + slotsContext + `,"_outcomes":[` +
				`{"_label_cost":0.5,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[],"_original_label_cost":0.5},` +
				`{"_label_cost":0.5,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[],"_original_label_cost":0.5}],` +
				`"_ba":[0,1],"VWState":{"m":"3"}}`,
		},
		{
			name: "LoggingOnly",
			in: script{}.at(0, rank(func(ev *eventsv1.RankEvent) {
				ev.LearningMode = logging
				ev.Slots[1].Ranking = []uint32{1, 2} // the baseline first
			})).at(time.Hour, tick()),
			want: head +
				`{"_label_cost":0.5,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[],"_original_label_cost":0.5},` +
				`{"_label_cost":0.5,"_id":"side","_a":[1,2],"_p":[0.9,0.1],"_o":[],"_original_label_cost":0.5}],` +
				`"_ba":[0,1],"VWState":{"m":"3"},"_skipLearn":true}`,
			skip: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j, unknown := joinOne(t, tt.in)
			line := AppendDSJSON(nil, j)
			if string(line) != tt.want {
				t.Errorf("line\n%s\nwant\n%s", line, tt.want)
			}
			if unknown != tt.unknown {
				t.Errorf("%d rewards of unknown slots, want %d", unknown, tt.unknown)
			}
			// The float cache writes what strconv writes.
			var fc floatCache
			if again := appendDSJSON(nil, j, &fc); string(again) != string(line) {
				t.Errorf("with the float cache\n%s", again)
			}
			if n := dsjsonBound(j); n < len(line) {
				t.Errorf("dsjsonBound %d, the line has %d bytes", n, len(line))
			}

			p := bandit.DSJSONParser{CCB: true}
			var e bandit.Event
			err := p.Parse(line, &e)
			if tt.skip {
				if !errors.Is(err, bandit.ErrSkip) {
					t.Fatalf("Parse = %v, want a skipped event", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if e.NumActions() != 3 || e.NumSlots() != 2 {
				t.Fatalf("parsed %d actions, %d slots", e.NumActions(), e.NumSlots())
			}
			for k, d := range j.Rank.GetSlots() {
				action, cost, prob, ok := e.SlotOutcome(k)
				if want := int(d.GetRanking()[0]); !ok || action != want || cost != -j.Slots[k].Reward || prob != d.GetProbabilities()[0] {
					t.Errorf("slot %d: outcome %v action %d cost %v prob %v, want %d %v %v", k, ok, action, cost, prob, want, -j.Slots[k].Reward, d.GetProbabilities()[0])
				}
			}
		})
	}
}

// TestWindowSlots checks what the window keeps of the slot each outcome
// names: rewards before and after their rank keep it, a copy counts once
// whatever slot it names, a reward whose id is another's slot hash is no
// copy of it, late rewards are audited as before, and so past the point
// where an event's ids move to a set.
func TestWindowSlots(t *testing.T) {
	t.Parallel()
	const key = "l/e1"
	hero, side := SlotHash("hero"), SlotHash("side")
	s := script{}.
		at(0, slotReward(key, "side", 0.5, 1)). // before its rank
		at(time.Second, decoded(key, slotsRank("e1", nil, false, online))).
		at(2*time.Second, slotReward(key, "hero", 1, 2)).
		at(2*time.Second, slotReward(key, "side", 0.25, 2)).   // a copy of 2: counted once
		at(3*time.Second, slotReward(key, "hero", 0.75, side)) // its id is side's hash: not a copy
	for i := range 20 { // past idSetSmall: the ids move to a set
		s = s.at(4*time.Second, slotReward(key, "side", 0, uint64(100+i)))
	}
	s = s.at(4*time.Second, slotReward(key, "side", 1, 100))                             // a copy again
	s = s.at(5*time.Second, slotReward(key, "side", 0.125, hero))                        // its id is hero's hash, which the set must not hold
	s = s.at(30*time.Second, tick()).at(31*time.Second, slotReward(key, "hero", 1, 200)) // late
	w := NewWindow(testRules())
	var out Output
	var joined []Joined
	var audits []Audit
	for _, in := range s {
		w.Add(in, &out)
		joined, audits = append(joined, out.Joined...), append(audits, out.Audits...)
		out.Reset()
	}
	if len(joined) != 1 || len(audits) != 1 || audits[0].Reason != Late || audits[0].Outcome.ID != 200 {
		t.Fatalf("%d joined, audits %+v; want 1 joined and the late reward", len(joined), audits)
	}
	var got []string
	for _, o := range joined[0].Outcomes {
		got = append(got, fmt.Sprintf("%v/%d/%v", o.ID, o.Slot, o.Value))
	}
	want := []string{fmt.Sprintf("1/%d/0.5", side), fmt.Sprintf("2/%d/1", hero), fmt.Sprintf("%d/%d/0.75", side, hero)}
	for i := range 20 {
		want = append(want, fmt.Sprintf("%d/%d/0", 100+i, side))
	}
	want = append(want, fmt.Sprintf("%d/%d/0.125", hero, side))
	if !slices.Equal(got, want) {
		t.Errorf("outcomes (id/slot/value)\n%s\nwant\n%s", strings.Join(got, " "), strings.Join(want, " "))
	}
	if st := w.Stats(); st.DuplicateOutcomes != 2 || st.Late != 1 || st.Emitted != 1 {
		t.Errorf("stats %+v, want 2 duplicates, 1 late", st)
	}
	// Forgotten, the event leaves nothing behind: slot entries included.
	w.Add(Input{Kind: Tick, Time: t0.Add(2 * time.Hour), Offset: int64(len(s))}, &out)
	if n := int(w.outcomes.n) - 1 - len(w.outcomes.free); n != 0 || len(w.manyIDs) != 0 {
		t.Errorf("%d outcome entries, %d id sets still held after the event was forgotten", n, len(w.manyIDs))
	}
}

// TestSlotHash pins the slot hash: checkpoints and replays in other
// processes must find the same slots.
func TestSlotHash(t *testing.T) {
	t.Parallel()
	// FNV-1a 64 test vectors.
	for id, want := range map[string]uint64{"": 0, "a": 0xaf63dc4c8601ec8c, "foobar": 0x85944171f73967e8} {
		if got := SlotHash(id); got != want {
			t.Errorf("SlotHash(%q) = %#x, want %#x", id, got, want)
		}
	}
	if SlotHash("hero") == SlotHash("side") {
		t.Error("hero and side collide")
	}
}

// TestSlotsBadRecords decodes multi-slot rank records the line could not
// be written from, or only wrongly: each is a bad record, with an error
// that says why, and none panics.
func TestSlotsBadRecords(t *testing.T) {
	t.Parallel()
	request := func(mod func(*personalizerv1.MultiSlotRankRequest)) func(*eventsv1.RankEvent) {
		return func(ev *eventsv1.RankEvent) {
			req := slotsRequest()
			mod(req)
			ev.MultiSlotRequest, _ = proto.Marshal(req)
		}
	}
	tests := []struct {
		name string
		mod  func(*eventsv1.RankEvent)
		want string
	}{
		{"request does not decode", func(ev *eventsv1.RankEvent) { ev.MultiSlotRequest = []byte{0xff} }, "multi-slot request: "},
		{"decisions without a request", func(ev *eventsv1.RankEvent) { ev.MultiSlotRequest = nil }, "multi-slot request has 0 slots, the record 2 slot decisions"},
		{"a request without decisions", func(ev *eventsv1.RankEvent) { ev.Slots = nil }, "multi-slot request has 2 slots, the record 0 slot decisions"},
		{"fewer decisions than slots", func(ev *eventsv1.RankEvent) { ev.Slots = ev.Slots[:1] }, "multi-slot request has 2 slots, the record 1 slot decisions"},
		{"a single-slot context too", func(ev *eventsv1.RankEvent) { ev.Context = []byte(`{}`) }, "the record carries a multi-slot request and a single-slot context, request or ranking"},
		{"a single-slot ranking too", func(ev *eventsv1.RankEvent) { ev.Ranking = []uint32{0} }, "the record carries a multi-slot request and a single-slot context, request or ranking"},
		{"index out of range", func(ev *eventsv1.RankEvent) { ev.Slots[0].Ranking[2] = 3 }, `slot "hero": ranking names action 3 of 3 twice or out of range`},
		{"an action twice", func(ev *eventsv1.RankEvent) { ev.Slots[0].Ranking[2] = 1 }, `slot "hero": ranking names action 1 of 3 twice or out of range`},
		{"probabilities not aligned", func(ev *eventsv1.RankEvent) { ev.Slots[1].Probabilities = []float32{1} }, `slot "side": 2 ranked actions, 1 probabilities`},
		{"empty decision", func(ev *eventsv1.RankEvent) { ev.Slots[1] = &eventsv1.SlotDecision{} }, `slot "side": 0 ranked actions, 0 probabilities`},
		{"logged with probability 0", func(ev *eventsv1.RankEvent) { ev.Slots[1].Probabilities[0] = 0 }, `slot "side": logged action has probability 0`},
		{"a probability above 1", func(ev *eventsv1.RankEvent) { ev.Slots[0].Probabilities[1] = 2 }, `slot "hero": probability 2`},
		{"logged an excluded action", func(ev *eventsv1.RankEvent) { ev.Slots[1].Ranking = []uint32{0, 2} }, `slot "side" logged action 0, which it excludes`},
		{"an action logged twice", func(ev *eventsv1.RankEvent) { ev.Slots[0].Ranking = []uint32{2, 0, 1} }, `slot "side" logged action 2, which an earlier slot logged`},
		{"a slot without id", request(func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[1].Id = "" }), "multi-slot request: slot 1 has no id"},
		{"two slots with one id", request(func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[1].Id = "hero" }), `multi-slot request: slots 0 and 1 have the same id "hero"`},
		{"unknown baseline", request(func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[1].BaselineAction = "a9" }), `multi-slot request: slot "side"'s baseline_action "a9" names no action`},
		{"unknown excluded action", request(func(r *personalizerv1.MultiSlotRankRequest) { r.Slots[1].ExcludedActions = []string{"a0", "a9"} }), "multi-slot request: slot 1's excluded_actions[1] names no action"},
		{"pdrop 1", func(ev *eventsv1.RankEvent) { ev.Pdrop = 1 }, "pdrop 1 is not in [0, 1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := slotsRank("e1", nil, false, online)
			tt.mod(ev)
			in := decoded("l/e1", ev)
			if in.Kind != Bad || !strings.Contains(in.Err.Error(), tt.want) {
				t.Errorf("decoded as %v (%v), want a bad record: %s", in.Kind, in.Err, tt.want)
			}
		})
	}
	// The record they were made from is good.
	if in := decoded("l/e1", slotsRank("e1", nil, false, online)); in.Kind != Rank || len(in.Slots) != 2 || string(in.Rank.GetContext()) != slotsContext ||
		in.Slots[0] != (Slot{ID: "hero"}) || in.Slots[1] != (Slot{ID: "side", Baseline: 1}) || in.Rank.GetMultiSlotRequest() != nil {
		t.Errorf("decoded %v %v: context %s, slots %+v", in.Kind, in.Err, in.Rank.GetContext(), in.Slots)
	}
}

// TestJoinerSlots runs multi-slot records through the joiner's shell over
// the in-memory log, with ranks read back from the log and taken from the
// rank cache: the CCB line, the rewards of unknown slots counted, and a
// record whose decisions do not fit its request dead-lettered while the
// partition goes on.
func TestJoinerSlots(t *testing.T) {
	t.Parallel()
	for _, cache := range []int{0, 1 << 20} {
		t.Run(fmt.Sprintf("rank cache %d", cache), func(t *testing.T) {
			t.Parallel()
			m := newMem()
			bad := slotsRank("bad", nil, false, online)
			bad.Slots = bad.Slots[:1]
			if err := m.Write(context.Background(),
				record(eventlog.TypeRank, "l/bad", bad, t0),
				record(eventlog.TypeRank, "l/e1", slotsRank("e1", nil, false, online), t0),
				record(eventlog.TypeReward, "l/e1", &eventsv1.RewardEvent{Loop: "l", EventId: "e1", Value: 1, Id: 1, SlotId: "side"}, t0.Add(time.Second)),
				record(eventlog.TypeReward, "l/e1", &eventsv1.RewardEvent{Loop: "l", EventId: "e1", Value: 1, Id: 2, SlotId: "footer"}, t0.Add(time.Second)),
				record(eventlog.TypeReward, "l/e1", &eventsv1.RewardEvent{Loop: "l", EventId: "e1", Value: 0.5, Id: 3, SlotId: "hero"}, t0.Add(time.Second))); err != nil {
				t.Fatal(err)
			}
			cfg := Config{Rules: testRules(), TickInterval: 10 * time.Millisecond, RankCache: cache}
			j := New(cfg, slog.New(slog.DiscardHandler), memSource{m}, m.Direct(), m, func() time.Time { return t0.Add(time.Hour) })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- j.Run(ctx) }()
			waitFor(t, j, "the event and the bad record", func(s Stats) bool { return s.Emitted == 1 && s.Undecodable == 1 })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if c := j.Counters(); c != (Stats{Emitted: 1, Learnable: 1, Undecodable: 1, UnknownSlots: 1}) {
				t.Errorf("counters %+v", c)
			}
			want := `{"Timestamp":"2026-01-01T00:00:00.0000000Z","Version":"1","EventId":"e1","c":` + slotsContext + `,"_outcomes":[` +
				`{"_label_cost":-0.5,"_id":"hero","_a":[0,1,2],"_p":[0.8,0.1,0.1],"_o":[{"v":0.5,"EventId":"e1","Index":"hero","ActionTaken":false}],"_original_label_cost":-0.5},` +
				`{"_label_cost":-1,"_id":"side","_a":[2,1],"_p":[0.9,0.1],"_o":[{"v":1,"EventId":"e1","Index":"side","ActionTaken":false}],"_original_label_cost":-1}],` +
				`"_ba":[0,1],"VWState":{"m":"3"}}`
			var lines, dead []string
			for p := range 2 {
				for _, r := range m.Records(eventlog.JoinedTopic, p) {
					lines = append(lines, string(r.Key)+" "+string(r.Value))
				}
				for _, r := range m.Records(eventlog.DeadLetterTopic, p) {
					dead = append(dead, string(r.Key)+" "+string(r.Header(eventlog.DeadLetterErrorHeader)))
				}
			}
			if len(lines) != 1 || lines[0] != "l/e1 "+want {
				t.Errorf("joined\n%s\nwant\nl/e1 %s", strings.Join(lines, "\n"), want)
			}
			if len(dead) != 1 || !strings.HasPrefix(dead[0], "l/bad rank record: multi-slot request has 2 slots, the record 1 slot decisions") {
				t.Errorf("dead letters %q", dead)
			}
		})
	}
}

// TestJoinerSlotsFlood floods one slot of a multi-slot event with rewards:
// its line is written with the outcomes that fit the record size limit,
// while each slot's reward is aggregated from all of its rewards.
func TestJoinerSlotsFlood(t *testing.T) {
	t.Parallel()
	const limit = 20_000
	m := newMem()
	recs := []eventlog.Record{record(eventlog.TypeRank, "l/e1", slotsRank("e1", nil, false, online), t0),
		record(eventlog.TypeReward, "l/e1", &eventsv1.RewardEvent{Value: 0.5, Id: 1, SlotId: "hero"}, t0.Add(time.Second))}
	var sum float32
	for i := range 1000 {
		v := float32(i%4) / 4
		sum += v
		recs = append(recs, record(eventlog.TypeReward, "l/e1", &eventsv1.RewardEvent{Value: v, Id: uint64(10 + i), SlotId: "side"}, t0.Add(2*time.Second)))
	}
	if err := m.Write(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	m.MaxRecordBytes = limit
	cfg := Config{Rules: testRules(), TickInterval: 10 * time.Millisecond, MaxRecordBytes: limit}
	cfg.Aggregation = Sum
	j := New(cfg, slog.New(slog.DiscardHandler), memSource{m}, m.Direct(), m, func() time.Time { return t0.Add(time.Hour) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	waitFor(t, j, "the event", func(s Stats) bool { return s.Emitted == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := j.Counters(); c != (Stats{Emitted: 1, Learnable: 1, Truncated: 1}) {
		t.Errorf("counters %+v", c)
	}
	var lines []eventlog.Record
	for p := range 2 {
		lines = append(lines, m.Records(eventlog.JoinedTopic, p)...)
	}
	if len(lines) != 1 {
		t.Fatalf("%d lines", len(lines))
	}
	var line struct {
		Outcomes []struct {
			Cost float32           `json:"_label_cost"`
			O    []json.RawMessage `json:"_o"`
		} `json:"_outcomes"`
	}
	v := lines[0].Value
	if err := json.Unmarshal(v, &line); err != nil || len(line.Outcomes) != 2 {
		t.Fatalf("line %s: %v", v, err)
	}
	hero, side := line.Outcomes[0], line.Outcomes[1]
	if hero.Cost != -0.5 || len(hero.O) != 1 || side.Cost != -sum || len(side.O) == 0 || len(side.O) >= 1000 || len(v)+len("l/e1")+len("typejoined") > limit {
		t.Errorf("flooded line: %d bytes, costs %v and %v (want -0.5 and %v), %d and %d outcomes", len(v), hero.Cost, side.Cost, -sum, len(hero.O), len(side.O))
	}
}
