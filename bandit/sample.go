package bandit

import "math"

// SampleIndex draws an entry of pmf the way VW's explore library and the
// Personalizer client do (sample_after_normalizing with the event id as seed):
// the seed is the MurmurHash3 of eventID, one merand48 draw scaled by the sum
// of the probabilities picks the first entry whose running sum exceeds it.
// Negative probabilities count as 0; if all are 0 the first entry is chosen.
// It returns the index into pmf, or -1 if pmf is empty. The same eventID and
// pmf always give the same index.
func SampleIndex(eventID string, pmf []ActionProb) int {
	if len(pmf) == 0 {
		return -1
	}
	var total float32
	for _, ap := range pmf {
		total += max(ap.Prob, 0)
	}
	if total == 0 {
		return 0
	}
	draw := min(total*merand48(uint64(murmur3(cstring(eventID), 0))), total)
	var sum float32
	for i, ap := range pmf {
		sum += max(ap.Prob, 0)
		if sum > draw {
			return i
		}
	}
	return len(pmf) - 1
}

// merand48 is VW's merand48_noadvance: one step of a 64-bit linear
// congruential generator, its bits 25..47 made a float in [0, 1).
func merand48(seed uint64) float32 {
	seed = 0xeece66d5deece66d*seed + 2147483647
	return math.Float32frombits(uint32(seed>>25)&0x7FFFFF|127<<23) - 1
}
