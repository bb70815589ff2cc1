package joiner

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	wait = 10 * time.Second
	back = 2 * time.Minute
	ms   = time.Millisecond
)

var (
	online     = eventsv1.LearningMode_LEARNING_MODE_ONLINE
	apprentice = eventsv1.LearningMode_LEARNING_MODE_APPRENTICE
	logging    = eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY
)

// testRules are the rules of the table tests: default reward -0.5 so that
// it cannot be mistaken for a real reward.
func testRules() Rules {
	return Rules{RewardWait: wait, Backward: back, DefaultReward: -0.5, Aggregation: Earliest, LearningMode: online}
}

// script builds inputs with consecutive offsets.
type script []Input

func (s script) at(d time.Duration, in Input) script {
	in.Time, in.Offset = t0.Add(d), int64(len(s))
	return append(s, in)
}

// rankEvent is a rank of 3 eligible actions; chosen is the model's choice.
func rankEvent(key string, chosen uint32, deferred bool, mode eventsv1.LearningMode) *eventsv1.RankEvent {
	ranking := []uint32{chosen}
	for a := range uint32(3) {
		if a != chosen {
			ranking = append(ranking, a)
		}
	}
	return &eventsv1.RankEvent{
		Loop: "l", EventId: key, Context: []byte(`{"U":{"x":1},"_multi":[{"a":1},{"b":1},{"c":1}]}`),
		Ranking: ranking, Probabilities: []float32{0.8, 0.1, 0.1}, Deferred: deferred, LearningMode: mode,
	}
}

func rank(key string) Input {
	return Input{Kind: Rank, Key: key, Rank: rankEvent(key, 1, false, online)}
}
func deferredRank(key string) Input {
	return Input{Kind: Rank, Key: key, Rank: rankEvent(key, 1, true, online)}
}
func modeRank(key string, chosen uint32, mode eventsv1.LearningMode) Input {
	return Input{Kind: Rank, Key: key, Rank: rankEvent(key, chosen, false, mode)}
}
func reward(key string, v float32) Input { return Input{Kind: Reward, Key: key, Value: v} }
func rewardID(key string, v float32, id uint64) Input {
	return Input{Kind: Reward, Key: key, Value: v, ID: id}
}
func activate(key string) Input { return Input{Kind: Activate, Key: key} }
func tick() Input               { return Input{Kind: Tick} }

// run feeds every input and describes everything produced, each line
// prefixed with the offset of the input that produced it.
func run(w *Window, s script) []string {
	var got []string
	var out Output
	for _, in := range s {
		w.Add(in, &out)
		for _, j := range out.Joined {
			resolve(w, &j, s)
			got = append(got, fmt.Sprintf("@%d %s", in.Offset, describe(j)))
		}
		for _, a := range out.Audits {
			got = append(got, fmt.Sprintf("@%d %s", in.Offset, describeAudit(a)))
		}
		for _, b := range out.Bad {
			got = append(got, fmt.Sprintf("@%d bad %d", in.Offset, b.Offset))
		}
		out.Reset()
	}
	return got
}

// resolve fills in what a window leaves to its caller (see [Joined]):
// the key, rank and trace of the rank record at j.Offset in s, whose
// offsets are consecutive, and the slots of a multi-slot rank, as the
// joiner does with the record it reads back.
func resolve(w *Window, j *Joined, s script) {
	in := s[j.Offset-s[0].Offset]
	if in.Offset != j.Offset || in.Kind != Rank || !w.IsKey(j, []byte(in.Key)) {
		panic(fmt.Sprintf("joined offset %d is not a rank of the script", j.Offset))
	}
	j.setRank(&in)
}

// describe renders what the tests check of a joined event: key, reward,
// original reward, learnable and every outcome with its time after t0.
func describe(j Joined) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s reward=%v original=%v learnable=%v o=[", j.Key, j.Reward, j.Original, j.Learnable)
	for i, o := range j.Outcomes {
		if i > 0 {
			b.WriteString(" ")
		}
		if o.Activate {
			fmt.Fprintf(&b, "act@%v", o.Time.Sub(t0))
		} else {
			fmt.Fprintf(&b, "%v@%v", o.Value, o.Time.Sub(t0))
		}
	}
	b.WriteString("]")
	return b.String()
}

