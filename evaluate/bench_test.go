package evaluate

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

// benchData writes the VW reference events, uncompressed, to a file: the
// same input for the trainer and the evaluation.
func benchData(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "public_train.dsjson")
	if err := os.WriteFile(path, gunzip(b, vwData), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// benchPolicies are n variants of Personalizer's default policy.
func benchPolicies(n int) []Policy {
	var out []Policy
	for i := range n {
		out = append(out, Policy{Arguments: fmt.Sprintf("%s --l2 %g", bandit.DefaultPolicy, float64(i)*1e-9)})
	}
	return out
}

// BenchmarkTrainOne is the baseline: personalizer train (learner.Train)
// of Personalizer's default policy on the 4,000 reference events.
func BenchmarkTrainOne(b *testing.B) {
	path := benchData(b)
	b.ResetTimer()
	cpu := cpuTime(b)
	for range b.N {
		s, err := learner.Train(context.Background(), learner.TrainConfig{Data: path, Policy: bandit.DefaultPolicy, Quiet: true}, io.Discard, io.Discard)
		if err != nil || s.Examples != 4000 {
			b.Fatal(err, s.Examples)
		}
	}
	report(b, 4000, 1, cpu)
}

// BenchmarkEvaluate evaluates Online, Baseline, Random and N custom
// policies (variants of the default one) on the same events.
func BenchmarkEvaluate(b *testing.B) {
	path := benchData(b)
	for _, n := range []int{0, 1, 2, 4, 10} {
		b.Run(fmt.Sprintf("custom=%d", n), func(b *testing.B) {
			cfg := Config{Custom: benchPolicies(n), Bucket: 0}
			cpu := cpuTime(b)
			for range b.N {
				res, err := File(context.Background(), cfg, path)
				if err != nil || res.Evaluated != 4000 {
					b.Fatal(err)
				}
			}
			report(b, 4000, n, cpu)
		})
	}
}

// report reports events/s (wall clock), policy-events/s (events/s times
// the custom policies) and cpu-µs/event: the CPU time of the whole
// process (every goroutine) per event, less sensitive than the wall clock
// to other load on the machine.
func report(b *testing.B, events, policies int, cpu0 time.Duration) {
	n := float64(events * b.N)
	b.ReportMetric(n/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(n*float64(policies)/b.Elapsed().Seconds(), "policy-events/s")
	b.ReportMetric(float64(cpuTime(b)-cpu0)/1e3/n, "cpu-µs/event")
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkImportance is leave-one-out importance of Personalizer's
// default policy (ImportanceFile: the sample of the first lines, then
// Current, its 2 namespaces and K features left out), against plain
// evaluations of as many custom policies (3+K variants of the default
// one), which learn the same events without copying them.
func BenchmarkImportance(b *testing.B) {
	path := benchData(b)
	for _, k := range []int{0, 5, 20} {
		b.Run(fmt.Sprintf("features=%d", k), func(b *testing.B) {
			cpu := cpuTime(b)
			for range b.N {
				res, err := ImportanceFile(context.Background(), Config{}, bandit.DefaultPolicy, k, path)
				if err != nil || res.Evaluated != 4000 || len(res.Features) != k {
					b.Fatal(err)
				}
			}
			report(b, 4000, 3+k, cpu)
		})
		b.Run(fmt.Sprintf("plain=%d", 3+k), func(b *testing.B) {
			cfg := Config{Custom: benchPolicies(3 + k)}
			cpu := cpuTime(b)
			for range b.N {
				e, err := newEvaluatorLimit(cfg, 3+k) // more than MaxCustom
				if err != nil {
					b.Fatal(err)
				}
				src, err := learner.OpenExamples(path)
				if err != nil {
					b.Fatal(err)
				}
				res, err := e.run(context.Background(), src)
				src.Close()
				if err != nil || res.Evaluated != 4000 {
					b.Fatal(err)
				}
			}
			report(b, 4000, 3+k, cpu)
		})
	}
}
