package bandit

import (
	"errors"
	"math"
	"strconv"
)

// numKind is the RapidJSON handler a number reaches, which decides how VW
// converts it to float32 and where VW accepts it.
type numKind uint8

const (
	numUint   numKind = iota // 0 .. 2^32-1
	numInt                   // -2^31 .. -1
	numInt64                 // other integers that fit 64 bits
	numUint64                // 2^63 .. 2^64-1
	numDouble                // a fraction, an exponent or a bigger integer
)

// jsonNumber is a parsed JSON number: its kind, its float32 value as VW gets
// it and, for integers, the integer itself.
type jsonNumber struct {
	kind  numKind
	value float32
	u     uint64 // the magnitude of an integer
}

var (
	errNumberInvalid  = errors.New("invalid number")
	errNumberFraction = errors.New("missing digits after the decimal point")
	errNumberExponent = errors.New("missing exponent digits")
	errNumberTooBig   = errors.New("number too big to be stored in double")
)

// pow10 holds the correctly rounded doubles 1e0..1e308 of RapidJSON's table.
var pow10 = func() (t [309]float64) {
	for i := range t {
		t[i], _ = strconv.ParseFloat("1e"+strconv.Itoa(i), 64)
	}
	return t
}()

// parseNumber parses the number at the start of s exactly as RapidJSON does
// without kParseFullPrecisionFlag, the way VW 9.11.2 reads JSON: digits past
// what fits in 53 bits (then 17 significant digits) are dropped and the
// result is the significand divided or multiplied by a power of ten in double
// precision. It returns the number and how many bytes it used.
func parseNumber(s []byte) (jsonNumber, int, error) {
	if n, used, ok := parseShortNumber(s); ok {
		return n, used, nil
	}
	return parseRapidJSON(s)
}

// parseRapidJSON is RapidJSON's number parser; parseNumber tries the short
// path first.
func parseRapidJSON(s []byte) (jsonNumber, int, error) {
	pos := 0
	peek := func() byte {
		if pos < len(s) {
			return s[pos]
		}
		return 0
	}
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }

	minus := peek() == '-'
	if minus {
		pos++
	}
	var (
		i                uint32
		i64              uint64
		use64, useDouble bool
		significand      int
		d                float64
	)
	switch c := peek(); {
	case c == '0':
		pos++
	case c >= '1' && c <= '9':
		i = uint32(c - '0')
		pos++
		limit, last := uint32(429496729), byte('5') // 2^32-1
		if minus {
			limit, last = 214748364, '8' // 2^31
		}
		for isDigit(peek()) {
			if i >= limit && (i != limit || peek() > last) {
				i64, use64 = uint64(i), true
				break
			}
			i = i*10 + uint32(peek()-'0')
			pos++
			significand++
		}
	default:
		return jsonNumber{}, pos, errNumberInvalid
	}
	if use64 {
		limit, last := uint64(0x1999999999999999), byte('5') // 2^64-1
		if minus {
			limit, last = 0x0CCCCCCCCCCCCCCC, '8' // 2^63
		}
		for isDigit(peek()) {
			if i64 >= limit && (i64 != limit || peek() > last) {
				d, useDouble = float64(i64), true
				break
			}
			i64 = i64*10 + uint64(peek()-'0')
			pos++
			significand++
		}
	}
	if useDouble {
		for isDigit(peek()) {
			d = d*10 + float64(peek()-'0')
			pos++
		}
	}

	expFrac := 0
	if peek() == '.' {
		pos++
		if !isDigit(peek()) {
			return jsonNumber{}, pos, errNumberFraction
		}
		if !useDouble {
			if !use64 {
				i64 = uint64(i)
			}
			for isDigit(peek()) && i64 <= 1<<53-1 {
				i64 = i64*10 + uint64(peek()-'0')
				pos++
				expFrac--
				if i64 != 0 {
					significand++
				}
			}
			d, useDouble = float64(i64), true
		}
		for isDigit(peek()) {
			if significand < 17 {
				d = d*10 + float64(peek()-'0')
				expFrac--
				if d > 0 {
					significand++
				}
			}
			pos++
		}
	}

	exp := 0
	if c := peek(); c == 'e' || c == 'E' {
		pos++
		if !useDouble {
			if use64 {
				d = float64(i64)
			} else {
				d = float64(i)
			}
			useDouble = true
		}
		expMinus := false
		if c := peek(); c == '+' || c == '-' {
			expMinus = c == '-'
			pos++
		}
		if !isDigit(peek()) {
			return jsonNumber{}, pos, errNumberExponent
		}
		exp = int(peek() - '0')
		pos++
		if expMinus {
			maxExp := (expFrac + 2147483639) / 10
			for isDigit(peek()) {
				exp = exp*10 + int(peek()-'0')
				pos++
				if exp > maxExp {
					for isDigit(peek()) {
						pos++
					}
				}
			}
			exp = -exp
		} else {
			maxExp := 308 - expFrac
			for isDigit(peek()) {
				exp = exp*10 + int(peek()-'0')
				pos++
				if exp > maxExp {
					return jsonNumber{}, pos, errNumberTooBig
				}
			}
		}
	}

	switch {
	case useDouble:
		p := exp + expFrac
		if p < -308 {
			d = fastPath(fastPath(d, -308), p+308)
		} else {
			d = fastPath(d, p)
		}
		if d > math.MaxFloat64 {
			return jsonNumber{}, pos, errNumberTooBig
		}
		if minus {
			d = -d
		}
		return jsonNumber{kind: numDouble, value: float32(d)}, pos, nil
	case use64 && minus:
		return jsonNumber{kind: numInt64, value: float32(-int64(i64)), u: i64}, pos, nil
	case use64:
		return jsonNumber{kind: numUint64, value: float32(i64), u: i64}, pos, nil
	case minus:
		return jsonNumber{kind: numInt, value: float32(-int64(i)), u: uint64(i)}, pos, nil
	}
	return jsonNumber{kind: numUint, value: float32(i), u: uint64(i)}, pos, nil
}

