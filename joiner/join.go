package joiner

import (
	"container/heap"
	"fmt"
	"time"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// Aggregations name how several rewards for one event combine.
const (
	Earliest = "earliest" // the reward with the earliest time counts
	Sum      = "sum"      // rewards add up
)

// Rules are a loop's join settings.
type Rules struct {
	// RewardWait is the window after a rank in which rewards count.
	RewardWait time.Duration
	// Backward is how long before its rank a reward may arrive and still
	// count (records can be reordered); Personalizer used 2 minutes.
	Backward time.Duration
	// DefaultReward is the reward of an event without rewards in its window.
	DefaultReward float32
	// Aggregation is [Earliest] or [Sum].
	Aggregation string
}

// Validate reports rules that cannot work.
func (r Rules) Validate() error {
	switch {
	case r.RewardWait <= 0:
		return fmt.Errorf("reward wait time must be positive, got %v", r.RewardWait)
	case r.Backward < 0:
		return fmt.Errorf("backward join window must not be negative, got %v", r.Backward)
	case r.DefaultReward < -1 || r.DefaultReward > 1:
		return fmt.Errorf("default reward must be between -1 and 1, got %v", r.DefaultReward)
	case r.Aggregation != Earliest && r.Aggregation != Sum:
		return fmt.Errorf("reward aggregation must be %q or %q, got %q", Earliest, Sum, r.Aggregation)
	}
	return nil
}

// Kind is what an [Input] carries.
type Kind int

// The kinds of input.
const (
	Tick Kind = iota // only time passes
	Rank
	Reward
	Activate
)

// Input is one decoded record of a partition.
type Input struct {
	Kind   Kind
	Key    string    // loop/eventId: the record key that pairs outcomes with their rank
	Time   time.Time // event time: the record's timestamp
	Offset int64
	Rank   *eventsv1.RankEvent // for Rank
	Value  float32             // for Reward
}

// Outcome is a reward or an activation joined to a rank.
type Outcome struct {
	Activate bool
	Value    float32
	Time     time.Time
}

// Joined is one event whose window has closed.
type Joined struct {
	Key      string // loop/eventId
	Rank     *eventsv1.RankEvent
	Time     time.Time // rank time
	Outcomes []Outcome // in arrival order
	// Reward is the aggregated reward, or the default reward when no
	// reward arrived in the window.
	Reward float32
	// Learnable is false for a deferred event that was never activated.
	Learnable bool
}

// Stats count what a [Window] has seen.
type Stats struct {
	Emitted        int64 // joined events
	DefaultRewards int64 // emitted with the default reward
	NotActivated   int64 // deferred and never activated: emitted, not learnable
	Late           int64 // outcomes outside their rank's window
	Dangling       int64 // outcomes whose rank never came
	DuplicateRanks int64 // ranks for an event already pending
}

// Window is the join state of one partition. It is not safe for concurrent
// use; one goroutine owns it.
type Window struct {
	rules     Rules
	pending   map[string]*pending
	deadlines pendingHeap
	early     map[string][]*early // outcomes that came before their rank
	earlyQ    earlyHeap
	watermark time.Time
	next      int64 // offset after the last input
	stats     Stats
}

type pending struct {
	Joined
	offset    int64 // of the rank
	minOffset int64 // of the rank and every outcome joined to it
	deadline  time.Time
}

type early struct {
	id      string
	outcome Outcome
	offset  int64
	taken   bool // joined to its rank or expired
}

// NewWindow returns an empty window. The rules must be valid.
func NewWindow(r Rules) *Window {
	return &Window{rules: r, pending: map[string]*pending{}, early: map[string][]*early{}}
}

// Stats returns the window's counters.
func (w *Window) Stats() Stats { return w.stats }

// Pending returns how many ranks wait for their window to close.
func (w *Window) Pending() int { return len(w.pending) }

// Add applies one input and returns the events whose windows it closed, in
// deadline order. The watermark is the latest input time seen.
func (w *Window) Add(in Input) []Joined {
	if in.Time.After(w.watermark) {
		w.watermark = in.Time
	}
	w.next = in.Offset + 1
	switch in.Kind {
	case Rank:
		w.addRank(in)
	case Reward, Activate:
		w.addOutcome(in)
	}
	return w.expire()
}

func (w *Window) addRank(in Input) {
	if _, dup := w.pending[in.Key]; dup {
		w.stats.DuplicateRanks++
		return
	}
	p := &pending{
		Joined:    Joined{Key: in.Key, Rank: in.Rank, Time: in.Time},
		offset:    in.Offset,
		minOffset: in.Offset,
		deadline:  in.Time.Add(w.rules.RewardWait),
	}
	for _, e := range w.early[in.Key] {
		if e.taken {
			continue
		}
		e.taken = true
		if !w.inWindow(p, e.outcome.Time) {
			w.stats.Late++
			continue
		}
		p.Outcomes = append(p.Outcomes, e.outcome)
		p.minOffset = min(p.minOffset, e.offset)
	}
	delete(w.early, in.Key)
	w.pending[in.Key] = p
	heap.Push(&w.deadlines, p)
}

func (w *Window) addOutcome(in Input) {
	o := Outcome{Activate: in.Kind == Activate, Value: in.Value, Time: in.Time}
	if p, ok := w.pending[in.Key]; ok {
		if !w.inWindow(p, o.Time) {
			w.stats.Late++
			return
		}
		p.Outcomes = append(p.Outcomes, o)
		return
	}
	e := &early{id: in.Key, outcome: o, offset: in.Offset}
	w.early[in.Key] = append(w.early[in.Key], e)
	heap.Push(&w.earlyQ, e)
}

// inWindow reports whether an outcome at t counts for p: less than
// RewardWait after the rank, and less than Backward before it.
func (w *Window) inWindow(p *pending, t time.Time) bool {
	return t.Sub(p.Time) < w.rules.RewardWait && p.Time.Sub(t) < w.rules.Backward
}

// expire emits every pending event whose deadline the watermark reached and
// drops early outcomes too old for any rank still to come.
func (w *Window) expire() []Joined {
	for len(w.earlyQ) > 0 && !w.earlyQ[0].outcome.Time.Add(w.rules.Backward).After(w.watermark) {
		e := heap.Pop(&w.earlyQ).(*early)
		if e.taken {
			continue
		}
		e.taken = true
		w.stats.Dangling++
		rest := w.early[e.id][:0]
		for _, x := range w.early[e.id] {
			if !x.taken {
				rest = append(rest, x)
			}
		}
		if len(rest) == 0 {
			delete(w.early, e.id)
		} else {
			w.early[e.id] = rest
		}
	}
	var out []Joined
	for len(w.deadlines) > 0 && !w.deadlines[0].deadline.After(w.watermark) {
		p := heap.Pop(&w.deadlines).(*pending)
		delete(w.pending, p.Key)
		out = append(out, w.close(p))
	}
	return out
}

// close applies the reward rules to a pending event.
func (w *Window) close(p *pending) Joined {
	j := p.Joined
	j.Learnable = !j.Rank.GetDeferred()
	var first *Outcome
	var sum float32
	n := 0
	for i := range j.Outcomes {
		o := &j.Outcomes[i]
		if o.Activate {
			j.Learnable = true
			continue
		}
		if first == nil || o.Time.Before(first.Time) {
			first = o
		}
		sum += o.Value
		n++
	}
	switch {
	case n == 0:
		j.Reward = w.rules.DefaultReward
		w.stats.DefaultRewards++
	case w.rules.Aggregation == Sum:
		j.Reward = sum
	default:
		j.Reward = first.Value
	}
	if !j.Learnable {
		w.stats.NotActivated++
	}
	w.stats.Emitted++
	return j
}

// CommitOffset is the offset to resume from after a restart: the lowest
// offset any pending event still needs, or the offset after the last input.
func (w *Window) CommitOffset() int64 {
	off := w.next
	for _, p := range w.pending {
		off = min(off, p.minOffset)
	}
	for _, es := range w.early {
		for _, e := range es {
			if !e.taken {
				off = min(off, e.offset)
			}
		}
	}
	return off
}

// pendingHeap orders pending events by deadline, then by rank offset, so
// that output order depends only on the input.
type pendingHeap []*pending

func (h pendingHeap) Len() int { return len(h) }
func (h pendingHeap) Less(i, j int) bool {
	if !h[i].deadline.Equal(h[j].deadline) {
		return h[i].deadline.Before(h[j].deadline)
	}
	return h[i].offset < h[j].offset
}
func (h pendingHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pendingHeap) Push(x any)   { *h = append(*h, x.(*pending)) }
func (h *pendingHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// earlyHeap orders early outcomes by time, then offset.
type earlyHeap []*early

func (h earlyHeap) Len() int { return len(h) }
func (h earlyHeap) Less(i, j int) bool {
	if !h[i].outcome.Time.Equal(h[j].outcome.Time) {
		return h[i].outcome.Time.Before(h[j].outcome.Time)
	}
	return h[i].offset < h[j].offset
}
func (h earlyHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *earlyHeap) Push(x any)   { *h = append(*h, x.(*early)) }
func (h *earlyHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}
