package joiner

import (
	"context"
	"encoding/json"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// ruled returns rank in with the join rules its record carries.
func ruled(in Input, wait time.Duration, dflt float32, agg string) Input {
	in.Rank = proto.CloneOf(in.Rank)
	in.Rank.Rules = &eventsv1.JoinRules{RewardWaitMs: wait.Milliseconds(), DefaultReward: dflt, Aggregation: agg, ConfigVersion: 1}
	return in
}

// TestWindowRankRules checks that each rank is judged by the rules its
// record carries, with exact joined rewards. The window's own rules (10s,
// default -0.5, earliest, online) judge records without rules and records
// whose rules are invalid.
func TestWindowRankRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		rules func(*Rules)
		in    script
		want  []string
		stats Stats
	}{
		{
			// Ranks made under a 10s wait and under a 60s wait
			// interleave; the rewards come at 30s: too late for the
			// first, which learn their own default reward, in time for
			// the second, which learn them by their own aggregation.
			name: "waits of 10s and 60s interleave, rewards at 30s",
			in: script{}.
				at(0, ruled(rank("a"), 10*time.Second, 0, "earliest")).               // 0
				at(time.Second, ruled(rank("b"), time.Minute, -0.25, "sum")).         // 1
				at(2*time.Second, ruled(rank("c"), 10*time.Second, 0.1, "earliest")). // 2
				at(3*time.Second, ruled(rank("d"), time.Minute, 0, "earliest")).      // 3
				at(4*time.Second, rank("e")).                                         // 4: no rules: the window's
				at(5*time.Second, ruled(rank("f"), 0, 0.9, "sum")).                   // 5: invalid: the window's
				at(6*time.Second, ruled(rank("g"), time.Minute, 0.25, "max")).        // 6
				at(7*time.Second, ruled(rank("h"), 10*time.Second, -1, "sum")).       // 7
				at(8*time.Second, reward("h", 0.25)).                                 // 8
				at(9*time.Second, reward("h", 0.5)).                                  // 9
				at(30*time.Second, reward("b", 0.5)).                                 // 10: a c e f h close
				at(30*time.Second, reward("a", 1)).                                   // 11
				at(30*time.Second, reward("b", 0.25)).                                // 12
				at(31*time.Second, reward("d", 0.75)).                                // 13
				at(30*time.Second, reward("d", 0.5)).                                 // 14: the earliest, though it came last
				at(30*time.Second, reward("c", 1)).                                   // 15
				at(30*time.Second, reward("e", 1)).                                   // 16
				at(30*time.Second, reward("f", 1)).                                   // 17
				at(61*time.Second-ms, tick()).                                        // 18: b's window still open
				at(61*time.Second, tick()).                                           // 19: b closes
				at(63*time.Second, tick()).                                           // 20: d closes
				at(66*time.Second, tick()),                                           // 21: g closes
			want: []string{
				"@10 a reward=0 original=0 learnable=true o=[]",
				"@10 c reward=0.1 original=0.1 learnable=true o=[]",
				"@10 e reward=-0.5 original=-0.5 learnable=true o=[]",
				"@10 f reward=-0.5 original=-0.5 learnable=true o=[]",
				"@10 h reward=0.75 original=0.75 learnable=true o=[0.25@8s 0.5@9s]",
				"@11 late a 1@30s offset=11",
				"@15 late c 1@30s offset=15",
				"@16 late e 1@30s offset=16",
				"@17 late f 1@30s offset=17",
				"@19 b reward=0.75 original=0.75 learnable=true o=[0.5@30s 0.25@30s]",
				"@20 d reward=0.5 original=0.5 learnable=true o=[0.75@31s 0.5@30s]",
				"@21 g reward=0.25 original=0.25 learnable=true o=[]",
			},
			stats: Stats{Emitted: 8, Learnable: 8, DefaultRewards: 5, Late: 4, BadRules: 1},
		},
		{
			name:  "a record without rules gets the window's wait, default and aggregation",
			rules: func(r *Rules) { r.RewardWait, r.DefaultReward, r.Aggregation = 20*time.Second, 0.3, Sum },
			in: script{}.at(0, rank("e")).at(0, rank("f")).at(15*time.Second, reward("e", 0.25)).
				at(19*time.Second, reward("e", 0.5)).at(20*time.Second, tick()),
			want: []string{
				"@4 e reward=0.75 original=0.75 learnable=true o=[0.25@15s 0.5@19s]",
				"@4 f reward=0.3 original=0.3 learnable=true o=[]",
			},
			stats: Stats{Emitted: 2, Learnable: 2, DefaultRewards: 1},
		},
		{
			name: "a record's wait ends its window, the backward window stays the window's",
			in: script{}.at(0, ruled(rank("e"), 3*time.Second, 0, "sum")).at(-back, reward("e", 0.5)).
				at(-back+ms, reward("e", 0.25)).at(3*time.Second-ms, reward("e", 1)).at(3*time.Second, reward("e", 0.125)),
			want: []string{
				"@1 late e 0.5@-2m0s offset=1",
				"@4 e reward=1.25 original=1.25 learnable=true o=[0.25@-1m59.999s 1@2.999s]",
				"@4 late e 0.125@3s offset=4",
			},
			stats: Stats{Emitted: 1, Learnable: 1, Late: 2},
		},
		{
			name: "an outcome before its rank waits the backward window, whatever the rank's wait",
			in: script{}.at(0, reward("e", 0.5)).at(back-ms, tick()).at(back-ms, ruled(rank("e"), time.Hour, 0, "earliest")).
				at(0, reward("x", 1)).at(back, tick()).at(back, ruled(rank("x"), time.Hour, 0, "earliest")).
				at(back-ms+time.Hour, tick()).at(back+time.Hour, tick()),
			want: []string{
				"@4 dangling x 1@0s offset=3",
				"@6 e reward=0.5 original=0.5 learnable=true o=[0.5@0s]",
				"@7 x reward=0 original=0 learnable=true o=[]",
			},
			stats: Stats{Emitted: 2, Learnable: 2, DefaultRewards: 1, Dangling: 1},
		},
		{
			name: "invalid rules fall back to the window's and are counted",
			in: script{}.
				at(0, ruled(rank("wait0"), 0, 0, "sum")).
				at(0, ruled(rank("waitneg"), -time.Second, 0, "sum")).
				at(0, ruled(rank("wait31d"), 31*24*time.Hour, 0, "sum")).
				at(0, ruled(rank("agg"), time.Minute, 0, "mean")).
				at(0, ruled(rank("aggempty"), time.Minute, 0, "")).
				at(0, ruled(rank("dflt"), time.Minute, 1.5, "sum")).
				at(0, ruled(rank("nan"), time.Minute, float32(math.NaN()), "sum")).
				at(0, ruled(rank("inf"), time.Minute, float32(math.Inf(-1)), "sum")).
				at(time.Second, reward("wait0", 0.25)).at(time.Second, reward("wait0", 0.5)).
				at(wait, tick()),
			want: []string{
				"@10 wait0 reward=0.25 original=0.25 learnable=true o=[0.25@1s 0.5@1s]",
				"@10 waitneg reward=-0.5 original=-0.5 learnable=true o=[]",
				"@10 wait31d reward=-0.5 original=-0.5 learnable=true o=[]",
				"@10 agg reward=-0.5 original=-0.5 learnable=true o=[]",
				"@10 aggempty reward=-0.5 original=-0.5 learnable=true o=[]",
				"@10 dflt reward=-0.5 original=-0.5 learnable=true o=[]",
				"@10 nan reward=-0.5 original=-0.5 learnable=true o=[]",
				"@10 inf reward=-0.5 original=-0.5 learnable=true o=[]",
			},
			stats: Stats{Emitted: 8, Learnable: 8, DefaultRewards: 7, BadRules: 8},
		},
		{
			name: "the bounds of valid rules",
			in: script{}.
				at(0, ruled(rank("ms"), ms, -1, "SUM")).
				at(0, ruled(rank("30d"), maxRecordWait, 1, "Average")).
				at(0, reward("ms", 0.25)).at(0, reward("ms", 0.5)).at(ms, reward("ms", 1)).
				at(maxRecordWait, tick()),
			want: []string{
				"@4 ms reward=0.75 original=0.75 learnable=true o=[0.25@0s 0.5@0s]",
				"@4 late ms 1@1ms offset=4",
				"@5 30d reward=1 original=1 learnable=true o=[]",
			},
			stats: Stats{Emitted: 2, Learnable: 2, DefaultRewards: 1, Late: 1},
		},
		{
			// The loop went apprentice while the joiner's flag says
			// online: ranks with rules learn by the mode they logged.
			name: "a record with rules is learnable by its own mode",
			in: script{}.
				at(0, ruled(modeRank("base", 0, apprentice), time.Minute, 0, "earliest")).
				at(0, ruled(modeRank("other", 2, apprentice), time.Minute, 0, "earliest")).
				at(0, ruled(modeRank("log", 0, logging), time.Minute, 0, "earliest")).
				at(0, ruled(modeRank("bad", 0, apprentice), time.Minute, 0, "mean")).
				at(0, modeRank("old", 0, apprentice)).
				at(time.Second, reward("base", 0.25)).at(time.Second, reward("other", 0.25)).
				at(time.Second, reward("log", 0.25)).at(time.Second, reward("bad", 0.25)).at(time.Second, reward("old", 0.25)).
				at(time.Minute, tick()),
			want: []string{
				"@10 bad reward=1 original=0.25 learnable=true o=[0.25@1s]", // the window's 10s, own mode
				"@10 old reward=1 original=0.25 learnable=false o=[0.25@1s]",
				"@10 base reward=1 original=0.25 learnable=true o=[0.25@1s]",
				"@10 other reward=0 original=0.25 learnable=true o=[0.25@1s]",
				"@10 log reward=0.25 original=0.25 learnable=false o=[0.25@1s]",
			},
			stats: Stats{Emitted: 5, Learnable: 3, LoggingOnly: 1, OtherMode: 1, BadRules: 1},
		},
		{
			name:  "a record with rules logged online is learnable in a joiner set to apprentice",
			rules: func(r *Rules) { r.LearningMode = apprentice },
			in: script{}.at(0, ruled(modeRank("e", 2, online), 5*time.Second, 0, "earliest")).at(time.Second, reward("e", 0.25)).
				at(0, modeRank("f", 2, online)).at(5*time.Second, tick()).at(wait, tick()),
			want: []string{
				"@3 e reward=0.25 original=0.25 learnable=true o=[0.25@1s]",
				"@4 f reward=-0.5 original=-0.5 learnable=false o=[]",
			},
			stats: Stats{Emitted: 2, Learnable: 1, DefaultRewards: 1, OtherMode: 1},
		},
		{
			name: "a repeated rank with other rules counts once, judged by the first",
			in: script{}.at(0, ruled(rank("e"), 5*time.Second, 0, "sum")).at(time.Second, reward("e", 0.25)).
				at(2*time.Second, ruled(rank("e"), time.Minute, 0.5, "max")).at(3*time.Second, reward("e", 0.5)).
				at(10*time.Second, reward("e", 1)).at(time.Minute, tick()),
			want: []string{
				"@4 e reward=0.75 original=0.75 learnable=true o=[0.25@1s 0.5@3s]",
				"@4 late e 1@10s offset=4",
			},
			stats: Stats{Emitted: 1, Learnable: 1, Late: 1, DuplicateRanks: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := testRules()
			if tt.rules != nil {
				tt.rules(&r)
			}
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			w := NewWindow(r)
			got := run(w, tt.in)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tt.want, "\n\t"))
			}
			if w.Stats() != tt.stats {
				t.Errorf("stats = %+v\nwant    %+v", w.Stats(), tt.stats)
			}
		})
	}
}

