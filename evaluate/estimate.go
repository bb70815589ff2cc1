package evaluate

import (
	"math"
)

// Confidence is the level of every interval: 95%, as Personalizer's.
const Confidence = 0.95

// zGaussian is the standard normal quantile at 1 - (1-Confidence)/2.
const zGaussian = 1.959963984540054

// sums accumulates one policy's per-event terms over a bucket or the
// whole run. Every sum is weighted by the event's count c, 1/(1-pdrop)
// (1 unless the server subsampled): n = Σc, sw = Σ c·w, swr = Σ c·w·r and
// so on, with w = π(chosen)/p the importance weight (p the logged
// probability of the chosen action before subsampling, so c·w·r =
// π·r/_label_probability), r the reward and d the doubly robust term.
type sums struct {
	events           int64
	n, nonZero       float64
	sw, sw2          float64
	swr, sw2r, sw2r2 float64
	sd, sd2          float64
	sr               float64 // Σ c·r
	rmin, rmax       float64 // the reward range: configured, widened by rewards seen
}

func newSums(rmin, rmax float64) sums { return sums{rmin: rmin, rmax: rmax} }

// add counts one event: count c, importance weight w, reward r, doubly
// robust term d.
func (s *sums) add(c, w, r, d float64) {
	s.events++
	s.n += c
	if w > 0 {
		s.nonZero += c
	}
	s.sw += c * w
	s.sw2 += c * w * w
	s.swr += c * w * r
	s.sw2r += c * w * w * r
	s.sw2r2 += c * w * w * r * r
	s.sd += c * d
	s.sd2 += c * d * d
	s.sr += c * r
	s.rmin, s.rmax = min(s.rmin, r), max(s.rmax, r)
}

// Interval is a confidence interval at [Confidence].
type Interval struct {
	Lower float64 `json:"lower"`
	Upper float64 `json:"upper"`
}

// gaussian is Personalizer's interval: mean ± z·sd/√n, sd the sample
// standard deviation of the per-event terms whose count-weighted sum is
// sx and sum of squares sx2. It needs n > 1.
func gaussian(n, sx, sx2 float64) (half float64, ok bool) {
	if !(n > 1) {
		return 0, false
	}
	v := (sx2 - sx*sx/n) / (n - 1)
	return zGaussian * math.Sqrt(max(v, 0)/n), true
}

// ips, snips and dr are the estimates; snips is undefined (ok false)
// when no event has weight.
func (s *sums) ips() float64 { return s.swr / s.n }
func (s *sums) dr() float64  { return s.sd / s.n }
func (s *sums) snips() (float64, bool) {
	if !(s.sw > 0) {
		return 0, false
	}
	return s.swr / s.sw, true
}

// snipsHalf is the Gaussian half-width of SNIPS by the delta method: the
// sample variance of w·(r - SNIPS) divided by the mean weight squared.
func (s *sums) snipsHalf() (float64, bool) {
	v, ok := s.snips()
	if !ok || !(s.n > 1) {
		return 0, false
	}
	dev := s.sw2r2 - 2*v*s.sw2r + v*v*s.sw2 // Σ c·(w(r-v))²; Σ c·w(r-v) is 0
	mw := s.sw / s.n
	return zGaussian * math.Sqrt(max(dev/(s.n-1), 0)/s.n) / mw, true
}

// cressieReadValue is the Cressie-Read (power -2) estimate of the policy's
// value, the point estimate of VW's estimators package
// (bandits/cressieread.py) with weights known only to be in [0, ∞): IPS
// with the weights reweighted so that their mean is 1, the missing mass
// given the mean reward. It is undefined (ok false) in degenerate cases.
func (s *sums) cressieReadValue() (float64, bool) {
	n := s.n
	if !(n > 0) {
		return 0, false
	}
	var gamma, beta float64
	if s.sw < n { // the fake point is w = ∞
		gamma = -(1 + n) / n
	} else { // w = 0
		a, b := s.sw/(1+n), s.sw2/(1+n)
		if !(a*a < b) {
			return 0, false
		}
		gamma, beta = (b-a)/(a*a-b), (1-a)/(a*a-b)
	}
	v := (-gamma*s.swr - beta*s.sw2r) / (1 + n)
	missing := max(0, 1-(-gamma*s.sw-beta*s.sw2)/(1+n))
	return v + missing*s.sr/n, true
}

