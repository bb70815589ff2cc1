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
// ahead; with withRules, ranks that carry join rules (waits of 1s, 3s and 6s,
// some invalid) and event ids ranked twice with other rules.
func randomScript(rng *rand.Rand, n int, skewed, withRules bool) script {
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
			if withRules && ranked > 0 && rng.IntN(10) == 0 {
				key = fmt.Sprintf("k%d", rng.IntN(ranked)) // an event id used again
			} else {
				ranked++
			}
			in = Input{Kind: Rank, Key: key, Rank: rankEvent(key, uint32(rng.IntN(3)), rng.IntN(4) == 0, online)}
			if withRules && rng.IntN(4) > 0 {
				wait := []time.Duration{time.Second, 3 * time.Second, 6 * time.Second}[rng.IntN(3)]
				if rng.IntN(10) == 0 {
					wait = 0 // invalid: the window's rules
				}
				in = ruled(in, wait, []float32{-0.25, 0, 0.5}[rng.IntN(3)], []string{"earliest", "sum", "max"}[rng.IntN(3)])
			}
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
			resolve(w, &out.Joined[i], s)
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
	testWindowResume(t, func(s script) script { return s })
}

// TestWindowResumeSlots is TestWindowResume with multi-slot ranks, whose
// rewards name a slot (or another, or none), written as CCB lines.
func TestWindowResumeSlots(t *testing.T) {
	t.Parallel()
	lines := strings.Join(testWindowResume(t, withSlots), "\n")
	for _, want := range []string{`"Index":"hero"`, `"Index":"side"`, `"ActionTaken":true}],"_original_label_cost"`, `"_skipLearn":true`} {
		if !strings.Contains(lines, want) {
			t.Errorf("no line has %s", want)
		}
	}
}

// withSlots makes the ranks of s multi-slot ones (slotsRank, with the
// same key, deferral, mode and rules) and gives its rewards a slot by
// their id: hero, side, an unknown one or none.
func withSlots(s script) script {
	s = slices.Clone(s)
	for i, in := range s {
		switch in.Kind {
		case Rank:
			ev := slotsRank(in.Key, nil, in.Rank.GetDeferred(), in.Rank.GetLearningMode())
			ev.Rules = in.Rank.GetRules()
			n := decoded(in.Key, ev)
			n.Time, n.Offset = in.Time, in.Offset
			s[i] = n
		case Reward:
			s[i].Slot = SlotHash([]string{"hero", "side", "footer", ""}[in.ID%4])
		}
	}
	return s
}

// testWindowResume is TestWindowResume of the scripts transform makes of
// the random ones; it returns the lines of the uninterrupted runs.
func testWindowResume(t *testing.T, transform func(script) script) (lines []string) {
	aggs := []Aggregation{Earliest, Sum, Average, Median, Min, Max}
	var total Stats
	resumes, suppressed := 0, int64(0)
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 7))
		skewed := seed%2 == 1
		s := transform(randomScript(rng, 400, skewed, seed%3 != 0))
		rules := Rules{RewardWait: 3 * time.Second, Backward: 2 * time.Second, Slack: time.Duration(rng.IntN(2)) * 500 * ms,
			DefaultReward: -0.25, Aggregation: aggs[seed%uint64(len(aggs))], LearningMode: online}
		if skewed {
			rules.MaxSkew = time.Second
		}
		full := NewWindow(rules)
		wantJoined, wantAudits := outputs(full, s)
		lines = append(lines, wantJoined...)
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
			// The three owners count what one would have.
			var sum Stats
			sum.Add(w1.Stats())
			sum.Add(w2.Stats())
			sum.Add(w3.Stats())
			sum.Suppressed = 0
			if sum != full.Stats() {
				t.Fatalf("seed %d, resumed at %+v and %+v: counters add up to\n%+v, want\n%+v", seed, cp1, cp2, sum, full.Stats())
			}
		}
	}
	// The scripts must have exercised what they are for.
	t.Logf("%d resumes, %d outputs suppressed, totals %+v", resumes, suppressed, total)
	if total.Emitted == 0 || total.Late == 0 || total.Dangling == 0 || total.NotActivated == 0 || total.DuplicateRanks == 0 ||
		total.DuplicateOutcomes == 0 || total.Undecodable == 0 || total.DefaultRewards == 0 || total.Skewed == 0 || total.BadRules == 0 ||
		suppressed == 0 {
		t.Errorf("random scripts miss a case: %+v, %d suppressed", total, suppressed)
	}
	return lines
}

// TestWindowDeterministic checks that the same input gives the same output,
// byte for byte, and that the output does not depend on how it is batched.
func TestWindowDeterministic(t *testing.T) {
	t.Parallel()
	s := randomScript(rand.New(rand.NewPCG(1, 2)), 2000, true, true)
	r := testRules()
	r.RewardWait, r.Backward, r.MaxSkew = 3*time.Second, 2*time.Second, time.Second
	a, aa := outputs(NewWindow(r), s)
	b, bb := outputs(NewWindow(r), s)
	if len(a) < 100 || !slices.Equal(a, b) || !slices.Equal(aa, bb) {
		t.Fatalf("two runs differ or emit little: %d and %d lines", len(a), len(b))
	}
}

