// The shortest decimal digits of a float64 below (dbox64 and its helpers)
// are those of Go's strconv (internal/strconv/ftoadbox.go, Go 1.26), which
// uses the Dragonbox algorithm by Junekey Jeon; they are that code, with
// its 128-bit helpers written with math/bits, under Go's license:
//
// Copyright 2025 The Go Authors.
//
// Redistribution and use in source and binary forms, with or without
// modification, are permitted provided that the following conditions are
// met:
//
//    * Redistributions of source code must retain the above copyright
// notice, this list of conditions and the following disclaimer.
//    * Redistributions in binary form must reproduce the above
// copyright notice, this list of conditions and the following disclaimer
// in the documentation and/or other materials provided with the
// distribution.
//    * Neither the name of Google LLC nor the names of its
// contributors may be used to endorse or promote products derived from
// this software without specific prior written permission.
//
// THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS
// "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT
// LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR
// A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT
// OWNER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
// SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT
// LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
// DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY
// THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
// (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
// OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

package features

import (
	"math"
	"math/big"
	"math/bits"
	"sync"
	"sync/atomic"
)

// appendShortest appends the finite v as strconv.AppendFloat(b, v, 'g',
// -1, 64) does, byte for byte: Go's shortest digits (Dragonbox), laid out
// as %e when the decimal exponent is under -4 or at least 6 and as %f
// otherwise. strconv spends more on laying the digits out than on finding
// them; this lays them out directly.
func appendShortest(b []byte, v float64) []byte {
	fb := math.Float64bits(v)
	if fb>>63 != 0 {
		b = append(b, '-')
	}
	if fb<<1 == 0 {
		return append(b, '0')
	}
	exp := int(fb>>52) & 0x7ff
	mant := fb & (1<<52 - 1)
	denorm := exp == 0
	if denorm {
		exp = 1
	} else {
		mant |= 1 << 52
	}
	q, e10 := dbox64(mant, exp-1023-52, denorm)

	var buf [24]byte
	i := len(buf)
	for q >= 100 {
		d := q % 100 * 2
		q /= 100
		i -= 2
		buf[i], buf[i+1] = digitPairs[d], digitPairs[d+1]
	}
	if q >= 10 {
		i -= 2
		buf[i], buf[i+1] = digitPairs[q*2], digitPairs[q*2+1]
	} else {
		i--
		buf[i] = byte(q) + '0'
	}
	digits := buf[i:]
	nd := len(digits)
	dp := nd + e10 // the value is 0.<digits> x 10^dp

	if x := dp - 1; x < -4 || x >= 6 {
		b = append(b, digits[0])
		if nd > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		if x < 0 {
			b = append(b, 'e', '-')
			x = -x
		} else {
			b = append(b, 'e', '+')
		}
		if x >= 100 {
			return append(b, byte(x/100)+'0', byte(x/10%10)+'0', byte(x%10)+'0')
		}
		return append(b, digitPairs[x*2], digitPairs[x*2+1])
	}
	switch {
	case dp <= 0:
		b = append(b, '0', '.')
		for range -dp {
			b = append(b, '0')
		}
		return append(b, digits...)
	case dp >= nd:
		b = append(b, digits...)
		for range dp - nd {
			b = append(b, '0')
		}
		return b
	}
	b = append(b, digits[:dp]...)
	b = append(b, '.')
	return append(b, digits[dp:]...)
}

// digitPairs is 00 to 99, two bytes each.
const digitPairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

// dbox64 returns the shortest decimal q x 10^e10 that reads back as the
// float64 mant x 2^exp (mant with its implicit bit unless denorm), as
// strconv's dboxFtoa64 finds it.
func dbox64(mant uint64, exp int, denorm bool) (q uint64, e10 int) {
	if mant == 1<<52 && !denorm {
		// Algorithm 5.6 (page 24).
		k0 := -mulLog10_2MinusLog10_4Over3(exp)
		φ, β := dboxPow64(k0, exp)
		xi, zi := dboxRange64(φ, β)
		if exp != 2 && exp != 3 {
			xi++
		}
		q := zi / 10
		if xi <= q*10 {
			q, zeros := trimZeros(q)
			return q, -k0 + 1 + zeros
		}
		yru := dboxRoundUp64(φ, β)
		if exp == -77 && yru%2 != 0 {
			yru--
		} else if yru < xi {
			yru++
		}
		return yru, -k0
	}

	// κ = 2 for float64 (section 5.1.3)
	const (
		κ     = 2
		p10κ  = 100       // 10**κ
		p10κ1 = p10κ * 10 // 10**(κ+1)
	)

	// Algorithm 5.2 (page 15).
	k0 := -mulLog10_2(exp)
	φ, β := dboxPow64(κ+k0, exp)
	zi, exact := dboxMulPow64(uint64(mant*2+1)<<β, φ)
	s, r := zi/p10κ1, uint32(zi%p10κ1)
	δi := dboxDelta64(φ, β)

	if r < δi {
		if r != 0 || !exact || mant%2 == 0 {
			s, zeros := trimZeros(s)
			return s, -k0 + 1 + zeros
		}
		s--
		r = p10κ * 10
	} else if r == δi {
		parity, exact := dboxParity64(uint64(mant*2-1), φ, β)
		if parity || (exact && mant%2 == 0) {
			s, zeros := trimZeros(s)
			return s, -k0 + 1 + zeros
		}
	}

	// Algorithm 5.4 (page 18).
	D := r + p10κ/2 - δi/2
	t, ρ := D/p10κ, D%p10κ
	yru := 10*s + uint64(t)
	if ρ == 0 {
		parity, exact := dboxParity64(mant*2, φ, β)
		if parity != ((D-p10κ/2)%2 != 0) || exact && yru%2 != 0 {
			yru--
		}
	}
	return yru, -k0
}

