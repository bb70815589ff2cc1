package learner

// dedupe remembers the last n event keys by their 64-bit FNV-1a hash, so
// memory stays bounded however long the learner runs.
type dedupe struct {
	ring []uint64
	next int // ring position of the oldest key once the ring is full
	seen map[uint64]struct{}
}

func newDedupe(n int) *dedupe {
	return &dedupe{ring: make([]uint64, 0, n), seen: make(map[uint64]struct{}, n)}
}

// add records key and reports whether it was new.
func (d *dedupe) add(key []byte) bool {
	h := uint64(14695981039346656037) // FNV-1a 64, inline: no allocation
	for _, c := range key {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return d.addHash(h)
}

func (d *dedupe) addHash(k uint64) bool {
	if _, ok := d.seen[k]; ok {
		return false
	}
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, k)
	} else {
		delete(d.seen, d.ring[d.next])
		d.ring[d.next] = k
		d.next = (d.next + 1) % len(d.ring)
	}
	d.seen[k] = struct{}{}
	return true
}

// keys returns the remembered hashes, oldest first.
func (d *dedupe) keys() []uint64 {
	return append(append([]uint64(nil), d.ring[d.next:]...), d.ring[:d.next]...)
}
