package evaluate

import (
	"slices"
	"sync"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
)

// Live estimates, per time bucket of a loop's recent decisions, the
// realized average reward (Online), what the Baseline and Random policies
// would have had (IPS with the Gaussian interval, as an evaluation's), and
// the share of exploratory decisions, one joined event at a time, as the
// learner learns them. It keeps the last Keep buckets. Add and Points may
// be called from different goroutines.
//
// Its estimates are an evaluation's without the reward model: DR needs a
// model learned in order, which an evaluation over the log provides.
type Live struct {
	bucket time.Duration
	mu     sync.Mutex
	slots  []liveBucket // slot i holds the bucket whose index is i mod len(slots)
	newest int64        // the index of the newest bucket seen
}

// liveBucket is one bucket's sums: Online, Baseline, Random.
type liveBucket struct {
	index    int64 // start / bucket; 0: unused
	sums     [3]sums
	explored float64 // Σ c over exploratory decisions
}

// NewLive returns a Live of keep buckets of length bucket.
func NewLive(bucket time.Duration, keep int) *Live {
	return &Live{bucket: bucket, slots: make([]liveBucket, keep)}
}

// Add counts a learned event: ev as parsed, with the logged decision of
// its line ("a", 1-based action ids, and "p", aligned) and its
// "Timestamp" (bandit.DSJSONParser.Logged). Events without a label, a
// time or a valid logged decision, and those older than the kept buckets,
// are not counted.
func (l *Live) Add(ev *bandit.Event, ids []int, probs []float32, ts []byte) {
	chosen, cost, prob, ok := ev.Label()
	n := ev.NumActions()
	if !ok || n == 0 || len(ids) != len(probs) || !(prob > 0) {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return
	}
	var top, pChosen float32
	found := false
	for k, id := range ids {
		top = max(top, probs[k])
		if id-1 == chosen {
			pChosen, found = probs[k], true
		}
	}
	if !found {
		return
	}
	c := float64(ev.Weight())
	p := float64(prob) * c // _label_probability is p·(1-pdrop)
	r := 0 - float64(cost)
	base := 0.0
	if chosen == 0 {
		base = 1 / p
	}
	random := 1 / float64(n) / p
	idx := t.UnixNano() / int64(l.bucket)

	l.mu.Lock()
	defer l.mu.Unlock()
	if idx <= l.newest-int64(len(l.slots)) {
		return // older than the kept buckets
	}
	l.newest = max(l.newest, idx)
	b := &l.slots[idx%int64(len(l.slots))]
	if b.index != idx {
		*b = liveBucket{index: idx}
		for i := range b.sums {
			b.sums[i] = newSums(0, 1)
		}
	}
	for i, w := range [3]float64{1, base, random} {
		b.sums[i].add(c, w, r, w*r)
	}
	if pChosen < top {
		b.explored += c
	}
}

// LivePoint is one bucket of a [Live]. Baseline and Random are IPS
// estimates; an interval is nil with fewer than two events.
type LivePoint struct {
	Start    time.Time    `json:"start"`
	Events   int64        `json:"events"`
	Reward   float64      `json:"reward"`   // the realized average reward
	Explored float64      `json:"explored"` // the share of decisions whose chosen action was not the most probable
	Baseline LiveEstimate `json:"baseline"`
	Random   LiveEstimate `json:"random"`
}

// LiveEstimate is an IPS estimate and its Gaussian interval at [Confidence].
type LiveEstimate struct {
	Value    float64   `json:"value"`
	Interval *Interval `json:"interval"`
}

// Bucket is the length of l's buckets.
func (l *Live) Bucket() time.Duration { return l.bucket }

// Points returns the kept buckets that have events, oldest first.
func (l *Live) Points() []LivePoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []LivePoint
	for i := range l.slots {
		b := &l.slots[i]
		if b.index == 0 || b.index <= l.newest-int64(len(l.slots)) || b.sums[0].n == 0 {
			continue
		}
		out = append(out, LivePoint{
			Start: time.Unix(0, b.index*int64(l.bucket)).UTC(), Events: b.sums[0].events,
			Reward: b.sums[0].ips(), Explored: b.explored / b.sums[0].n,
			Baseline: b.sums[1].live(), Random: b.sums[2].live(),
		})
	}
	slices.SortFunc(out, func(x, y LivePoint) int { return x.Start.Compare(y.Start) })
	return out
}

// live is s's IPS estimate and its interval.
func (s *sums) live() LiveEstimate {
	e := LiveEstimate{Value: s.ips()}
	if half, ok := gaussian(s.n, s.swr, s.sw2r2); ok {
		e.Interval = &Interval{e.Value - half, e.Value + half}
	}
	return e
}
