package bandit

import (
	"math"
	"testing"
)

// TestLibm checks the glibc ports against glibc 2.36's own results,
// including inputs where glibc is not correctly rounded (marked *).
func TestLibm(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fn         string
		x, y, want uint32 // float32 bits
	}{
		{"expf", 0xbde8558d, 0, 0x3f648b84}, // *
		{"expf", 0xbdee1e12, 0, 0x3f63e688}, // *
		{"expf", 0xbe0c81fd, 0, 0x3f5f2d2e}, // *
		{"expf", 0x00000000, 0, 0x3f800000},
		{"expf", 0x3f800000, 0, 0x402df854},
		{"expf", 0xc2c80000, 0, 0x0000001b},          // e^-100, subnormal
		{"expf", 0x42b00000, 0, 0x7ef882b7},          // e^88
		{"expf", 0xc2d00000, 0, 0x00000000},          // e^-104 underflows
		{"powf", 0x38108714, 0xbf800000, 0x46e2b98b}, // * 1/x
		{"powf", 0x38355f69, 0xbf800000, 0x46b4aaab}, // * 1/x
		{"powf", 0x3dcccccd, 0xbf800000, 0x41200000},
		{"powf", 0x40000000, 0x3f000000, 0x3fb504f3},
		{"powf", 0x41200000, 0xbe99999a, 0x3f004dce},
		{"powf", 0x41200000, 0x80000000, 0x3f800000}, // y = -0
	}
	for _, tt := range tests {
		x, y := math.Float32frombits(tt.x), math.Float32frombits(tt.y)
		var got float32
		if tt.fn == "expf" {
			got = expf(x)
		} else {
			got = powf(x, y)
		}
		if math.Float32bits(got) != tt.want {
			t.Errorf("%s(%v, %v) = %v (%#08x), glibc %v (%#08x)", tt.fn, x, y, got, math.Float32bits(got), math.Float32frombits(tt.want), tt.want)
		}
	}
}
