package bandit

import (
	"bufio"
	"compress/gzip"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestMurmur3(t *testing.T) {
	t.Parallel()
	tests := []struct {
		data string
		seed uint32
		want uint32
	}{
		{"", 0, 0},
		{"", 1, 0x514e28b7},
		{"", 0xffffffff, 0x81f16f39},
		{"\x00\x00\x00\x00", 0, 0x2362f9de},
		{"aaaa", 0x9747b28c, 0x5a97808a},
		{"Hello, world!", 0x9747b28c, 0x24884cba},
		{"The quick brown fox jumps over the lazy dog", 0x9747b28c, 0x2fa826cd},
		{"User", 0, 0x90300ef5},
	}
	for _, tt := range tests {
		if got := murmur3(tt.data, tt.seed); got != tt.want {
			t.Errorf("murmur3(%q, %#x) = %#x, want %#x", tt.data, tt.seed, got, tt.want)
		}
		if got := murmur3([]byte(tt.data), tt.seed); got != tt.want {
			t.Errorf("murmur3([]byte(%q), %#x) = %#x, want %#x", tt.data, tt.seed, got, tt.want)
		}
	}
}

// hashString is VW's hashstring of a Go string, which may hold a NUL.
func hashString[T stringish](s T, seed uint32) uint32 {
	h, _ := hashStrings(cstring(s), seed)
	return h
}

func TestHashString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    string
		seed uint32
		want uint32
	}{
		{"digits are their value plus the seed", "123", 1000, 1123},
		{"surrounding blanks are trimmed", " \t123\n", 7, 130},
		{"empty is the seed", "", 42, 42},
		{"only blanks is the seed", "   ", 42, 42},
		{"a default namespace name hashes to 0", " ", 0, 0},
		{"not all digits is murmur", "12a", 5, murmur3("12a", 5)},
		{"inner blanks are kept", "a b", 0, murmur3("a b", 0)},
		{"a NUL ends the name as in C", "User\x00junk", 0, murmur3("User", 0)},
		{"digit overflow wraps like size_t", "18446744073709551617", 0, 1},
		{"bytes above 0x7f are not trimmed", "\xc3", 0, murmur3("\xc3", 0)},
	}
	for _, tt := range tests {
		if got := hashString(tt.s, tt.seed); got != tt.want {
			t.Errorf("%s: hashString(%q, %d) = %d, want %d", tt.name, tt.s, tt.seed, got, tt.want)
		}
	}
}

// auditFeature is one feature printed by vw --audit:
// name:index:value:weight[@adaptive].
type auditFeature struct {
	name         string
	index        uint64
	value        float64
	weight, sumG string
}

// readAudit returns the feature lists of vw --audit output, one per example
// VW predicted or learned, in order.
func readAudit(t *testing.T, path string) [][]auditFeature {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]auditFeature
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "\t") {
			continue
		}
		var block []auditFeature
		for tok := range strings.FieldsSeq(line) {
			parts := strings.Split(tok, ":")
			n := len(parts)
			if n < 4 {
				t.Fatalf("bad audit token %q", tok)
			}
			index, err1 := strconv.ParseUint(parts[n-3], 10, 64)
			value, err2 := strconv.ParseFloat(parts[n-2], 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("bad audit token %q", tok)
			}
			weight, sumG, _ := strings.Cut(parts[n-1], "@")
			block = append(block, auditFeature{strings.Join(parts[:n-3], ":"), index, value, weight, sumG})
		}
		blocks = append(blocks, block)
	}
	return blocks
}

// sameFeatures checks that got lists the audited features in their order.
func sameFeatures(t *testing.T, what string, got []HashedFeature, want []auditFeature) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d features, VW audited %d", what, len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Index != w.index || !closeTo(float64(g.Value), w.value) {
			t.Errorf("%s: feature %d (%s) = %d:%v, VW audited %d:%v", what, i, w.name, g.Index, g.Value, w.index, w.value)
		}
	}
}

