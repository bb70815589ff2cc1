package decide

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// trained is a model of the default policy that learned 100 requests like req.
func trained(t testing.TB, req *personalizerv1.RankRequest) *Model {
	pol, err := bandit.ParsePolicy(bandit.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	m := bandit.NewModel(pol)
	var ev bandit.Event
	var pred bandit.Prediction
	for i := range 100 {
		ev.Reset()
		features.Build(&ev, req.GetContextFeatures(), req.GetActions())
		ev.SetLabel(i%len(req.Actions), -1, 0.5)
		m.Learn(&ev, &pred)
	}
	return &Model{Model: m, Version: "1"}
}

func settings(t testing.TB) *Settings {
	pol, err := bandit.ParsePolicy(bandit.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	return &Settings{Mode: eventsv1.LearningMode_LEARNING_MODE_ONLINE, Epsilon: 0.2, Policy: pol, Limits: DefaultLimits, MaxRecordBytes: 1_000_000}
}

// TestLoggedIsDecided: a decision, logged and checked back, is the same
// decision.
func TestLoggedIsDecided(t *testing.T) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 5, 3, 3)
	req.ExcludedActions = []string{req.Actions[1].GetId()}
	s, m := settings(t), trained(t, req)
	var sc Scratch
	d, err := sc.Decide(req, req.SizeVT(), "e1", s, m)
	if err != nil {
		t.Fatal(err)
	}
	var ranking []uint32
	var probs []float32
	for _, ap := range d.Logged {
		ranking, probs = append(ranking, uint32(ap.Action)), append(probs, ap.Prob)
	}
	want := append([]bandit.ActionProb(nil), d.Logged...)
	var sc2 Scratch
	if err := sc2.Check(req, req.SizeVT(), s, m); err != nil {
		t.Fatal(err)
	}
	got, err := sc2.Logged("e1", ranking, probs, d.Mode, d.ModelVersion)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Logged) != len(want) || len(want) != 4 {
		t.Fatalf("logged %v, want %v", got.Logged, want)
	}
	for i := range want {
		if got.Logged[i] != want[i] {
			t.Fatalf("logged %v, want %v", got.Logged, want)
		}
	}
}

// BenchmarkDecide is local inference's own work per rank, the client's
// side of BenchmarkLocalVsRemote: validating, hashing, scoring and
// sampling the 5 KB request of the Rank benchmarks, and its answer.
func BenchmarkDecide(b *testing.B) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	s, m := settings(b), trained(b, req)
	var sc Scratch
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	for b.Loop() {
		d, err := sc.Decide(req, req.SizeVT(), "event", s, m)
		if err != nil {
			b.Fatal(err)
		}
		d.Response(req)
	}
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
