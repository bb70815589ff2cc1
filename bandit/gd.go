package bandit

import "math"

// VW's limits on feature values in the normalized update (gd.cc).
var (
	xMin     float32 = 1.084202e-19
	x2Min            = xMin * xMin // a float32 product, as VW's constexpr
	maxFloat float32 = math.MaxFloat32
)

// learnOne is VW's scorer + gd learn of one squared-loss example: widen the
// label range, predict (clamped), and if the loss is positive apply the
// adaptive, normalized, invariant update to sub-model sub (0, or 1 for dr's
// cost model) over the features expanded into p. It returns the prediction
// made before the update.
func (m *Model) learnOne(p *Prediction, sub int, y, iw float32) float32 {
	m.minLabel = min(m.minLabel, y)
	m.maxLabel = max(m.maxLabel, y)
	off := uint64(sub) * 4
	pred := m.clamp(m.dot(p, off))
	if d := pred - y; !(d*d > 0) {
		return pred
	}
	pol := m.policy
	sqrtRate := pol.powerT == 0.5
	negPowerT := -pol.powerT
	negNormPower := pol.powerT - 1

	// Pass 1 (pred_per_update_feature): accumulate the adaptive sums, rescale
	// weights whose feature got a larger normalizer, store each weight's rate
	// and sum how much a unit update moves the prediction.
	gradSq := iw * (4 * (pred - y) * (pred - y))
	var normX, ppu float32
	for f := range p.features {
		i := (f.idx + off) & m.mask
		w := m.w[i : i+4 : i+4]
		x := f.x
		x2 := x * x
		if x2 < x2Min {
			x = -xMin
			if f.x > 0 {
				x = xMin
			}
			x2 = x2Min
		}
		w[1] += float32(gradSq * x2)
		if ax := abs32(x); ax > w[2] {
			if w[2] > 0 {
				if sqrtRate {
					w[0] *= w[2] / ax
				} else {
					r := ax / w[2]
					w[0] *= powf(r*r, negNormPower)
				}
			}
			w[2] = ax
		}
		nx2 := x2 / (w[2] * w[2])
		if x2 > maxFloat {
			nx2 = 1
		}
		normX += nx2
		if sqrtRate {
			w[3] = invSqrt(w[1]) * (1 / w[2])
		} else {
			w[3] = powf(w[1], negPowerT) * powf(w[2]*w[2], negNormPower)
		}
		ppu += float32(x2 * w[3])
	}
	st := &m.gd[sub]
	st.normSumNormX += float64(iw) * float64(normX)
	st.totalWeight += float64(iw)
	var mult float32
	if sqrtRate {
		mult = float32(math.Sqrt(float64(float32(st.totalWeight) / float32(st.normSumNormX))))
	} else {
		mult = powf(float32(st.normSumNormX)/float32(st.totalWeight), negNormPower)
	}
	ppu *= mult

	// The invariant update of squared loss (loss_functions.cc).
	scale := pol.eta * iw
	var update float32
	if float64(scale*ppu) < 1e-6 {
		update = 2 * (y - pred) * scale
	} else {
		update = (y - pred) * (1 - expf(-2*scale*ppu)) / ppu
	}
	if update != update || update == 0 {
		return pred
	}

	// Pass 2 (train): move every weight by its rate.
	update *= mult
	for f := range p.features {
		if !(f.x < maxFloat && f.x > -maxFloat) {
			continue
		}
		i := (f.idx + off) & m.mask
		m.w[i] += float32(update * float32(f.x*m.w[i+3]))
	}
	return pred
}

// invSqrt is 1/sqrt(x). VW's release builds use the SSE rsqrtss estimate
// here, which differs in the last bits by CPU, so the --power_t 0.5 path
// matches VW only approximately.
func invSqrt(x float32) float32 { return float32(1 / math.Sqrt(float64(x))) }