// TestWindowResumeRankRules checks restarts where ranks carry their own
// rules, so that deadlines are not in rank order: the full run's exact
// output, the checkpoint a long wait holds back, and that a window
// resumed from the checkpoint after every record writes the same lines,
// byte for byte, and counts what the first owner did not.
func TestWindowResumeRankRules(t *testing.T) {
	t.Parallel()
	r := testRules() // 10s, default -0.5, earliest
	r.Backward = 5 * time.Second
	tests := []struct {
		name string
		in   script
		want []string
		cps  map[int]Checkpoint // after input i
	}{
		{
			name: "a long wait among short ones",
			in: script{}.
				at(0, ruled(rank("s1"), 10*time.Second, 0.2, "earliest")). // 0
				at(time.Second, ruled(rank("l"), time.Minute, 0, "sum")).  // 1
				at(3*time.Second, ruled(rank("bad"), 0, 0, "sum")).        // 2: the window's rules
				at(2*time.Second, reward("s1", 1)).                        // 3
				at(20*time.Second, rank("s2")).                            // 4: no rules; s1 and bad close and are forgotten
				at(25*time.Second, reward("l", 0.5)).                      // 5
				at(26*time.Second, reward("l", 0.25)).                     // 6
				at(31*time.Second, tick()).                                // 7: s2 closes
				at(33*time.Second, reward("s2", 1)).                       // 8: late
				at(40*time.Second, tick()).                                // 9: s2 forgotten
				at(62*time.Second, tick()).                                // 10: l closes
				at(70*time.Second, tick()),                                // 11: l forgotten
			want: []string{
				"@4 s1 reward=1 original=1 learnable=true o=[1@2s]",
				"@4 bad reward=-0.5 original=-0.5 learnable=true o=[]",
				"@7 s2 reward=-0.5 original=-0.5 learnable=true o=[]",
				"@8 late s2 1@33s offset=8",
				"@10 l reward=0.75 original=0.75 learnable=true o=[0.5@25s 0.25@26s]",
			},
			cps: map[int]Checkpoint{
				3:  {Offset: 0, Watermark: time.Time{}, Next: 4},
				4:  {Offset: 1, Watermark: t0, Next: 5}, // l's minute holds it back
				9:  {Offset: 1, Watermark: t0, Next: 10},
				11: {Offset: 12, Watermark: t0.Add(70 * time.Second), Next: 12},
			},
		},
		{
			// An event id ranked again, after its window, under a longer
			// wait: a window resumed between the two ranks takes the
			// second as a new event, so the first is remembered until
			// that event would have been forgotten.
			name: "a repeated rank with a longer wait",
			in: script{}.
				at(0, ruled(rank("x"), 10*time.Second, 0, "earliest")).      // 0
				at(time.Second, ruled(rank("y"), time.Minute, 0.5, "sum")).  // 1
				at(10*time.Second, tick()).                                  // 2: x closes
				at(9*time.Second, ruled(rank("x"), time.Minute, -1, "sum")). // 3: a repeat
				at(16*time.Second, tick()).                                  // 4
				at(17*time.Second, reward("x", 1)).                          // 5: late for x
				at(62*time.Second, tick()).                                  // 6: y closes
				at(80*time.Second, tick()),                                  // 7: x and y forgotten
			want: []string{
				"@2 x reward=0 original=0 learnable=true o=[]",
				"@5 late x 1@17s offset=5",
				"@6 y reward=0.5 original=0.5 learnable=true o=[]",
			},
			cps: map[int]Checkpoint{
				4: {Offset: 0, Watermark: time.Time{}, Next: 5}, // x remembered until 9s + 60s + 5s
				6: {Offset: 0, Watermark: time.Time{}, Next: 7},
				7: {Offset: 8, Watermark: t0.Add(80 * time.Second), Next: 8},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			full := NewWindow(r)
			if got := run(full, tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tt.want, "\n\t"))
			}
			wantJoined, wantAudits := outputs(NewWindow(r), tt.in)
			for k := range len(tt.in) + 1 {
				w1 := NewWindow(r)
				outputs(w1, tt.in[:k])
				cp := w1.Checkpoint()
				if want, ok := tt.cps[k-1]; ok && (cp.Offset != want.Offset || !cp.Watermark.Equal(want.Watermark) || cp.Next != want.Next) {
					t.Errorf("after input %d: checkpoint %+v, want %+v", k-1, cp, want)
				}
				w2 := NewWindow(r)
				w2.Resume(cp)
				gotJoined, gotAudits := outputs(w2, tt.in[cp.Offset:])
				if want := from(wantJoined, cp.Next); !slices.Equal(gotJoined, want) {
					t.Fatalf("resumed at %+v: joined lines\n\t%s\nwant\n\t%s", cp, strings.Join(gotJoined, "\n\t"), strings.Join(want, "\n\t"))
				}
				if want := from(wantAudits, cp.Next); !slices.Equal(gotAudits, want) {
					t.Fatalf("resumed at %+v: audits\n\t%s\nwant\n\t%s", cp, strings.Join(gotAudits, "\n\t"), strings.Join(want, "\n\t"))
				}
				var sum Stats
				sum.Add(w1.Stats())
				sum.Add(w2.Stats())
				sum.Suppressed = 0
				if sum != full.Stats() {
					t.Errorf("resumed at %+v: counters add up to\n%+v, want\n%+v", cp, sum, full.Stats())
				}
			}
		})
	}
}
