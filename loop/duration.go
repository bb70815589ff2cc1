package loop

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as Personalizer
// does: an ISO 8601 duration ("PT10M", "P2D", "PT0.5S"). It also reads
// .NET TimeSpan text ("00:10:00", "1.00:00:00"), which older clients send.
type Duration time.Duration

// String gives the ISO 8601 form: days, hours, minutes and seconds, the
// largest units first, zero parts left out ("PT0S" for zero).
func (d Duration) String() string {
	v := time.Duration(d)
	if v == 0 {
		return "PT0S"
	}
	var b strings.Builder
	if v < 0 {
		b.WriteByte('-')
		v = -v
	}
	b.WriteByte('P')
	if days := v / (24 * time.Hour); days > 0 {
		fmt.Fprintf(&b, "%dD", days)
		v -= days * 24 * time.Hour
	}
	if v == 0 {
		return b.String()
	}
	b.WriteByte('T')
	if h := v / time.Hour; h > 0 {
		fmt.Fprintf(&b, "%dH", h)
		v -= h * time.Hour
	}
	if m := v / time.Minute; m > 0 {
		fmt.Fprintf(&b, "%dM", m)
		v -= m * time.Minute
	}
	if v > 0 {
		b.WriteString(strconv.FormatFloat(v.Seconds(), 'f', -1, 64))
		b.WriteByte('S')
	}
	return b.String()
}

// MarshalJSON writes the ISO 8601 string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads an ISO 8601 duration or .NET TimeSpan text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"PT10M\", got %s", b)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration reads an ISO 8601 duration (PnDTnHnMnS, with weeks and
// fractional seconds; no years or months, whose length varies) or .NET
// TimeSpan text ([d.]hh:mm:ss[.fff]).
func ParseDuration(s string) (time.Duration, error) {
	if strings.Contains(s, ":") {
		return parseTimeSpan(s)
	}
	bad := fmt.Errorf("duration %q is not ISO 8601 (such as \"PT10M\" or \"P1D\")", s)
	rest, neg := strings.CutPrefix(s, "-")
	rest, ok := strings.CutPrefix(strings.ToUpper(rest), "P")
	if !ok || rest == "" || rest == "T" {
		return 0, bad
	}
	var total float64 // seconds
	inTime := false
	for rest != "" {
		if rest[0] == 'T' {
			if inTime {
				return 0, bad
			}
			inTime = true
			rest = rest[1:]
			continue
		}
		i := strings.IndexFunc(rest, func(r rune) bool { return (r < '0' || r > '9') && r != '.' && r != ',' })
		if i <= 0 {
			return 0, bad
		}
		n, err := strconv.ParseFloat(strings.ReplaceAll(rest[:i], ",", "."), 64)
		if err != nil {
			return 0, bad
		}
		var unit float64
		switch u := rest[i]; {
		case u == 'W' && !inTime:
			unit = 7 * 86400
		case u == 'D' && !inTime:
			unit = 86400
		case u == 'H' && inTime:
			unit = 3600
		case u == 'M' && inTime:
			unit = 60
		case u == 'S' && inTime:
			unit = 1
		default:
			return 0, bad
		}
		total += n * unit
		rest = rest[i+1:]
	}
	if total > float64(1<<63-1)/1e9 {
		return 0, fmt.Errorf("duration %q is too long", s)
	}
	v := time.Duration(total * 1e9)
	if neg {
		v = -v
	}
	return v, nil
}

// parseTimeSpan reads .NET's TimeSpan text: [-][d.]hh:mm:ss[.fffffff].
func parseTimeSpan(s string) (time.Duration, error) {
	bad := fmt.Errorf("duration %q is not a time span (such as \"00:10:00\")", s)
	rest, neg := strings.CutPrefix(s, "-")
	var days int64
	parts := strings.Split(rest, ":")
	if len(parts) != 3 {
		return 0, bad
	}
	if d, h, ok := strings.Cut(parts[0], "."); ok {
		n, err := strconv.ParseInt(d, 10, 32)
		if err != nil {
			return 0, bad
		}
		days, parts[0] = n, h
	}
	h, err1 := strconv.ParseUint(parts[0], 10, 8)
	m, err2 := strconv.ParseUint(parts[1], 10, 8)
	sec, err3 := strconv.ParseFloat(parts[2], 64)
	if err1 != nil || err2 != nil || err3 != nil || h > 23 || m > 59 || sec < 0 || sec >= 60 {
		return 0, bad
	}
	v := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec*1e9)
	if neg {
		v = -v
	}
	return v, nil
}
