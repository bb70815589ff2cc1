package app

import (
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/evaluate"
)

// crSummary is a total summary with a Cressie-Read estimate of value in
// [lower, upper].
func crSummary(value, lower, upper float64) evaluate.Summary {
	return evaluate.Summary{Estimates: []evaluate.Estimate{
		{Estimator: evaluate.IPS, Value: &value},
		{Estimator: evaluate.CR, Value: &value, Robust: &evaluate.Interval{Lower: lower, Upper: upper}},
	}}
}

func TestAutoApplies(t *testing.T) {
	t.Parallel()
	online := crSummary(0.5, 0.45, 0.55)
	undefined := evaluate.Summary{Estimates: []evaluate.Estimate{{Estimator: evaluate.CR}}}
	for _, c := range []struct {
		name         string
		online, best evaluate.Summary
		want         bool
	}{
		{"higher mean, lower bound above", online, crSummary(0.6, 0.46, 0.74), true},
		{"higher mean, lower bound below", online, crSummary(0.6, 0.44, 0.76), false},
		{"higher mean, same lower bound", online, crSummary(0.6, 0.45, 0.75), false},
		{"same mean, lower bound above", online, crSummary(0.5, 0.47, 0.53), false},
		{"lower mean, lower bound above", online, crSummary(0.49, 0.46, 0.52), false},
		{"best undefined", online, undefined, false},
		{"Online undefined", undefined, crSummary(0.6, 0.46, 0.74), false},
	} {
		if got := autoApplies(c.online, c.best); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestAutoSchedule(t *testing.T) {
	t.Parallel()
	at := func(h int) time.Time {
		return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(h) * time.Hour)
	}
	var zero time.Time
	for _, c := range []struct {
		name      string
		start     time.Time
		every     time.Duration
		last, now time.Time
		period    time.Time
		due       bool
		next      time.Time
	}{
		{"before the start", at(10), time.Hour, zero, at(9), zero, false, at(10)},
		{"at the start", at(10), time.Hour, zero, at(10), at(10), true, zero},
		{"in the first period", at(10), time.Hour, zero, at(10).Add(59 * time.Minute), at(10), true, zero},
		{"first period ran", at(10), time.Hour, at(10), at(10).Add(59 * time.Minute), zero, false, at(11)},
		{"second period", at(10), time.Hour, at(10), at(11), at(11), true, zero},
		{"periods missed: the latest only", at(10), time.Hour, at(10), at(15).Add(time.Minute), at(15), true, zero},
		{"default frequency", at(0), 0, at(0), at(24 * 27), zero, false, at(24 * 28)},
		{"default frequency due", at(0), 0, at(0), at(24 * 28), at(24 * 28), true, zero},
		{"no start, never ran: now", zero, time.Hour, zero, at(3).Add(time.Minute), at(3).Add(time.Minute), true, zero},
		{"no start: after the last run", zero, time.Hour, at(3), at(3).Add(30 * time.Minute), zero, false, at(4)},
		{"no start: due after the last", zero, time.Hour, at(3), at(5).Add(30 * time.Minute), at(5), true, zero},
		{"start moved back before the last run", at(0), 2 * time.Hour, at(5), at(5).Add(time.Minute), zero, false, at(6)},
	} {
		period, due, next := autoSchedule(c.start, c.every, c.last, c.now)
		if !period.Equal(c.period) || due != c.due || !next.Equal(c.next) {
			t.Errorf("%s: %v %v %v, want %v %v %v", c.name, period, due, next, c.period, c.due, c.next)
		}
	}
}

func TestEvalModelsKeep(t *testing.T) {
	t.Parallel()
	k := evalModels{limit: 10, files: map[string]map[string][]byte{}}
	k.keep("a", map[string][]byte{"x": make([]byte, 4)})
	k.keep("b", map[string][]byte{"x": make([]byte, 3), "y": make([]byte, 2)})
	if k.size != 9 || len(k.files) != 2 {
		t.Fatalf("size %d, %d kept", k.size, len(k.files))
	}
	k.keep("c", map[string][]byte{"x": make([]byte, 4)}) // drops a, the oldest
	if _, ok := k.files["a"]; ok || k.size != 9 || len(k.order) != 2 || k.order[0] != "b" {
		t.Fatalf("after c: size %d, order %v", k.size, k.order)
	}
	k.keep("d", map[string][]byte{"x": make([]byte, 11)}) // alone over the limit: not kept
	if _, ok := k.files["d"]; ok || k.size != 9 {
		t.Fatalf("after d: size %d, order %v", k.size, k.order)
	}
	k.drop("b")
	if k.size != 4 || len(k.order) != 1 || k.order[0] != "c" {
		t.Fatalf("after drop: size %d, order %v", k.size, k.order)
	}
}
