package joiner

import (
	"testing"
	"time"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const wait = 10 * time.Second

func rules(agg string) Rules {
	return Rules{RewardWait: wait, Backward: 2 * time.Minute, DefaultReward: -0.5, Aggregation: agg}
}

// script builds inputs with consecutive offsets.
type script []Input

func (s script) at(d time.Duration, in Input) script {
	in.Time, in.Offset = t0.Add(d), int64(len(s))
	return append(s, in)
}

func rank(key string, deferred bool) Input {
	return Input{Kind: Rank, Key: key, Rank: &eventsv1.RankEvent{EventId: key, Context: []byte(`{"_multi":[{"a":1}]}`), Deferred: deferred, Ranking: []uint32{0}, Probabilities: []float32{1}}}
}
func reward(key string, v float32) Input { return Input{Kind: Reward, Key: key, Value: v} }
func activate(key string) Input          { return Input{Kind: Activate, Key: key} }
func tick() Input                        { return Input{Kind: Tick} }

// run feeds every input and returns everything emitted.
func run(w *Window, s script) []Joined {
	var out []Joined
	for _, in := range s {
		out = append(out, w.Add(in)...)
	}
	return out
}

func TestWindowRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		agg   string
		in    script
		want  []Joined // Key, Reward, Learnable and outcome count are compared
		stats Stats
	}{
		{
			name:  "reward inside the window counts",
			in:    script{}.at(0, rank("e", false)).at(wait-time.Millisecond, reward("e", 1)).at(wait, tick()),
			want:  []Joined{{Key: "e", Reward: 1, Learnable: true, Outcomes: make([]Outcome, 1)}},
			stats: Stats{Emitted: 1},
		},
		{
			name:  "reward at the window end is late",
			in:    script{}.at(0, rank("e", false)).at(wait, reward("e", 1)),
			want:  []Joined{{Key: "e", Reward: -0.5, Learnable: true}},
			stats: Stats{Emitted: 1, DefaultRewards: 1, Late: 1},
		},
		{
			name:  "reward after the window closed is late",
			in:    script{}.at(0, rank("e", false)).at(wait+time.Millisecond, tick()).at(wait+time.Millisecond, reward("e", 1)).at(3*time.Minute, tick()),
			want:  []Joined{{Key: "e", Reward: -0.5, Learnable: true}},
			stats: Stats{Emitted: 1, DefaultRewards: 1, Dangling: 1},
		},
		{
			name:  "reward before its rank within the backward window counts",
			in:    script{}.at(0, reward("e", 0.7)).at(2*time.Minute-time.Millisecond, rank("e", false)).at(3*time.Minute, tick()),
			want:  []Joined{{Key: "e", Reward: 0.7, Learnable: true, Outcomes: make([]Outcome, 1)}},
			stats: Stats{Emitted: 1},
		},
		{
			name:  "reward with no rank dangles once the backward window passes",
			in:    script{}.at(0, reward("x", 1)).at(2*time.Minute-time.Millisecond, tick()).at(2*time.Minute, tick()),
			stats: Stats{Dangling: 1},
		},
		{
			name:  "idle partition closes on a tick",
			in:    script{}.at(0, rank("e", false)).at(wait-time.Millisecond, tick()).at(wait, tick()),
			want:  []Joined{{Key: "e", Reward: -0.5, Learnable: true}},
			stats: Stats{Emitted: 1, DefaultRewards: 1},
		},
		{
			name:  "deferred and never activated is not learnable",
			in:    script{}.at(0, rank("e", true)).at(time.Second, reward("e", 1)).at(wait, tick()),
			want:  []Joined{{Key: "e", Reward: 1, Outcomes: make([]Outcome, 1)}},
			stats: Stats{Emitted: 1, NotActivated: 1},
		},
		{
			name:  "deferred and activated without reward gets the default reward",
			in:    script{}.at(0, rank("e", true)).at(time.Second, activate("e")).at(wait, tick()),
			want:  []Joined{{Key: "e", Reward: -0.5, Learnable: true, Outcomes: make([]Outcome, 1)}},
			stats: Stats{Emitted: 1, DefaultRewards: 1},
		},
		{
			name:  "activation after the window does not activate",
			in:    script{}.at(0, rank("e", true)).at(wait, activate("e")),
			want:  []Joined{{Key: "e", Reward: -0.5}},
			stats: Stats{Emitted: 1, DefaultRewards: 1, NotActivated: 1, Late: 1},
		},
		{
			name:  "duplicate rank counts once",
			in:    script{}.at(0, rank("e", false)).at(time.Millisecond, rank("e", false)).at(wait, tick()),
			want:  []Joined{{Key: "e", Reward: -0.5, Learnable: true}},
			stats: Stats{Emitted: 1, DefaultRewards: 1, DuplicateRanks: 1},
		},
		{
			name:  "earliest takes the reward with the earliest time",
			in:    script{}.at(0, rank("e", false)).at(2*time.Second, reward("e", 0.2)).at(time.Second, reward("e", 0.9)).at(wait, tick()),
			want:  []Joined{{Key: "e", Reward: 0.9, Learnable: true, Outcomes: make([]Outcome, 2)}},
			stats: Stats{Emitted: 1},
		},
		{
			name:  "sum adds every reward",
			agg:   Sum,
			in:    script{}.at(0, rank("e", false)).at(time.Second, reward("e", 0.75)).at(2*time.Second, reward("e", 0.5)).at(wait, tick()),
			want:  []Joined{{Key: "e", Reward: 1.25, Learnable: true, Outcomes: make([]Outcome, 2)}},
			stats: Stats{Emitted: 1},
		},
		{
			name: "events close in deadline order",
			in: script{}.at(0, rank("a", false)).at(time.Second, rank("b", false)).
				at(2*time.Second, reward("b", 1)).at(wait+time.Second, tick()),
			want: []Joined{
				{Key: "a", Reward: -0.5, Learnable: true},
				{Key: "b", Reward: 1, Learnable: true, Outcomes: make([]Outcome, 1)},
			},
			stats: Stats{Emitted: 2, DefaultRewards: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			agg := tt.agg
			if agg == "" {
				agg = Earliest
			}
			w := NewWindow(rules(agg))
			got := run(w, tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("emitted %d events, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, g := range got {
				want := tt.want[i]
				if g.Key != want.Key || g.Reward != want.Reward || g.Learnable != want.Learnable || len(g.Outcomes) != len(want.Outcomes) {
					t.Errorf("event %d = key %q reward %v learnable %v outcomes %d, want key %q reward %v learnable %v outcomes %d",
						i, g.Key, g.Reward, g.Learnable, len(g.Outcomes), want.Key, want.Reward, want.Learnable, len(want.Outcomes))
				}
			}
			if w.Stats() != tt.stats {
				t.Errorf("stats = %+v, want %+v", w.Stats(), tt.stats)
			}
		})
	}
}

