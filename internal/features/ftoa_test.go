package features

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestAppendShortestIsStrconv checks appendShortest against
// strconv.AppendFloat(b, v, 'g', -1, 64) byte for byte: the edges (zeros,
// subnormals, the largest and smallest values, where %e and %f meet),
// every power of two and of ten and their neighbours, integers, short
// decimals, and 300,000 random bit patterns and random values in [0, 1).
func TestAppendShortestIsStrconv(t *testing.T) {
	t.Parallel()
	check := func(v float64) {
		for _, v := range []float64{v, -v, math.Nextafter(v, math.Inf(1)), math.Nextafter(v, math.Inf(-1))} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			got, want := appendShortest([]byte("x"), v), strconv.AppendFloat([]byte("x"), v, 'g', -1, 64)
			if string(got) != string(want) {
				t.Fatalf("%b: %s, strconv %s", v, got, want)
			}
		}
	}
	for _, v := range []float64{0, 1, 5e-324, 1e-323, 2.2250738585072014e-308, 2.225073858507201e-308, math.MaxFloat64,
		1e-5, 1e-4, 0.0001234, 999999, 999999.5, 1e6, 123456, 1234567, 1e20, 1e21, 1e22, 1e23, 9007199254740992,
		9007199254740993, 0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3, 5e-310, 1.7976931348623157e308, 4.9406564584124654e-324} {
		check(v)
	}
	for e := -1074; e <= 1023; e++ {
		check(math.Ldexp(1, e))
		check(math.Ldexp(1.5, e))
	}
	for e := -325; e <= 309; e++ {
		v, _ := strconv.ParseFloat("1e"+strconv.Itoa(e), 64)
		check(v)
		v, _ = strconv.ParseFloat("9.999999999999999e"+strconv.Itoa(e), 64)
		check(v)
	}
	r := rand.New(rand.NewPCG(9, 10))
	for i := range 100000 {
		check(float64(i))
		check(float64(r.Int64N(1<<53)) / math.Pow(10, float64(r.IntN(30))))
	}
	for range 300000 {
		check(math.Float64frombits(r.Uint64()))
		check(r.Float64())
	}
}

// BenchmarkAppendNumber formats random values in [0, 1), as the sim
// requests' number features have, with appendShortest and with strconv.
func BenchmarkAppendNumber(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]float64, 1024)
	for i := range vals {
		vals[i] = r.Float64()
	}
	buf := make([]byte, 0, 32)
	b.Run("shortest", func(b *testing.B) {
		for i := range b.N {
			buf = appendShortest(buf[:0], vals[i%len(vals)])
		}
	})
	b.Run("strconv", func(b *testing.B) {
		for i := range b.N {
			buf = strconv.AppendFloat(buf[:0], vals[i%len(vals)], 'g', -1, 64)
		}
	})
}