func fastPath(significand float64, exp int) float64 {
	switch {
	case exp < -308:
		return 0
	case exp >= 0:
		return significand * pow10[exp]
	}
	return significand / pow10[-exp]
}

// parseShortNumber parses the common numbers quickly: an optional minus, at
// most 15 digits with an optional fraction and no exponent. For those
// RapidJSON's algorithm reduces to the digits as an integer (exact in a
// double) divided by a power of ten, or to the integer itself, so the
// result is the same bit for bit. ok is false for anything else.
func parseShortNumber(s []byte) (n jsonNumber, used int, ok bool) {
	v, used, frac, ok := shortDigits(s)
	switch {
	case !ok:
		return n, 0, false
	case frac > 0:
		return jsonNumber{kind: numDouble, value: shortValue(s[0] == '-', v, frac)}, used, true
	case v > math.MaxInt32:
		return n, 0, false // let the full parser pick the integer kind
	case s[0] == '-':
		return jsonNumber{kind: numInt, value: float32(-int64(v)), u: v}, used, true
	}
	return jsonNumber{kind: numUint, value: float32(v), u: v}, used, true
}

// shortDigits reads a short number's digits as one integer v, with frac
// of them after the decimal point.
func shortDigits(s []byte) (v uint64, used, frac int, ok bool) {
	pos := 0
	if pos < len(s) && s[pos] == '-' {
		pos++
	}
	start := pos
	for pos < len(s) && s[pos]-'0' <= 9 {
		v = v*10 + uint64(s[pos]-'0')
		pos++
	}
	intDigits := pos - start
	if intDigits == 0 || intDigits > 15 || (intDigits > 1 && s[start] == '0') {
		return 0, 0, 0, false
	}
	if pos < len(s) && s[pos] == '.' {
		pos++
		for pos < len(s) && s[pos]-'0' <= 9 {
			v = v*10 + uint64(s[pos]-'0')
			pos++
			frac++
		}
		if frac == 0 || intDigits+frac > 15 {
			return 0, 0, 0, false
		}
	}
	if pos < len(s) && (s[pos] == 'e' || s[pos] == 'E') {
		return 0, 0, 0, false
	}
	return v, pos, frac, true
}

// shortValue is the float32 of a short number with a fraction.
func shortValue(minus bool, v uint64, frac int) float32 {
	d := float64(v) / pow10[frac]
	if minus {
		d = -d
	}
	return float32(d)
}

// shortFeatureValue is the float32 VW makes of a short number, the value of
// a "key":number feature.
func shortFeatureValue(s []byte) (value float32, used int, ok bool) {
	v, used, frac, ok := shortDigits(s)
	switch {
	case !ok:
		return 0, 0, false
	case frac > 0:
		return shortValue(s[0] == '-', v, frac), used, true
	case v > math.MaxInt32:
		return 0, 0, false
	case s[0] == '-':
		return float32(-int64(v)), used, true
	}
	return float32(v), used, true
}