// cressieRead is the empirical-likelihood interval of Karampatziakis,
// Mineiro and Ramdas ("Off-policy evaluation via the regularized
// Lagrangian", 2020; VW's estimators package, bandits/cressieread.py), for
// the policy's value with importance weights known only to be in
// [0, ∞) and rewards in [s.rmin, s.rmax]: it stays valid with heavy
// weights, where the Gaussian interval is too narrow. It is the set of
// values whose Cressie-Read (power -2) divergence from the empirical
// distribution of (w, r), with the weights' mean constrained to 1, is
// within the F(1, n) quantile at Confidence. When a side has no finite
// solution it is the reward bound (a trivially valid side).
func (s *sums) cressieRead() (Interval, bool) {
	n := s.n
	if !(n > 0) {
		return Interval{}, false
	}
	// The dual's constant: the "fake" extra point is w = ∞ when the
	// weights average below 1, else w = 0.
	var g float64
	if s.sw < n {
		g = 1 + 1/n
	} else {
		a, b := s.sw/(1+n), s.sw2/(1+n)
		g = (1 + n) * (a - 1) * (a - 1) / (b - a*a)
	}
	t := tQuantile(1-(1-Confidence)/2, n)
	phi := (-g - t*t) / (2 * (1 + n)) // t² is F(1, n)'s quantile at Confidence
	const atol = 1e-9
	bound := func(r, sign float64) float64 {
		best, found := math.Inf(1), false
		cand := func(x, y, z float64) {
			switch {
			case math.Abs(y*z) <= atol*atol:
				best, found = min(best, x-math.Sqrt2*atol), true
			case z <= 0 && y*z >= 0:
				best, found = min(best, x-math.Sqrt(2*y*z)), true
			}
		}
		// Fake point w = ∞.
		x := sign * (r + (s.swr-s.sw*r)/n)
		y := (r*s.sw-s.swr)*(r*s.sw-s.swr)/(n*(1+n)) - (r*r*s.sw2-2*r*s.sw2r+s.sw2r2)/(1+n)
		z := phi + 1/(2*n)
		if math.Abs(y*z) <= 1e-9 {
			y = 0
		}
		cand(x, y, z)
		// Fake point w = 0.
		bw, bw2 := s.sw/(1+n), s.sw2/(1+n)
		bwr, bw2r, bw2r2 := sign*s.swr/(1+n), sign*s.sw2r/(1+n), s.sw2r2/(1+n)
		if v := bw2 - bw*bw; v > 0 {
			x := bwr + (1-bw)*(bw2r-bw*bwr)/v
			y := (bw2r-bw*bwr)*(bw2r-bw*bwr)/v - (bw2r2 - bwr*bwr)
			z := phi + 0.5*(1-bw)*(1-bw)/v
			cand(x, y, z)
		}
		if !found {
			return math.Inf(-1) // clamped to the reward bound below
		}
		return best
	}
	lo := min(s.rmax, max(s.rmin, bound(s.rmin, 1)))
	hi := min(s.rmax, max(s.rmin, -bound(s.rmax, -1)))
	return Interval{lo, hi}, true
}

// tQuantile is Student's t distribution's quantile at q (> 0.5) with df
// degrees of freedom: the t whose two-sided tail I_x(df/2, 1/2), x =
// df/(df+t²), is 2(1-q), found by bisection on x.
func tQuantile(q, df float64) float64 {
	tail := 2 * (1 - q)
	lo, hi := 0.0, 1.0 // I_x grows with x: I_0 = 0, I_1 = 1
	for range 200 {
		mid := (lo + hi) / 2
		if mid == lo || mid == hi {
			break
		}
		if incBeta(df/2, 0.5, mid) < tail {
			lo = mid
		} else {
			hi = mid
		}
	}
	x := (lo + hi) / 2
	return math.Sqrt(df * (1 - x) / x)
}

// incBeta is the regularized incomplete beta function I_x(a, b), by its
// continued fraction (modified Lentz), using the symmetry I_x(a, b) =
// 1 - I_{1-x}(b, a) where the fraction converges faster.
func incBeta(a, b, x float64) float64 {
	switch {
	case x <= 0:
		return 0
	case x >= 1:
		return 1
	}
	la, _ := math.Lgamma(a)
	lb, _ := math.Lgamma(b)
	lab, _ := math.Lgamma(a + b)
	front := math.Exp(lab - la - lb + a*math.Log(x) + b*math.Log1p(-x))
	if x > (a+1)/(a+b+2) {
		return 1 - front*betaFraction(b, a, 1-x)/b
	}
	return front * betaFraction(a, b, x) / a
}

func betaFraction(a, b, x float64) float64 {
	const tiny, eps = 1e-300, 1e-16
	c, d := 1.0, 1-(a+b)*x/(a+1)
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	f := d
	// step is one term of Lentz's method: the factor it multiplies f by.
	step := func(num float64) float64 {
		d, c = 1+num*d, 1+num/c
		if math.Abs(d) < tiny {
			d = tiny
		}
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		return d * c
	}
	for m := 1.0; m < 1e7; m++ {
		f *= step(m * (b - m) * x / ((a + 2*m - 1) * (a + 2*m)))              // even
		del := step(-(a + m) * (a + b + m) * x / ((a + 2*m) * (a + 2*m + 1))) // odd
		f *= del
		if math.Abs(del-1) < eps {
			break
		}
	}
	return f
}
