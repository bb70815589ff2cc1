package bandit

import "math/bits"

// Constants of VW's feature space (vowpalwabbit/core/include/vw/core/constant.h).
const (
	// constantIndex is the hash of VW's "Constant" feature, added to every example.
	constantIndex = 11650396
	// constantNamespace is the namespace index of the constant feature.
	constantNamespace = 128
	// fnvPrime combines two already-scaled feature indices into a quadratic index.
	fnvPrime = 16777619
)

// stringish lets the hash functions read both the builder's strings and the
// parser's byte slices without converting (and so without allocating).
type stringish interface{ ~string | ~[]byte }

// murmur3 is MurmurHash3 x86_32 (VW's uniform_hash).
func murmur3[T stringish](data T, seed uint32) uint32 {
	const c1, c2 = 0xcc9e2d51, 0x1b873593
	h := seed
	n := len(data)
	for ; len(data) >= 4; data = data[4:] {
		k := uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2])<<16 | uint32(data[3])<<24
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
	}
	var k uint32
	switch len(data) {
	case 3:
		k ^= uint32(data[2]) << 16
		fallthrough
	case 2:
		k ^= uint32(data[1]) << 8
		fallthrough
	case 1:
		k ^= uint32(data[0])
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
	}
	h ^= uint32(n)
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// cstring cuts s at its first NUL byte. VW hands every name to its hash as a
// C string (strlen), so a "\u0000" escape in JSON ends the hashed name there.
func cstring[T stringish](s T) T {
	for i := range len(s) {
		if s[i] == 0 {
			return s[:i]
		}
	}
	return s
}

// hashStrings is VW's hashstring (the default --hash strings) of a name
// already cut at a NUL (see cstring): surrounding bytes <= 0x20 are trimmed,
// a name made only of ASCII digits hashes to its value plus the seed,
// anything else to murmur3. plain reports that the hash is murmur3 of the
// whole name, as --hash all would hash it.
func hashStrings[T stringish](s T, seed uint32) (h uint32, plain bool) {
	n := len(s)
	for len(s) > 0 && s[0] <= 0x20 {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] <= 0x20 {
		s = s[:len(s)-1]
	}
	var v uint64 // VW accumulates in size_t and truncates, so overflow wraps the same way
	for i := range len(s) {
		c := s[i]
		if c < '0' || c > '9' {
			return murmur3(s, seed), len(s) == n
		}
		v = 10*v + uint64(c-'0')
	}
	return uint32(v) + seed, false
}

// hashBoth returns the hash of name (already cut at a NUL, see cstring)
// under --hash strings with seed and under --hash all (VW's hashall:
// murmur3, no trimming) with seedAll. The second hash costs nothing in the
// usual case where the two agree.
func hashBoth[T stringish](name T, seed, seedAll uint32) (h, all uint32) {
	h, plain := hashStrings(name, seed)
	if plain && seed == seedAll {
		return h, h
	}
	return h, murmur3(name, seedAll)
}

// namespaceIndex is the namespace a name belongs to: VW keys namespaces by
// their first byte, so "User" and "Uid" share the index 'U'.
func namespaceIndex[T stringish](name T) byte {
	name = cstring(name)
	if len(name) == 0 {
		return 0
	}
	return name[0]
}
