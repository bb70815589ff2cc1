package bandit

import "math"

// VW's update calls glibc's expf and powf, whose results are not always the
// correctly rounded ones (about 1 call in 1000 differs from the float32
// rounding of math.Exp or math.Pow), so using anything else drifts from VW's
// weights. These are ports of glibc's algorithms, which come from Arm's
// optimized-routines (MIT or Apache-2.0): a table-driven log2 and exp2
// evaluated in float64, with their published tables and coefficients.
// The float64 conversions keep Go from fusing multiplies and adds, which
// glibc's generic x86-64 build does not do either.

// expf is glibc's expf: x/ln2 = k/32 + r, 2^(k/32) from a table, 2^r from a
// cubic.
func expf(x float32) float32 {
	const invLn2N = 0x1.71547652b82fep+0 * 32
	if abs32(x) >= 88 || x != x {
		switch {
		case x != x || x > 0x1.62e42ep6: // NaN, or beyond float32
			return x * math.MaxFloat32
		case x < -0x1.9fe368p6:
			return 0
		}
	}
	return exp2k(float64(invLn2N * float64(x)))
}

// exp2k returns 2^(z/32) as float32: z = k + r with k an integer, 2^(k/32)
// from a table and 2^(r/32) from a cubic. (glibc's powf computes 2^(z/32)
// unscaled, which gives the same bits: the scalings are powers of two.)
func exp2k(z float64) float32 {
	const (
		shift = 0x1.8p+52 // adding it rounds to an integer
		c0    = 0x1.c6af84b912394p-5 / 32 / 32 / 32
		c1    = 0x1.ebfce50fac4f3p-3 / 32 / 32
		c2    = 0x1.62e42ff0c52d6p-1 / 32
	)
	kd := float64(z + shift)
	ki := math.Float64bits(kd)
	kd = float64(kd - shift)
	r := float64(z - kd)
	s := math.Float64frombits(exp2fTable[ki%32] + ki<<47)
	p := float64(float64(c0*r) + c1)
	y := float64(float64(c2*r) + 1)
	y = float64(float64(p*float64(r*r)) + y)
	return float32(y * s)
}

// exp2fTable[i] is 2^(i/32) as float64 bits, minus i<<47 so that adding
// k<<47 for k = 32m+i also multiplies it by 2^m.
var exp2fTable = [32]uint64{
	0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
	0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
	0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
	0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
	0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
	0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
	0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
	0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
}

// powf is glibc's powf for the arguments VW's update passes (x > 0 normal):
// 2^(y*log2(x)). Other arguments, which only degenerate data produces, fall
// back to math.Pow.
func powf(x, y float32) float32 {
	ix := math.Float32bits(x)
	switch {
	case y == 0 || x == 1:
		return 1
	case y != y || ix-0x00800000 >= 0x7f800000-0x00800000: // NaN y, or x <= 0, subnormal, inf or NaN
		return float32(math.Pow(float64(x), float64(y)))
	}
	ylogx := float64(float64(y) * log2x(ix))
	switch {
	case ylogx <= -150:
		return 0
	case ylogx > 0x1.fffffffd1d571p+6:
		return float32(math.Inf(1))
	case ylogx > 0x1.fffffffa3aae2p+6:
		return math.MaxFloat32
	}
	return exp2k(ylogx * 32)
}

// log2x is log2 of the positive normal float32 with bits ix: x = 2^k z with
// z near one of 16 centers c, log2(x) = k + log2(c) + log1p(z/c-1)/ln2.
func log2x(ix uint32) float64 {
	const off = 0x3f330000
	tmp := ix - off
	i := (tmp >> 19) % 16
	top := tmp & 0xff800000
	k := int32(top) >> 23
	t := log2Table[i]
	z := float64(math.Float32frombits(ix - top))
	r := float64(float64(z*t.invc) - 1)
	y0 := float64(t.logc + float64(k))
	r2 := float64(r * r)
	a := &log2Poly
	y := float64(float64(a[0]*r) + a[1])
	p := float64(float64(a[2]*r) + a[3])
	r4 := float64(r2 * r2)
	q := float64(float64(a[4]*r) + y0)
	q = float64(float64(p*r2) + q)
	return float64(float64(y*r4) + q)
}

var log2Table = [16]struct{ invc, logc float64 }{
	{0x1.661ec79f8f3bep+0, -0x1.efec65b963019p-2},
	{0x1.571ed4aaf883dp+0, -0x1.b0b6832d4fca4p-2},
	{0x1.49539f0f010bp+0, -0x1.7418b0a1fb77bp-2},
	{0x1.3c995b0b80385p+0, -0x1.39de91a6dcf7bp-2},
	{0x1.30d190c8864a5p+0, -0x1.01d9bf3f2b631p-2},
	{0x1.25e227b0b8eap+0, -0x1.97c1d1b3b7afp-3},
	{0x1.1bb4a4a1a343fp+0, -0x1.2f9e393af3c9fp-3},
	{0x1.12358f08ae5bap+0, -0x1.960cbbf788d5cp-4},
	{0x1.0953f419900a7p+0, -0x1.a6f9db6475fcep-5},
	{0x1p+0, 0},
	{0x1.e608cfd9a47acp-1, 0x1.338ca9f24f53dp-4},
	{0x1.ca4b31f026aap-1, 0x1.476a9543891bap-3},
	{0x1.b2036576afce6p-1, 0x1.e840b4ac4e4d2p-3},
	{0x1.9c2d163a1aa2dp-1, 0x1.40645f0c6651cp-2},
	{0x1.886e6037841edp-1, 0x1.88e9c2c1b9ff8p-2},
	{0x1.767dcf5534862p-1, 0x1.ce0a44eb17bccp-2},
}

var log2Poly = [5]float64{
	0x1.27616c9496e0bp-2, -0x1.71969a075c67ap-2, 0x1.ec70a6ca7baddp-2, -0x1.7154748bef6c8p-1, 0x1.71547652ab82bp0,
}