// closeTo compares with the 6 significant digits --audit prints.
func closeTo(got, want float64) bool {
	return math.Abs(got-want) <= 1e-5*math.Max(math.Abs(want), 1e-3)
}

func readLines(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r *bufio.Scanner
	if strings.HasSuffix(path, ".gz") {
		z, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = bufio.NewScanner(z)
	} else {
		r = bufio.NewScanner(f)
	}
	r.Buffer(nil, 1<<20)
	var lines [][]byte
	for r.Scan() {
		lines = append(lines, append([]byte(nil), r.Bytes()...))
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func parseLine(t *testing.T, line []byte) *Event {
	t.Helper()
	var e Event
	var d DSJSONParser
	if err := d.Parse(line, &e); err != nil {
		t.Fatalf("parse %s: %v", line, err)
	}
	return &e
}

func mustPolicy(t testing.TB, args string) *Policy {
	t.Helper()
	p, err := ParsePolicy(args)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAuditFirstEvent reproduces every feature and -q :: pair index VW
// audited for the first event of the public data set (its text-format twin
// is first_event.txt): 10 predictions, then the learned action 7.
func TestAuditFirstEvent(t *testing.T) {
	t.Parallel()
	blocks := readAudit(t, "../testdata/vw/first_event.audit.txt")
	e := parseLine(t, readLines(t, "../testdata/vw/public_train.dsjson.gz")[0])
	got := Features(e, mustPolicy(t, DefaultPolicy))
	if len(blocks) != 11 || len(got) != 10 {
		t.Fatalf("%d audit blocks and %d actions, want 11 and 10", len(blocks), len(got))
	}
	for a := range 10 {
		sameFeatures(t, "action "+strconv.Itoa(a), got[a], blocks[a])
	}
	sameFeatures(t, "learned action 7", got[7], blocks[10])
}

// TestAuditTiny checks tiny.dsjson against VW's audit: the hashes of string
// features ("gender":"=f" is gender=f), and the weights, adaptive sums and
// label-range clamping after learning the first event.
func TestAuditTiny(t *testing.T) {
	t.Parallel()
	blocks := readAudit(t, "../testdata/vw/tiny.dsjson.audit.txt")
	lines := readLines(t, "../testdata/vw/tiny.dsjson")
	policy := mustPolicy(t, "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::")
	m := NewModel(policy)
	var p Prediction

	first := parseLine(t, lines[0])
	got := Features(first, policy)
	for a := range 3 {
		sameFeatures(t, "event 1 action "+strconv.Itoa(a), got[a], blocks[a])
	}
	sameFeatures(t, "event 1 learned action 1", got[1], blocks[3])
	if _, learned := m.Learn(first, &p); !learned {
		t.Fatal("first event not learned")
	}

	// VW prints the second event's features sorted by |weight*value|, with
	// the weights learned from the first event.
	second := parseLine(t, lines[1])
	got = Features(second, policy)
	for b, a := range []int{0, 1, 2, 0} {
		for _, w := range blocks[4+b] {
			found := false
			for _, g := range got[a] {
				if g.Index == w.index && closeTo(float64(g.Value), w.value) {
					found = true
				}
			}
			if !found {
				t.Errorf("event 2 action %d: no feature %s %d:%v", a, w.name, w.index, w.value)
			}
			weight := strconv.FormatFloat(float64(m.w[4*w.index]), 'g', 6, 32)
			sumG := strconv.FormatFloat(float64(m.w[4*w.index+1]), 'g', 6, 32)
			if weight != w.weight || sumG != w.sumG {
				t.Errorf("%s: weight %s@%s, VW %s@%s", w.name, weight, sumG, w.weight, w.sumG)
			}
		}
	}
	if m.minLabel != -1 || m.maxLabel != 0 {
		t.Errorf("label range [%v, %v], want [-1, 0]", m.minLabel, m.maxLabel)
	}
}