func TestWindowCommitOffset(t *testing.T) {
	t.Parallel()
	w := NewWindow(rules(Earliest))
	steps := []struct {
		in   Input
		d    time.Duration
		want int64 // commit offset after the input
	}{
		{tick(), 0, 1},                          // nothing pending: after the last input
		{reward("a", 1), time.Second, 1},        // early reward at 1 must be replayed
		{rank("b", false), 2 * time.Second, 1},  // b pending at 2, the reward at 1 still early
		{rank("a", false), 3 * time.Second, 1},  // a took its early reward at offset 1
		{tick(), 3*time.Second + wait, 5},       // a and b closed
		{rank("c", false), 14 * time.Second, 5}, // c pending at 5
		{tick(), 14*time.Second + wait, 7},
	}
	for i, s := range steps {
		s.in.Time, s.in.Offset = t0.Add(s.d), int64(i)
		w.Add(s.in)
		if got := w.CommitOffset(); got != s.want {
			t.Fatalf("after input %d: commit offset %d, want %d", i, got, s.want)
		}
	}
	if w.Pending() != 0 {
		t.Errorf("pending = %d, want 0", w.Pending())
	}
}

// TestWindowDeterministic checks that the same input gives the same output.
func TestWindowDeterministic(t *testing.T) {
	t.Parallel()
	var s script
	for i := range 200 {
		key := string(rune('a' + i%26))
		s = s.at(time.Duration(i)*100*time.Millisecond, rank(key+string(rune('0'+i/26)), i%3 == 0))
		if i%2 == 0 {
			s = s.at(time.Duration(i)*100*time.Millisecond+time.Second, reward(key+string(rune('0'+i/26)), float32(i%5)/5))
		}
	}
	s = s.at(time.Hour, tick())
	a, b := run(NewWindow(rules(Earliest)), s), run(NewWindow(rules(Earliest)), s)
	if len(a) != 200 || len(b) != 200 {
		t.Fatalf("emitted %d and %d, want 200", len(a), len(b))
	}
	for i := range a {
		la, lb := AppendDSJSON(nil, &a[i]), AppendDSJSON(nil, &b[i])
		if string(la) != string(lb) {
			t.Fatalf("line %d differs:\n%s\n%s", i, la, lb)
		}
	}
}