// TestStatsArithmetic checks that Add and Sub cover every counter, so
// that a new one (BadRules) reaches the joiner's counters through the
// batches, which carry differences of a window's Stats.
func TestStatsArithmetic(t *testing.T) {
	t.Parallel()
	var a, b Stats
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	for i := range va.NumField() {
		va.Field(i).SetInt(int64(10 * (i + 1)))
		vb.Field(i).SetInt(int64(i + 1))
	}
	sum := a
	sum.Add(b)
	diff := a.Sub(b)
	vs, vd := reflect.ValueOf(sum), reflect.ValueOf(diff)
	for i := range va.NumField() {
		name := va.Type().Field(i).Name
		if got, want := vs.Field(i).Int(), int64(11*(i+1)); got != want {
			t.Errorf("Add: %s = %d, want %d", name, got, want)
		}
		if got, want := vd.Field(i).Int(), int64(9*(i+1)); got != want {
			t.Errorf("Sub: %s = %d, want %d", name, got, want)
		}
	}
}

// TestJoinerRankRules runs rank records that carry rules through the
// joiner's shell: decoded from the record, a minute's wait takes a reward
// 30s after the rank that the joiner's 10s would have found late, a
// record's default reward is written as its cost, and invalid rules are
// counted.
func TestJoinerRankRules(t *testing.T) {
	t.Parallel()
	m := newMem()
	withRules := func(key string, wait time.Duration, dflt float32) *eventsv1.RankEvent {
		return ruled(Input{Rank: rankEvent(key, 0, false, online)}, wait, dflt, "sum").Rank
	}
	if err := m.Write(context.Background(),
		record(eventlog.TypeRank, "l/a", withRules("l/a", time.Minute, 0), t0),
		record(eventlog.TypeReward, "l/a", &eventsv1.RewardEvent{Value: 0.5, Id: 1}, t0.Add(30*time.Second)),
		record(eventlog.TypeReward, "l/a", &eventsv1.RewardEvent{Value: 0.25, Id: 2}, t0.Add(31*time.Second)),
		record(eventlog.TypeRank, "l/b", withRules("l/b", time.Minute, 0.75), t0),
		record(eventlog.TypeRank, "l/c", withRules("l/c", -time.Minute, 0.75), t0)); err != nil {
		t.Fatal(err)
	}
	j, stop := startJoiner(t, m, t0.Add(time.Hour))
	waitFor(t, j, "every event", func(s Stats) bool { return s.Emitted == 3 })
	stop()
	if c := j.Counters(); c != (Stats{Emitted: 3, Learnable: 3, DefaultRewards: 2, BadRules: 1}) {
		t.Errorf("counters %+v", c)
	}
	costs := map[string]string{}
	for p := range 2 {
		for _, r := range m.Records(eventlog.JoinedTopic, p) {
			var line struct {
				Cost json.Number `json:"_label_cost"`
			}
			if err := json.Unmarshal(r.Value, &line); err != nil {
				t.Fatal(err)
			}
			costs[string(r.Key)] = line.Cost.String()
		}
	}
	// a: -(0.5 + 0.25); b: its own default; c: the joiner's default.
	if want := map[string]string{"l/a": "-0.75", "l/b": "-0.75", "l/c": "0.5"}; !maps.Equal(costs, want) {
		t.Errorf("joined costs %v, want %v", costs, want)
	}
}
