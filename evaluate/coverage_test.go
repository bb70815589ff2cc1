package evaluate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// world is a simulated application whose expected rewards are known: 3
// user segments, 4 actions, a click probability per (segment, action),
// logged by a fixed epsilon-greedy policy (0.85 on action (seg+1) mod 4,
// 0.05 on the others).
type world struct{ mu [3][4]float64 }

var simWorld = world{mu: [3][4]float64{
	{0.10, 0.30, 0.05, 0.60},
	{0.50, 0.10, 0.20, 0.05},
	{0.20, 0.40, 0.70, 0.10},
}}

func logProb(seg, a int) float64 {
	if a == (seg+1)%4 {
		return 0.85
	}
	return 0.05
}

// log returns n logged events and each one's segment.
func (w *world) log(r *rand.Rand, n int) (string, []int) {
	var b strings.Builder
	segs := make([]int, n)
	t0 := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		seg := r.IntN(3)
		segs[i] = seg
		u, a := r.Float64(), 0
		for acc := logProb(seg, 0); u >= acc && a < 3; acc += logProb(seg, a) {
			a++
		}
		reward := 0.0
		if r.Float64() < w.mu[seg][a] {
			reward = 1
		}
		ids := []string{fmt.Sprint(a + 1)}
		probs := []string{fmt.Sprint(logProb(seg, a))}
		for k := range 4 {
			if k != a {
				ids = append(ids, fmt.Sprint(k+1))
				probs = append(probs, fmt.Sprint(logProb(seg, k)))
			}
		}
		fmt.Fprintf(&b, `{"_label_cost":%v,"_label_probability":%v,"_labelIndex":%d,"Timestamp":"%s","a":[%s],"c":{"U":{"seg":"s%d"},"_multi":[{"A":{"id":"a0"}},{"A":{"id":"a1"}},{"A":{"id":"a2"}},{"A":{"id":"a3"}}]},"p":[%s]}`+"\n",
			-reward, logProb(seg, a), a, t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano), strings.Join(ids, ","), seg, strings.Join(probs, ","))
	}
	return b.String(), segs
}

// TestCoverage evaluates 200 seeded logs of 400 events and counts how
// often each policy's 95% intervals contain its true value: the mean
// over the log's events of Σ_a π(a)·μ(segment, a), with π the policy's
// PMF for the event (for the custom policies, the one before learning it).
func TestCoverage(t *testing.T) {
	t.Parallel()
	const reps, events = 200, 400
	custom := []Policy{
		{Name: "default", Arguments: "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"},
		{Name: "fast", Arguments: "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 --cb_type mtr -q ::"},
	}
	names := []string{Online, Baseline, Random, "default", "fast"}
	var gauss, cr, drGauss [5]int
	var errSum, widthSum [5]float64
	for rep := range reps {
		data, segs := simWorld.log(rand.New(rand.NewPCG(uint64(rep), 7)), events)
		var truth [5]float64
		i := 0
		res, err := Reader(context.Background(), Config{Custom: custom, OnEvent: func(e *Event) {
			for p, pmf := range e.PMF {
				for _, ap := range pmf {
					truth[p] += float64(ap.Prob) * simWorld.mu[segs[i]][ap.Action]
				}
			}
			i++
		}}, "sim", strings.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		for p := range names {
			truth[p] /= events
			s := res.Policies[p].TotalSummary
			ips, dr := s.Estimates[0], s.Estimates[2]
			if g := ips.Gaussian; g.Lower <= truth[p] && truth[p] <= g.Upper {
				gauss[p]++
			}
			if c := s.Estimates[3].Robust; c.Lower <= truth[p] && truth[p] <= c.Upper {
				cr[p]++
			}
			if g := dr.Gaussian; g.Lower <= truth[p] && truth[p] <= g.Upper {
				drGauss[p]++
			}
			errSum[p] += *ips.Value - truth[p]
			widthSum[p] += ips.Gaussian.Upper - ips.Gaussian.Lower
		}
	}
	// At this commit: Online 197, 197, 195 of 200 (IPS Gaussian,
	// Cressie-Read, DR Gaussian); Baseline 180, 199, 180; Random 184, 199,
	// 187; default 189, 200, 190; fast 184, 199, 193. The Gaussian
	// intervals fall short of 95% where a few events carry large weights
	// (Baseline: w = 20 when the logged policy explored onto action 0);
	// the Cressie-Read interval does not.
	for p, name := range names {
		t.Logf("%-8s coverage: IPS Gaussian %d/%d, Cressie-Read %d/%d, DR Gaussian %d/%d; IPS mean error %+.4f, mean Gaussian width %.4f",
			name, gauss[p], reps, cr[p], reps, drGauss[p], reps, errSum[p]/reps, widthSum[p]/reps)
		if gauss[p] < reps*90/100 || drGauss[p] < reps*90/100 || cr[p] < reps*95/100 {
			t.Errorf("%s: coverage below 90%% (Gaussian) or 95%% (Cressie-Read)", name)
		}
		if bias, width := errSum[p]/reps, widthSum[p]/reps; bias > width/10 || -bias > width/10 {
			t.Errorf("%s: mean error %v is over a tenth of the mean interval width %v", name, bias, width)
		}
	}
}