func describeAudit(a Audit) string {
	what := fmt.Sprint(a.Outcome.Value)
	if a.Outcome.Activate {
		what = "act"
	}
	return fmt.Sprintf("%s %s %s@%v offset=%d", a.Reason, a.Key, what, a.Outcome.Time.Sub(t0), a.Offset)
}

func TestWindowRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		rules func(*Rules)
		in    script
		want  []string
		stats Stats
	}{
		{
			name: "reward at window - 1ms counts",
			in:   script{}.at(0, rank("e")).at(wait-ms, reward("e", 1)).at(wait, tick()),
			want: []string{
				"@2 e reward=1 original=1 learnable=true o=[1@9.999s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1},
		},
		{
			name: "reward at the window end is late",
			in:   script{}.at(0, rank("e")).at(wait, reward("e", 1)),
			want: []string{
				"@1 e reward=-0.5 original=-0.5 learnable=true o=[]",
				"@1 late e 1@10s offset=1",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1, Late: 1},
		},
		{
			name: "reward at window + 1ms is late",
			in:   script{}.at(0, rank("e")).at(wait+ms, reward("e", 1)),
			want: []string{
				"@1 e reward=-0.5 original=-0.5 learnable=true o=[]",
				"@1 late e 1@10.001s offset=1",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1, Late: 1},
		},
		{
			name: "reward stamped inside the window but arriving after it closed is late",
			in:   script{}.at(0, rank("e")).at(wait, tick()).at(wait-ms, reward("e", 1)),
			want: []string{
				"@1 e reward=-0.5 original=-0.5 learnable=true o=[]",
				"@2 late e 1@9.999s offset=2",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1, Late: 1},
		},
		{
			name:  "slack keeps the window open for reordered records",
			rules: func(r *Rules) { r.Slack = time.Second },
			in: script{}.at(0, rank("e")).at(wait+999*ms, tick()).at(wait-ms, reward("e", 1)).
				at(wait+time.Second, tick()),
			want: []string{
				"@3 e reward=1 original=1 learnable=true o=[1@9.999s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1},
		},
		{
			name: "reward before its rank within the backward window counts",
			in:   script{}.at(0, reward("e", 0.7)).at(back-ms, rank("e")).at(back-ms+wait, tick()),
			want: []string{
				"@2 e reward=0.7 original=0.7 learnable=true o=[0.7@0s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1},
		},
		{
			name: "reward the backward window before its rank is late",
			in:   script{}.at(0, reward("e", 0.7)).at(back, rank("e")).at(back+wait, tick()),
			want: []string{
				"@1 late e 0.7@0s offset=0",
				"@2 e reward=-0.5 original=-0.5 learnable=true o=[]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1, Late: 1},
		},
		{
			name: "reward with no rank dangles once the backward window passes",
			in:   script{}.at(0, reward("x", 1)).at(back-ms, tick()).at(back, tick()),
			want: []string{
				"@2 dangling x 1@0s offset=0",
			},
			stats: Stats{Dangling: 1},
		},
		{
			name: "idle partition closes on a tick and not before",
			in:   script{}.at(0, rank("e")).at(wait-ms, tick()).at(wait, tick()),
			want: []string{
				"@2 e reward=-0.5 original=-0.5 learnable=true o=[]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1},
		},
		{
			name: "deferred and never activated is emitted not learnable",
			in:   script{}.at(0, deferredRank("e")).at(time.Second, reward("e", 1)).at(wait, tick()),
			want: []string{
				"@2 e reward=1 original=1 learnable=false o=[1@1s]",
			},
			stats: Stats{Emitted: 1, NotActivated: 1},
		},
		{
			name: "deferred, activated and rewarded learns the reward",
			in:   script{}.at(0, deferredRank("e")).at(time.Second, activate("e")).at(2*time.Second, reward("e", 0.25)).at(wait, tick()),
			want: []string{
				"@3 e reward=0.25 original=0.25 learnable=true o=[act@1s 0.25@2s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1},
		},
		{
			name: "deferred and activated without reward gets the default reward",
			in:   script{}.at(0, deferredRank("e")).at(time.Second, activate("e")).at(wait, tick()),
			want: []string{
				"@2 e reward=-0.5 original=-0.5 learnable=true o=[act@1s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1},
		},
		{
			name: "activation before its rank activates",
			in:   script{}.at(0, activate("e")).at(time.Second, deferredRank("e")).at(time.Second+wait, tick()),
			want: []string{
				"@2 e reward=-0.5 original=-0.5 learnable=true o=[act@0s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1},
		},
		{
			name: "activation after the window does not activate",
			in:   script{}.at(0, deferredRank("e")).at(wait, activate("e")),
			want: []string{
				"@1 e reward=-0.5 original=-0.5 learnable=false o=[]",
				"@1 late e act@10s offset=1",
			},
			stats: Stats{Emitted: 1, DefaultRewards: 1, NotActivated: 1, Late: 1},
		},
		{
			name: "duplicate rank counts once, the first wins",
			in: script{}.at(0, rank("e")).at(time.Second, reward("e", 1)).at(5*time.Second, rank("e")).
				at(wait, tick()),
			want: []string{
				"@3 e reward=1 original=1 learnable=true o=[1@1s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DuplicateRanks: 1},
		},
		{
			name: "duplicate rank after its window closed is not joined again",
			in:   script{}.at(0, rank("e")).at(wait, tick()).at(0, rank("e")).at(wait+back, tick()),
			want: []string{
				"@1 e reward=-0.5 original=-0.5 learnable=true o=[]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1, DuplicateRanks: 1},
		},
		{
			name:  "duplicate reward record counts once, a second reward twice",
			rules: func(r *Rules) { r.Aggregation = Sum },
			in: script{}.at(0, rank("e")).at(time.Second, rewardID("e", 0.5, 7)).at(time.Second, rewardID("e", 0.5, 7)).
				at(2*time.Second, rewardID("e", 0.5, 8)).at(wait, tick()).at(time.Second, rewardID("e", 0.5, 8)),
			want: []string{
				"@4 e reward=1 original=1 learnable=true o=[0.5@1s 0.5@2s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DuplicateOutcomes: 2},
		},
		{
			name:  "duplicate reward before its rank counts once",
			rules: func(r *Rules) { r.Aggregation = Sum },
			in: script{}.at(0, rewardID("e", 0.5, 7)).at(0, rewardID("e", 0.5, 7)).at(time.Second, rank("e")).
				at(time.Second, rewardID("e", 0.5, 7)).at(time.Second+wait, tick()),
			want: []string{
				"@4 e reward=0.5 original=0.5 learnable=true o=[0.5@0s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DuplicateOutcomes: 2},
		},
		{
			name: "rewards without ids are never merged",
			in: script{}.at(0, rank("e")).at(time.Second, reward("e", 0.5)).at(time.Second, reward("e", 0.5)).
				at(wait, tick()),
			want: []string{
				"@3 e reward=0.5 original=0.5 learnable=true o=[0.5@1s 0.5@1s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1},
		},
		{
			name: "a rank behind the watermark closes at once with what came before it",
			in: script{}.at(0, reward("e", 0.3)).at(20*time.Second, tick()).at(ms, rank("e")).
				at(2*time.Second, reward("e", 1)),
			want: []string{
				"@2 e reward=0.3 original=0.3 learnable=true o=[0.3@0s]",
				"@3 late e 1@2s offset=3",
			},
			stats: Stats{Emitted: 1, Learnable: 1, Late: 1},
		},
		{
			name: "a closed event is forgotten the backward window after its window or its last late outcome",
			in: script{}.at(0, rank("e")).at(wait, tick()).at(wait+back-ms, reward("e", 1)).
				at(wait+back, tick()).at(wait+back, reward("e", 0.5)).at(wait+2*back, tick()).
				at(wait+2*back, reward("e", 0.25)).at(wait+3*back, tick()),
			want: []string{
				"@1 e reward=-0.5 original=-0.5 learnable=true o=[]",
				"@2 late e 1@2m9.999s offset=2",
				"@4 late e 0.5@2m10s offset=4",
				"@7 dangling e 0.25@4m10s offset=6",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1, Late: 2, Dangling: 1},
		},
		{
			name: "events close in deadline order, then rank order",
			in: script{}.at(time.Second, rank("b")).at(0, rank("a")).at(time.Second, rank("c")).
				at(2*time.Second, reward("b", 1)).at(wait+time.Second, tick()),
			want: []string{
				"@4 a reward=-0.5 original=-0.5 learnable=true o=[]",
				"@4 b reward=1 original=1 learnable=true o=[1@2s]",
				"@4 c reward=-0.5 original=-0.5 learnable=true o=[]",
			},
			stats: Stats{Emitted: 3, Learnable: 3, DefaultRewards: 2},
		},
		{
			name: "an undecodable record is reported and its time still counts",
			in:   script{}.at(0, rank("e")).at(wait, Input{Kind: Bad}),
			want: []string{
				"@1 e reward=-0.5 original=-0.5 learnable=true o=[]",
				"@1 bad 1",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1, Undecodable: 1},
		},
		{
			name:  "apprentice: the model chose the baseline, reward 1",
			rules: func(r *Rules) { r.LearningMode = apprentice },
			in:    script{}.at(0, modeRank("e", 0, apprentice)).at(time.Second, reward("e", 0.25)).at(wait, tick()),
			want: []string{
				"@2 e reward=1 original=0.25 learnable=true o=[0.25@1s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1},
		},
		{
			name:  "apprentice: the model chose another action, reward 0",
			rules: func(r *Rules) { r.LearningMode = apprentice },
			in:    script{}.at(0, modeRank("e", 2, apprentice)).at(time.Second, reward("e", 0.25)).at(wait, tick()),
			want: []string{
				"@2 e reward=0 original=0.25 learnable=true o=[0.25@1s]",
			},
			stats: Stats{Emitted: 1, Learnable: 1},
		},
		{
			name:  "apprentice without a reward keeps the default as original",
			rules: func(r *Rules) { r.LearningMode = apprentice },
			in:    script{}.at(0, modeRank("e", 0, apprentice)).at(wait, tick()),
			want: []string{
				"@1 e reward=1 original=-0.5 learnable=true o=[]",
			},
			stats: Stats{Emitted: 1, Learnable: 1, DefaultRewards: 1},
		},
		{
			name:  "logging only: joined with its reward, never learned",
			rules: func(r *Rules) { r.LearningMode = logging },
			in:    script{}.at(0, modeRank("e", 0, logging)).at(time.Second, reward("e", 0.25)).at(wait, tick()),
			want: []string{
				"@2 e reward=0.25 original=0.25 learnable=false o=[0.25@1s]",
			},
			stats: Stats{Emitted: 1, LoggingOnly: 1},
		},
		{
			name: "a rank logged in another learning mode is not learned",
			in: script{}.at(0, modeRank("e", 0, apprentice)).at(0, modeRank("f", 0, eventsv1.LearningMode_LEARNING_MODE_UNSPECIFIED)).
				at(wait, tick()),
			want: []string{
				"@2 e reward=1 original=-0.5 learnable=false o=[]",
				"@2 f reward=-0.5 original=-0.5 learnable=true o=[]",
			},
			stats: Stats{Emitted: 2, Learnable: 1, DefaultRewards: 2, OtherMode: 1},
		},
	}
	// Every aggregation over the same four rewards: arriving 0.5 at 3s,
	// 0.25 at 1s, 1 at 2s, -0.5 at 4s, and an activation that never counts.
	aggs := []struct {
		agg  Aggregation
		want string
	}{
		{Earliest, "0.25"},                  // the earliest time, though it arrived second
		{Sum, "1.25"},                       // 0.5 + 0.25 + 1 - 0.5
		{Average, "0.3125"},                 // 1.25 / 4
		{Median, "0.375"},                   // (0.25 + 0.5) / 2 of -0.5 0.25 0.5 1
		{Min, "-0.5"},                       //
		{Max, "1"},                          //
		{Aggregation("median3"), "0.5"},     // odd count: below, without the -0.5
		{Aggregation("sum-float32"), "0.3"}, // float32 arithmetic: 0.1 + 0.2
	}
	for _, a := range aggs {
		in := script{}.at(0, rank("e")).at(3*time.Second, reward("e", 0.5)).at(time.Second, reward("e", 0.25)).
			at(2*time.Second, reward("e", 1)).at(5*time.Second, activate("e")).at(4*time.Second, reward("e", -0.5)).at(wait, tick())
		o := "0.5@3s 0.25@1s 1@2s act@5s -0.5@4s"
		agg := a.agg
		switch a.agg {
		case "median3":
			agg = Median
			in = slices.Delete(in, 5, 6)
			in[5].Offset = 5
			o = "0.5@3s 0.25@1s 1@2s act@5s"
		case "sum-float32":
			agg = Sum
			in = script{}.at(0, rank("e")).at(time.Second, reward("e", 0.1)).at(2*time.Second, reward("e", 0.2)).
				at(wait, tick())
			o = "0.1@1s 0.2@2s"
		}
		last := in[len(in)-1].Offset
		tests = append(tests, struct {
			name  string
			rules func(*Rules)
			in    script
			want  []string
			stats Stats
		}{
			name:  "aggregation " + string(a.agg),
			rules: func(r *Rules) { r.Aggregation = agg },
			in:    in,
			want:  []string{fmt.Sprintf("@%d e reward=%s original=%s learnable=true o=[%s]", last, a.want, a.want, o)},
			stats: Stats{Emitted: 1, Learnable: 1},
		})
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

func TestRulesValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mod  func(*Rules)
		ok   bool
	}{
		{"valid", func(*Rules) {}, true},
		{"unspecified mode is online", func(r *Rules) { r.LearningMode = 0 }, true},
		{"zero wait", func(r *Rules) { r.RewardWait = 0 }, false},
		{"negative backward", func(r *Rules) { r.Backward = -1 }, false},
		{"negative slack", func(r *Rules) { r.Slack = -1 }, false},
		{"default reward above 1", func(r *Rules) { r.DefaultReward = 1.5 }, false},
		{"default reward NaN", func(r *Rules) { r.DefaultReward = float32(math.NaN()) }, false},
		{"unknown aggregation", func(r *Rules) { r.Aggregation = "mean" }, false},
		{"unknown mode", func(r *Rules) { r.LearningMode = 9 }, false},
	}
	for _, tt := range tests {
		r := testRules()
		tt.mod(&r)
		if err := r.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// TestWindowCheckpoint follows the checkpoint through a script: the first
// record open state needs, the newest time before it, and the input after
// the last one.
func TestWindowCheckpoint(t *testing.T) {
	t.Parallel()
	w := NewWindow(testRules())
	s := script{}.
		at(0, tick()).                          // 0: nothing open
		at(time.Second, reward("a", 1)).        // 1: early reward needed
		at(2*time.Second, rank("b")).           // 2: b pending
		at(3*time.Second, rank("a")).           // 3: a takes the reward at 1
		at(3*time.Second+wait, tick()).         // 4: a, b closed, remembered
		at(3*time.Second+wait+back-ms, tick()). // 5: b forgotten (deadline 12s + 2m), a not yet
		at(3*time.Second+wait+back, tick()).    // 6: a forgotten with its reward
		at(4*time.Minute, reward("x", 1)).      // 7: early
		at(4*time.Minute+back, tick())          // 8: x dangles
	want := []Checkpoint{
		{Offset: 1, Watermark: t0, Next: 1},
		{Offset: 1, Watermark: t0, Next: 2},
		{Offset: 1, Watermark: t0, Next: 3},
		{Offset: 1, Watermark: t0, Next: 4},
		{Offset: 1, Watermark: t0, Next: 5},
		{Offset: 1, Watermark: t0, Next: 6},
		{Offset: 7, Watermark: t0.Add(3*time.Second + wait + back), Next: 7},
		{Offset: 7, Watermark: t0.Add(3*time.Second + wait + back), Next: 8},
		{Offset: 9, Watermark: t0.Add(4*time.Minute + back), Next: 9},
	}
	var out Output
	for i, in := range s {
		w.Add(in, &out)
		if got := w.Checkpoint(); got.Offset != want[i].Offset || !got.Watermark.Equal(want[i].Watermark) || got.Next != want[i].Next {
			t.Errorf("after input %d: checkpoint %+v, want %+v", i, got, want[i])
		}
	}
	if w.Pending() != 0 || w.index.n != 0 || len(w.early) != 0 {
		t.Errorf("state left: %d pending, %d events, %d early", w.Pending(), w.index.n, len(w.early))
	}
}

func TestCheckpointEncoding(t *testing.T) {
	t.Parallel()
	wm, tick := time.Unix(1_767_225_600, 123_000_000), time.Unix(1_767_225_601, 0)
	tests := []struct {
		cp   Checkpoint
		text string
	}{
		{Checkpoint{Offset: 0, Next: 0}, "pzj1 0 0 0 0"},
		{Checkpoint{Offset: 12, Watermark: wm, Next: 40}, "pzj1 12 1767225600123000000 40 0"},
		{Checkpoint{Offset: 12, Watermark: wm, Tick: tick, Next: 40}, "pzj1 12 1767225600123000000 40 1767225601000000000"},
	}
	for _, tt := range tests {
		if got := tt.cp.String(); got != tt.text {
			t.Errorf("%+v encodes as %q, want %q", tt.cp, got, tt.text)
		}
		back, err := ParseCheckpoint(tt.text)
		if err != nil || back.Offset != tt.cp.Offset || back.Next != tt.cp.Next || !back.Watermark.Equal(tt.cp.Watermark) || !back.Tick.Equal(tt.cp.Tick) {
			t.Errorf("%q decodes as %+v, %v", tt.text, back, err)
		}
	}
	// Checkpoints of joiners from before the clock-skew bound have no tick.
	if cp, err := ParseCheckpoint("pzj1 12 1767225600123000000 40"); err != nil || cp.Offset != 12 || !cp.Watermark.Equal(wm) || cp.Next != 40 || !cp.Tick.IsZero() {
		t.Errorf("an old checkpoint decodes as %+v, %v", cp, err)
	}
	for _, bad := range []string{"", "something else", "pzj1 1 2", "pzj1 a b c", "pzj1 5 0 4", "pzj1 -1 0 0", "pzj1 1 0 1 0 5"} {
		if cp, err := ParseCheckpoint(bad); err == nil {
			t.Errorf("%q decodes as %+v, want an error", bad, cp)
		}
	}
}

// TestWindowClockSkew checks MaxSkew: a record stamped an hour ahead of the
// joiners' clock (the ticks) neither closes anyone's window nor joins late
// rewards; the next tick audits it as skewed. Records written while no
// joiner ticked (a joiner outage) are ahead of the last tick too, but the
// tick after them vouches for them: they are joined, not audited.
func TestWindowClockSkew(t *testing.T) {
	t.Parallel()
	r := testRules()
	r.MaxSkew = time.Minute
	s := script{}.
		at(0, tick()).                                   // 0
		at(time.Second, rank("a")).                      // 1
		at(time.Hour, rank("x")).                        // 2: an hour ahead of the tick at 0
		at(time.Hour, reward("a", 1)).                   // 3: also ahead: not joined to a
		at(2*time.Second, reward("a", 0.5)).             // 4: on time for a
		at(12*time.Second, rank("c")).                   // 5: moves the watermark: a closes
		at(13*time.Second, tick()).                      // 6: audits 2 and 3
		at(25*time.Second, tick()).                      // 7: c closes without a reward
		at(3*time.Minute, rank("b")).                    // 8: after an outage: ahead of the tick at 25s
		at(3*time.Minute+time.Second, tick()).           // 9: vouches for 8
		at(3*time.Minute+2*time.Second, reward("b", 1)). // 10
		at(3*time.Minute+20*time.Second, tick())         // 11: b closes with 1
	want := []string{
		"@3 late a 1@1h0m0s offset=3", // also outside a's window, as a late reward
		"@5 a reward=0.5 original=0.5 learnable=true o=[0.5@2s]",
		"@6 skewed x",
		"@6 skewed a",
		"@7 c reward=-0.5 original=-0.5 learnable=true o=[]",
		"@11 b reward=1 original=1 learnable=true o=[1@3m2s]",
	}
	w := NewWindow(r)
	got := skewRun(w, s)
	if !slices.Equal(got, want) {
		t.Errorf("outputs\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
	if st := w.Stats(); st.Skewed != 2 || st.Emitted != 3 || st.Late != 1 {
		t.Errorf("stats %+v, want 2 skewed, 3 emitted, 1 late", st)
	}
	// Resumed after record 3, while 2 and 3 wait for the tick: the
	// checkpoint goes back to a's rank and brings the joiners' clock
	// along, so the resumed window writes what the first one wrote from
	// there (a closes at 5, not at the next tick).
	w1 := NewWindow(r)
	var out Output
	for _, in := range s[:4] {
		w1.Add(in, &out)
	}
	cp := w1.Checkpoint()
	if cp.Offset != 1 || !cp.Tick.Equal(t0) || cp.Next != 4 {
		t.Fatalf("checkpoint %+v, want offset 1 (a's rank), the tick at 0, next 4", cp)
	}
	w2 := NewWindow(r)
	w2.Resume(cp)
	if got := skewRun(w2, s[cp.Offset:]); !slices.Equal(got, want[1:]) {
		t.Errorf("resumed outputs\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want[1:], "\n\t"))
	}
}

// skewRun is run with skewed audits described by reason and key only.
func skewRun(w *Window, s script) []string {
	var got []string
	for _, l := range run(w, s) {
		if i := strings.Index(l, " skewed "); i >= 0 {
			l = l[:strings.Index(l[i+len(" skewed "):], " ")+i+len(" skewed ")]
		}
		got = append(got, l)
	}
	return got
}

// TestKeyIndex checks the key index against a map under inserts and
// removals whose hashes crowd a few home slots, across the table's end
// and through its growth, so that probing and the backward shift of
// removals are exercised.
func TestKeyIndex(t *testing.T) {
	t.Parallel()
	var evs slab[event]
	var x keyIndex
	want := map[keyHash]uint32{}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 200_000 {
		// Homes 1020..1027 and their multiples: both sides of the end of
		// a 1024-slot table, and clustered in larger ones.
		h := keyHash{uint64(1020 + rng.IntN(8) + 1024*rng.IntN(4)), rng.Uint64()}
		if len(want) > 0 && rng.IntN(2) == 0 {
			for k, s := range want { // any one
				x.remove(s, &evs)
				evs.release(s)
				delete(want, k)
				if got := x.find(k, &evs); got != 0 {
					t.Fatalf("op %d: removed hash found at slot %d", i, got)
				}
				break
			}
		} else if len(want) < 3000 {
			s := evs.alloc()
			evs.at(s).hash = h
			x.insert(s, &evs)
			want[h] = s
		}
		if i%1000 == 0 {
			for k, s := range want {
				if got := x.find(k, &evs); got != s {
					t.Fatalf("op %d: hash %v found at slot %d, want %d", i, k, got, s)
				}
			}
			if x.n != len(want) {
				t.Fatalf("op %d: %d entries, want %d", i, x.n, len(want))
			}
		}
	}
}
