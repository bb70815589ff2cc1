package evaluate

import (
	"math"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
)

// liveEvent is an event of n actions whose logged decision chose chosen
// with probability p (of probs, aligned with ids) and got reward r.
func liveEvent(n, chosen int, p float32, r float32) *bandit.Event {
	var ev bandit.Event
	for range n {
		ev.AddAction()
	}
	ev.SetLabel(chosen, -r, p)
	return &ev
}

func TestLive(t *testing.T) {
	l := NewLive(10*time.Second, 3)
	at := func(s int) []byte { return []byte(time.Unix(int64(s), 0).UTC().Format(time.RFC3339)) }
	// Bucket [100, 110): two events of 2 actions, greedy PMF (0.9, 0.1).
	// 1. chose action 0 (the greedy one, also Baseline's) with 0.9, reward 1.
	l.Add(liveEvent(2, 0, 0.9, 1), []int{1, 2}, []float32{0.9, 0.1}, at(101))
	// 2. chose action 1 (exploring) with 0.1, reward 0.5.
	l.Add(liveEvent(2, 1, 0.1, 0.5), []int{2, 1}, []float32{0.1, 0.9}, at(109))
	// Bucket [120, 130): one event; bucket [90, 100) is then too old
	// for 3 buckets after [130, 140) arrives.
	l.Add(liveEvent(4, 2, 0.25, 0), []int{3, 1, 2, 4}, []float32{0.25, 0.25, 0.25, 0.25}, at(125))
	// Not counted: no time, a chosen action not in "a", no label.
	l.Add(liveEvent(2, 0, 0.5, 1), []int{1, 2}, []float32{0.5, 0.5}, nil)
	l.Add(liveEvent(2, 0, 0.5, 1), []int{2}, []float32{0.5}, at(101))
	var unlabeled bandit.Event
	unlabeled.AddAction()
	l.Add(&unlabeled, []int{1}, []float32{1}, at(101))

	pts := l.Points()
	if len(pts) != 2 {
		t.Fatalf("%d points, want 2: %+v", len(pts), pts)
	}
	p := pts[0]
	if !p.Start.Equal(time.Unix(100, 0)) || p.Events != 2 || p.Reward != 0.75 || p.Explored != 0.5 {
		t.Errorf("first point %+v", p)
	}
	// Baseline: w = 1/0.9 for the first event (action 0), 0 for the second:
	// IPS = (1/0.9·1 + 0)/2. Random: w = 0.5/0.9 and 0.5/0.1.
	if want := 1 / 0.9 / 2; math.Abs(p.Baseline.Value-want) > 1e-6 {
		t.Errorf("Baseline %v, want %v", p.Baseline.Value, want)
	}
	if want := (0.5/0.9*1 + 0.5/0.1*0.5) / 2; math.Abs(p.Random.Value-want) > 1e-6 {
		t.Errorf("Random %v, want %v", p.Random.Value, want)
	}
	if p.Baseline.Interval == nil || p.Random.Interval == nil {
		t.Errorf("two events have intervals: %+v", p)
	}
	q := pts[1]
	if !q.Start.Equal(time.Unix(120, 0)) || q.Events != 1 || q.Reward != 0 || q.Explored != 0 || q.Baseline.Value != 0 || q.Random.Interval != nil {
		t.Errorf("second point %+v", q)
	}

	// A bucket 3 buckets later pushes [100, 110) out; an event for it is
	// then dropped.
	l.Add(liveEvent(2, 0, 0.9, 1), []int{1, 2}, []float32{0.9, 0.1}, at(131))
	l.Add(liveEvent(2, 0, 0.9, 1), []int{1, 2}, []float32{0.9, 0.1}, at(105))
	pts = l.Points()
	if len(pts) != 2 || !pts[0].Start.Equal(time.Unix(120, 0)) || !pts[1].Start.Equal(time.Unix(130, 0)) || pts[1].Events != 1 {
		t.Errorf("after the window moved: %+v", pts)
	}
}
