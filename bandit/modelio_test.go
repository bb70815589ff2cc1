package bandit

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
	"testing"
)

// TestReadModelVersion1 reads a file in the first format (written before
// --l1, --l2, --first, --squarecb and --bag existed), built here by hand.
func TestReadModelVersion1(t *testing.T) {
	t.Parallel()
	le := binary.LittleEndian
	policy := "--cb_explore_adf --cb_type dr -b 4"
	b := []byte(modelMagic)
	b = le.AppendUint32(b, 1)
	b = le.AppendUint32(b, uint32(len(policy)))
	b = append(b, policy...)
	b = le.AppendUint32(b, math.Float32bits(-1)) // label range
	b = le.AppendUint32(b, math.Float32bits(0.5))
	b = le.AppendUint64(b, 7)  // mtr events
	b = le.AppendUint64(b, 21) // mtr actions
	for _, f := range []float64{1, 2, 3, 4} {
		b = le.AppendUint64(b, math.Float64bits(f)) // two gd states
	}
	b = le.AppendUint64(b, 1) // one weight slot
	b = le.AppendUint32(b, 5)
	for _, f := range []float32{0.25, 1, 2, 0.5} {
		b = le.AppendUint32(b, math.Float32bits(f))
	}
	b = le.AppendUint32(b, crc32.ChecksumIEEE(b))
	m, err := ReadModel(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if m.minLabel != -1 || m.maxLabel != 0.5 || m.mtr[0] != (mtrState{7, 21}) ||
		m.gd[0] != (gdState{1, 2}) || m.gd[1] != (gdState{3, 4}) || m.w[20] != 0.25 || m.w[23] != 0.5 ||
		m.contraction != 1 || m.gravity != 0 {
		t.Errorf("model %+v", m)
	}
	// It writes itself in the current format, which reads back the same.
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if v := le.Uint32(buf.Bytes()[len(modelMagic):]); v != modelVersion {
		t.Errorf("written as version %d", v)
	}
	m2, err := ReadModel(&buf)
	if err != nil || m2.gd[1] != m.gd[1] || m2.w[23] != 0.5 {
		t.Errorf("rewritten model %+v: %v", m2, err)
	}
}

func TestReadModelErrors(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, "--cb_explore_adf -b 8 --bag 2"))
	var e Event
	var p Prediction
	event(&e, 3, 3)
	m.Learn(&e, &p)
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 1
	// A policy with three bagged models where the file has state for two.
	other := bytes.Replace(good[:len(good)-4], []byte("--bag 2"), []byte("--bag 3"), 1)
	other = binary.LittleEndian.AppendUint32(other, crc32.ChecksumIEEE(other))
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"corrupted byte", corrupt, ErrChecksum.Error()},
		{"truncated", good[:len(good)-9], ErrChecksum.Error()},
		{"empty", nil, "not a bandit model"},
		{"other file", []byte("PK\x03\x04 some zip"), "not a bandit model"},
		{"future version", append([]byte(modelMagic), 9, 0, 0, 0, 0, 0, 0, 0), "unsupported format version 9"},
		{"state for another policy", other, "2 gd states for a policy with 3 models per feature"},
	}
	for _, tt := range tests {
		if _, err := ReadModel(bytes.NewReader(tt.data)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ReadModel = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

// TestWriteReadable checks the text dump: VW's header, the learning state,
// then "slot:weight G N" per slot in use, with --invert_hash style names.
func TestWriteReadable(t *testing.T) {
	t.Parallel()
	pol := mustPolicy(t, "--cb_explore_adf --noconstant -l 0.5 -q AA")
	m := NewModel(pol)
	e := oneFeature(2, -1)
	e.SetKeepNames(true)
	e.Reset()
	a := e.AddAction()
	a.Namespace("A")
	a.Number("x", 2)
	e.SetLabel(0, -1, 1)
	var p Prediction
	m.Learn(e, &p)
	names := map[uint64]string{}
	m.Names(e, &p, func(slot uint64, name string) { names[slot] = name })
	x := uint64(murmur3("x", murmur3("A", 0))) & (1<<18 - 1)
	xx := ((fnvPrime*(x<<2) ^ x<<2) & (4<<18 - 1)) >> 2
	if len(names) != 2 || names[x] != "A^x" || names[xx] != "A^x*A^x" {
		t.Fatalf("names %v, want A^x at %d and A^x*A^x at %d", names, x, xx)
	}
	var plain, named bytes.Buffer
	if err := m.WriteReadable(&plain, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteReadable(&named, names); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Version 9.11.2\n", "Min label:-1\nMax label:0\nbits:18\n", "options: " + pol.String() + "\n",
		"event_sum_0 1\naction_sum_0 1\n", "\n:1\ninitial_t 0\n", "norm normalizer_0 ", "t 1\n",
		"\n" + strconv.FormatUint(x, 10) + ":",
	} {
		if !strings.Contains(plain.String(), want) {
			t.Errorf("readable model lacks %q:\n%s", want, plain.String())
		}
	}
	for _, want := range []string{"\nA^x:" + strconv.FormatUint(x, 10) + ":", "\nA^x*A^x:" + strconv.FormatUint(xx, 10) + ":"} {
		if !strings.Contains(named.String(), want) {
			t.Errorf("inverted model lacks %q:\n%s", want, named.String())
		}
	}
	// One line per slot in use: weight, adaptive sum and normalizer.
	lines := strings.Split(strings.TrimSpace(plain.String()), "\n")
	if f := strings.Fields(strings.SplitN(lines[len(lines)-1], ":", 2)[1]); len(f) != 3 {
		t.Errorf("weight line %q, want weight G N", lines[len(lines)-1])
	}
}