type uint128 struct{ Hi, Lo uint64 }

// dboxPow64 gets the precomputed value of φ̃̃k for float64.
func dboxPow64(k, e int) (φ uint128, β int) {
	φ = pow10Tab()[k-pow10Min]
	if k < 0 || k > 55 {
		φ.Lo++
	}
	β = e + 1 + mulLog2_10(k) - 1
	return φ, β
}

// dboxRange64 returns the left and right float64 endpoints.
func dboxRange64(φ uint128, β int) (left, right uint64) {
	left = (φ.Hi - (φ.Hi >> (52 + 2))) >> (64 - 52 - 1 - β)
	right = (φ.Hi + (φ.Hi >> (52 + 1))) >> (64 - 52 - 1 - β)
	return left, right
}

// dboxRoundUp64 computes the round up of y (i.e., y^(ru)).
func dboxRoundUp64(φ uint128, β int) uint64 {
	return (φ.Hi>>(128/2-52-2-β) + 1) / 2
}

// dboxMulPow64 computes the integer part of the upper 128 of the 192 bits
// of u x φ, and whether its fraction is zero (section 5.2.1).
func dboxMulPow64(u uint64, φ uint128) (intPart uint64, isInt bool) {
	hi, lo := bits.Mul64(u, φ.Hi)
	t, _ := bits.Mul64(u, φ.Lo)
	lo, carry := bits.Add64(lo, t, 0)
	return hi + carry, lo == 0
}

// dboxParity64 computes only the parity of x^(i), y^(i), z^(i)
// and whether x^(f), y^(f), z^(f) = 0 (section 5.2.1).
func dboxParity64(mant2 uint64, φ uint128, β int) (parity bool, isInt bool) {
	high := mant2 * φ.Hi
	hl, lo := bits.Mul64(mant2, φ.Lo)
	hi := high + hl
	parity = ((hi >> (64 - β)) & 1) != 0
	isInt = ((hi << β) | (lo >> (64 - β))) == 0
	return parity, isInt
}

// dboxDelta64 returns δ^(i) from the precomputed value of φ̃k.
func dboxDelta64(φ uint128, β int) uint32 {
	return uint32(φ.Hi >> (64 - 1 - β))
}

// mulLog10_2 returns ⌊x log10(2)⌋ for -1600 <= x <= 1600.
func mulLog10_2(x int) int { return (x * 78913) >> 18 }

// mulLog2_10 returns ⌊x log2(10)⌋ for -500 <= x <= 500.
func mulLog2_10(x int) int { return (x * 108853) >> 15 }

// mulLog10_2MinusLog10_4Over3 computes ⌊e log10(2) - log10(4/3)⌋ (section 6.3).
func mulLog10_2MinusLog10_4Over3(e int) int { return (e*631305 - 261663) >> 21 }

// trimZeros removes the trailing zeros of x > 0, and returns how many.
func trimZeros(x uint64) (uint64, int) {
	p := 0
	for x%10 == 0 {
		x /= 10
		p++
	}
	return x, p
}

const (
	pow10Min = -348
	pow10Max = 347
)

// pow10Tab returns the 128-bit mantissas of 10^pow10Min to 10^pow10Max,
// ⌊10^e x 2^k⌋ for the k that puts it in [2^127, 2^128), as strconv's
// table has them; made on first use (about a millisecond).
func pow10Tab() *[pow10Max - pow10Min + 1]uint128 {
	if t := pow10.Load(); t != nil {
		return t
	}
	pow10Once.Do(func() { pow10.Store(newPow10Tab()) })
	return pow10.Load()
}

var (
	pow10     atomic.Pointer[[pow10Max - pow10Min + 1]uint128]
	pow10Once sync.Once
)

func newPow10Tab() *[pow10Max - pow10Min + 1]uint128 {
	tab := new([pow10Max - pow10Min + 1]uint128)
	put := func(e int, m *big.Int) {
		tab[e-pow10Min] = uint128{new(big.Int).Rsh(m, 64).Uint64(), m.Uint64()}
	}
	one, ten := big.NewInt(1), big.NewInt(10)
	m := new(big.Int)
	for e, p := 0, big.NewInt(1); e <= pow10Max; e, p = e+1, p.Mul(p, ten) {
		if n := p.BitLen(); n <= 128 {
			put(e, m.Lsh(p, uint(128-n)))
		} else {
			put(e, m.Rsh(p, uint(n-128)))
		}
	}
	for e, p := -1, big.NewInt(10); e >= pow10Min; e, p = e-1, p.Mul(p, ten) {
		// ⌊2^(127+n) / p⌋, p in [2^(n-1), 2^n) and not a power of 2
		put(e, m.Div(m.Lsh(one, uint(127+p.BitLen())), p))
	}
	return tab
}
