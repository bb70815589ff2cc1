package joiner

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// randomScript is a partition's worth of records as servers and joiners
// write them: ranks, rewards and activations stamped out of order by up to
// 1.5s, rewards before their rank, for ranks that never come, after their
// window, writer retries (exact copies, also of ranks), ticks and
// undecodable records; with skewed, also records from a clock an hour
// ahead.
func randomScript(rng *rand.Rand, n int, skewed bool) script {
	var s script
	base := time.Duration(0)
	ranked := 0 // keys k0..k{ranked-1} have a rank
	var copies []Input
	var nextID uint64 = 1
	for len(s) < n {
		base += time.Duration(rng.IntN(300)) * ms
		d := base + time.Duration(rng.IntN(2000)-1500)*ms
		var in Input
		switch r := rng.IntN(100); {
		case r < 25:
			key := fmt.Sprintf("k%d", ranked)
			ranked++
			in = Input{Kind: Rank, Key: key, Rank: rankEvent(key, uint32(rng.IntN(3)), rng.IntN(4) == 0, online)}
		case r < 65, r < 75 && ranked > 0:
			// Mostly keys already ranked, some not ranked yet (early)
			// or never (dangling).
			key := fmt.Sprintf("k%d", max(0, ranked-1-rng.IntN(20)+rng.IntN(4)))
			if r >= 65 {
				in = Input{Kind: Activate, Key: key, ID: nextID}
			} else {
				in = Input{Kind: Reward, Key: key, Value: float32(rng.IntN(5)) / 4, ID: nextID}
				if rng.IntN(10) == 0 {
					in.ID = 0
				}
			}
			nextID++
		case r < 85:
			in = Input{Kind: Tick}
			d = base + time.Duration(rng.IntN(500))*ms
		case r < 87:
			in = Input{Kind: Bad}
		default:
			if len(copies) == 0 {
				continue
			}
			// A writer retry: an exact copy of a recent record.
			c := copies[rng.IntN(len(copies))]
			s = append(s, c)
			s[len(s)-1].Offset = int64(len(s) - 1)
			continue
		}
		if skewed && in.Kind != Tick && rng.IntN(100) == 0 {
			d += time.Hour
		}
		s = s.at(d, in)
		if in.Kind == Rank || in.Kind == Reward || in.Kind == Activate {
			copies = append(copies, s[len(s)-1])
			if len(copies) > 8 {
				copies = copies[1:]
			}
		}
	}
	return s.at(base+time.Hour, tick())
}

// outputs runs w over s and returns the joined lines and the audits, each
// prefixed with the offset of the input that produced it.
func outputs(w *Window, s script) (joined, audits []string) {
	var out Output
	for _, in := range s {
		w.Add(in, &out)
		for i := range out.Joined {
			joined = append(joined, fmt.Sprintf("@%d %s", in.Offset, AppendDSJSON(nil, &out.Joined[i])))
		}
		for i := range out.Audits {
			audits = append(audits, fmt.Sprintf("@%d %s", in.Offset, AppendAudit(nil, &out.Audits[i], 0)))
		}
		for _, b := range out.Bad {
			joined = append(joined, fmt.Sprintf("@%d bad %d", in.Offset, b.Offset))
		}
		out.Reset()
	}
	return joined, audits
}

// from keeps the outputs produced at offsets >= next.
func from(lines []string, next int64) []string {
	var keep []string
	for _, l := range lines {
		var off int64
		fmt.Sscanf(l, "@%d ", &off)
		if off >= next {
			keep = append(keep, l)
		}
	}
	return keep
}

// TestWindowResume checks the restart rule on random partitions: a window
// resumed from any checkpoint, even one taken by a resumed window, writes
// exactly what the uninterrupted window wrote from the checkpoint's Next
// on, byte for byte, joined lines and audits alike.
func TestWindowResume(t *testing.T) {
	t.Parallel()
	aggs := []Aggregation{Earliest, Sum, Average, Median, Min, Max}
	var total Stats
	resumes, suppressed := 0, int64(0)
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 7))
		skewed := seed%2 == 1
		s := randomScript(rng, 400, skewed)
		rules := Rules{RewardWait: 3 * time.Second, Backward: 2 * time.Second, Slack: time.Duration(rng.IntN(2)) * 500 * ms,
			DefaultReward: -0.25, Aggregation: aggs[seed%uint64(len(aggs))], LearningMode: online}
		if skewed {
			rules.MaxSkew = time.Second
		}
		full := NewWindow(rules)
		wantJoined, wantAudits := outputs(full, s)
		total.Add(full.Stats())
		for range 15 {
			// First owner: s[:k1]. Second: from its checkpoint to k2.
			// Third: from the second's checkpoint to the end.
			k1, k2 := rng.IntN(len(s)+1), rng.IntN(len(s)+1)
			w1 := NewWindow(rules)
			outputs(w1, s[:k1])
			cp1 := w1.Checkpoint()
			w2 := NewWindow(rules)
			w2.Resume(cp1)
			outputs(w2, s[cp1.Offset:max(k2, int(cp1.Offset))])
			cp2 := w2.Checkpoint()
			if cp2.Next < cp1.Next || cp2.Offset < cp1.Offset {
				t.Fatalf("seed %d: checkpoint went back: %+v then %+v", seed, cp1, cp2)
			}
			w3 := NewWindow(rules)
			w3.Resume(cp2)
			gotJoined, gotAudits := outputs(w3, s[cp2.Offset:])
			resumes++
			suppressed += w3.Stats().Suppressed
			if want := from(wantJoined, cp2.Next); !slices.Equal(gotJoined, want) {
				t.Fatalf("seed %d, resumed at %+v: joined output differs\ngot\n\t%s\nwant\n\t%s", seed, cp2,
					strings.Join(gotJoined, "\n\t"), strings.Join(want, "\n\t"))
			}
			if want := from(wantAudits, cp2.Next); !slices.Equal(gotAudits, want) {
				t.Fatalf("seed %d, resumed at %+v: audits differ\ngot\n\t%s\nwant\n\t%s", seed, cp2,
					strings.Join(gotAudits, "\n\t"), strings.Join(want, "\n\t"))
			}
		}
	}
	// The scripts must have exercised what they are for.
	t.Logf("%d resumes, %d outputs suppressed, totals %+v", resumes, suppressed, total)
	if total.Emitted == 0 || total.Late == 0 || total.Dangling == 0 || total.NotActivated == 0 || total.DuplicateRanks == 0 ||
		total.DuplicateOutcomes == 0 || total.Undecodable == 0 || total.DefaultRewards == 0 || total.Skewed == 0 || suppressed == 0 {
		t.Errorf("random scripts miss a case: %+v, %d suppressed", total, suppressed)
	}
}

// TestWindowDeterministic checks that the same input gives the same output,
// byte for byte, and that the output does not depend on how it is batched.
func TestWindowDeterministic(t *testing.T) {
	t.Parallel()
	s := randomScript(rand.New(rand.NewPCG(1, 2)), 2000, true)
	r := testRules()
	r.RewardWait, r.Backward, r.MaxSkew = 3*time.Second, 2*time.Second, time.Second
	a, aa := outputs(NewWindow(r), s)
	b, bb := outputs(NewWindow(r), s)
	if len(a) < 100 || !slices.Equal(a, b) || !slices.Equal(aa, bb) {
		t.Fatalf("two runs differ or emit little: %d and %d lines", len(a), len(b))
	}
}
