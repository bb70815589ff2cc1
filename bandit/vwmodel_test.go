package bandit

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestVWOptions checks the options string a VW model file keeps, as VW
// 9.11.2 wrote it for the same command lines: kept options sorted by name,
// floats as float32 with 15 digits, --ignore merged, the random state last.
func TestVWOptions(t *testing.T) {
	t.Parallel()
	tests := []struct{ args, want string }{
		{"--cb_explore_adf --dsjson", " --cb_adf --cb_explore_adf --cb_type mtr --csoaa_ldf multiline --csoaa_rank"},
		{"--cb_explore_adf --dsjson --epsilon 0.3 --first_only -b 2",
			" --cb_adf --cb_explore_adf --cb_type mtr --csoaa_ldf multiline --csoaa_rank --epsilon 0.300000011920929 --first_only"},
		{"--cb_explore_adf --squarecb --gamma_scale 5 --gamma_exponent 0.3",
			" --cb_adf --cb_explore_adf --cb_type mtr --csoaa_ldf multiline --csoaa_rank --gamma_exponent 0.300000011920929 --gamma_scale 5 --squarecb"},
		{"--cb_explore_adf --epsilon 0.1 --cb_type dr -l 0.5 --power_t 0.5 --initial_t 2 --l1 0.001 --l2 0.01",
			" --cb_adf --cb_explore_adf --cb_type dr --csoaa_ldf multiline --csoaa_rank --epsilon 0.100000001490116 --learning_rate 0.5 --power_t 0.5"},
		{"--cb_explore_adf --adaptive --invariant", " --adaptive --cb_adf --cb_explore_adf --cb_type mtr --csoaa_ldf multiline --csoaa_rank --invariant"},
		{"--cb_explore_adf --noconstant --hash all --ignore B --ignore A --ignore_linear U -q UA --cubic UUA --interactions UAA",
			" --cb_adf --cb_explore_adf --cb_type mtr --csoaa_ldf multiline --csoaa_rank --cubic UUA --hash all --interactions UAA --noconstant --quadratic UA --ignore AB --ignore_linear U"},
		{"--cb_explore_adf -q UA -q AA --interactions UUA -q :: --ignore_linear A",
			" --cb_adf --cb_explore_adf --cb_type mtr --csoaa_ldf multiline --csoaa_rank --interactions UUA --quadratic UA --quadratic AA --quadratic :: --ignore_linear A"},
		{"--cb_explore_adf --id abc -q :: --random_seed 3",
			" --cb_adf --cb_explore_adf --cb_type mtr --csoaa_ldf multiline --csoaa_rank --quadratic :: --random_seed 3"},
		{"--cb_explore_adf --bag 3 --greedify --epsilon 0.2 --epsilon 0.3",
			" --bag 3 --cb_adf --cb_explore_adf --cb_type mtr --csoaa_ldf multiline --csoaa_rank --epsilon 0.200000002980232 --greedify"},
		// Given, an implied option is kept once.
		{"--cb_explore_adf --cb_adf --cb_type ips", " --cb_adf --cb_explore_adf --cb_type ips --csoaa_ldf multiline --csoaa_rank"},
		// --ccb_explore_adf implies cb_explore_adf and cb_sample too; VW
		// keeps neither --all_slots_loss nor --ccb_no_slot_index.
		{"--ccb_explore_adf --epsilon 0.2 --power_t 0 -q :: -l 0.1 --dsjson",
			" --cb_adf --cb_explore_adf --cb_sample --cb_type mtr --ccb_explore_adf --csoaa_ldf multiline --csoaa_rank --epsilon 0.200000002980232 --learning_rate 0.100000001490116 --power_t 0 --quadratic ::"},
		{"--ccb_explore_adf --cb_explore_adf --cb_type dr --all_slots_loss --ccb_no_slot_index",
			" --cb_adf --cb_explore_adf --cb_sample --cb_type dr --ccb_explore_adf --csoaa_ldf multiline --csoaa_rank"},
	}
	for _, tt := range tests {
		if got := NewModel(mustPolicy(t, tt.args+" -b 2")).vwOptions(); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.args, got, tt.want)
		}
	}
}

// TestVWModelRoundTrip writes a model as a VW file and reads it back: the
// policy comes back (shortest float forms, -b, --id, initial_t) and the
// model predicts the same.
func TestVWModelRoundTrip(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, "--cb_explore_adf --epsilon 0.3 -b 6 --id m1 --initial_t 2 --power_t 0.5 --adaptive --normalized"))
	var p Prediction
	for i := range 5 {
		m.Learn(twoActions(i%2), &p)
	}
	var buf bytes.Buffer
	if err := m.WriteVW(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if !IsVWModel(buf.Bytes()) {
		t.Fatal("IsVWModel(written file) = false")
	}
	r, err := ReadAnyModel(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	const want = "--adaptive --cb_explore_adf --cb_type mtr --epsilon 0.3 --normalized --power_t 0.5 -b 6 --initial_t 2 --id m1"
	if got := r.Policy().String(); got != want {
		t.Errorf("policy %q, want %q", got, want)
	}
	if r.t != m.t || r.gd[0] != m.gd[0] || r.mtr[0] != m.mtr[0] || r.minLabel != m.minLabel {
		t.Errorf("state t %v gd %v mtr %v, want %v %v %v", r.t, r.gd, r.mtr, m.t, m.gd, m.mtr)
	}
	for i := 0; i < len(m.w); i += 4 {
		if [3]float32(m.w[i:i+3]) != [3]float32(r.w[i:i+3]) {
			t.Fatalf("slot %d: %v, want %v", i/4, r.w[i:i+3], m.w[i:i+3])
		}
	}
	var q Prediction
	m.Learn(twoActions(0), &p)
	r.Learn(twoActions(0), &q)
	if p.PMF()[0] != q.PMF()[0] || m.w[4*Features(twoActions(0), m.policy)[0][0].Index] != r.w[4*Features(twoActions(0), r.policy)[0][0].Index] {
		t.Error("the model read back learns differently")
	}
}

// TestVWModelRoundTripCCB writes a --ccb_explore_adf model as a VW file
// and reads it back: the multi-slot state (the slot index on) and the
// random state that sampled an unlabelled slot come back, and the model
// goes on learning as the original does.
func TestVWModelRoundTripCCB(t *testing.T) {
	t.Parallel()
	lines := readLines(t, "../testdata/vw-ccb/first2.dsjson")
	// The second slot is unlabelled and untagged: it samples from the
	// model's random state.
	partial := []byte(`{"c":{"U":{"u":1},"_multi":[{"A":{"x":1}},{"A":{"y":1}},{"A":{"z":1}}],"_slots":[{"S":{"s":1}},{"S":{"s":2}}]},` +
		`"_outcomes":[{"_label_cost":-1,"_a":[2,0,1],"_p":[0.5,0.25,0.25]},{}]}`)
	m := NewModel(mustPolicy(t, ccbTestPolicy+" -b 12 --all_slots_loss"))
	var p Prediction
	m.Learn(parseCCB(t, lines[0]), &p)
	m.Learn(parseCCB(t, partial), &p)
	if !m.ccbMulti || m.rand == 0 {
		t.Fatalf("multi-slot state %v, random state %d", m.ccbMulti, m.rand)
	}
	var buf bytes.Buffer
	if err := m.WriteVW(&buf, nil); err != nil {
		t.Fatal(err)
	}
	r, err := ReadAnyModel(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	// VW does not keep --all_slots_loss.
	want := "--cb_type mtr --ccb_explore_adf --epsilon 0.2 --learning_rate 0.1 --power_t 0 --quadratic :: --random_seed " + strconv.FormatUint(m.rand, 10) + " -b 12"
	if got := r.Policy().String(); got != want {
		t.Errorf("policy %q, want %q", got, want)
	}
	if !r.ccbMulti || r.rand != m.rand || r.t != m.t || r.mtr[0] != m.mtr[0] || r.gd[0] != m.gd[0] {
		t.Errorf("state multi %v rand %d t %v mtr %v gd %v, want %v %d %v %v %v", r.ccbMulti, r.rand, r.t, r.mtr, r.gd, m.ccbMulti, m.rand, m.t, m.mtr, m.gd)
	}
	var q Prediction
	for _, e := range []*Event{parseCCB(t, partial), parseCCB(t, lines[1]), parseCCB(t, partial)} {
		l1, _ := m.Learn(e, &p)
		l2, _ := r.Learn(e, &q)
		if got, want := slotsString(q.Slots()), slotsString(p.Slots()); l1 != l2 || got != want {
			t.Fatalf("read back: loss %v, decisions %s; original %v, %s", l2, got, l1, want)
		}
	}
	// A model that saw single slots only keeps the slot index off.
	one := NewModel(mustPolicy(t, ccbTestPolicy+" -b 12"))
	one.Learn(parseCCB(t, []byte(`{"c":{"U":{"u":1},"_multi":[{"A":{"x":1}},{"A":{"y":1}}],"_slots":[{"_id":"only"}]},"_outcomes":[{"_label_cost":-1,"_a":0,"_p":0.5}]}`)), &p)
	buf.Reset()
	one.WriteVW(&buf, nil)
	if r, err := ReadVWModel(buf.Bytes()); err != nil || r.ccbMulti || !r.Policy().CCB() {
		t.Errorf("single-slot model read back: %v, multi-slot state %v", err, r != nil && r.ccbMulti)
	}
}

// TestReadVWModelErrors checks that damaged and unsupported files are
// refused with errors that say why.
func TestReadVWModelErrors(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	NewModel(mustPolicy(t, "--cb_explore_adf -b 2")).WriteVW(&buf, nil)
	good := buf.Bytes()
	header := 4 + len(vwVersion) + 1
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	withOptions := func(opts string) []byte {
		// A header with other options and a checksum to match.
		var w bytes.Buffer
		v := &vwWriter{w: bufio.NewWriter(&w)}
		v.sized(append([]byte(vwVersion), 0))
		v.hash = true
		v.sized([]byte{0})
		v.raw([]byte{'m'})
		v.f32(0)
		v.f32(0)
		v.u32(2)
		v.u32(0)
		v.u32(0)
		v.u32(0)
		v.sized(append([]byte(opts), 0))
		v.sized(binary.LittleEndian.AppendUint32(nil, v.sum))
		v.w.Flush()
		return w.Bytes()
	}
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"truncated", good[:header+10], "VW model file: header: file is truncated"},
		{"checksum", edit(func(b []byte) []byte { b[header+8] ^= 1; return b }), "header checksum"},
		{"version 8", edit(func(b []byte) []byte { b[4] = '8'; return b }), "version 8.11.2: only version 9.x files are read"},
		{"ccb", withOptions(" --ccb_explore_adf --cb_sample --cb_adf --epsilon 0.2 --slates --no_predict --csoaa_ldf multiline"),
			"options not supported: --slates, --no_predict (supported: --cb_explore_adf or --ccb_explore_adf with"},
		{"cb_sample without ccb", withOptions(" --cb_explore_adf --cb_sample --cb_adf --csoaa_ldf multiline --csoaa_rank"), "options not supported: --cb_sample ("},
		{"ccb first", withOptions(" --ccb_explore_adf --cb_explore_adf --cb_sample --cb_adf --first 2 --csoaa_ldf multiline --csoaa_rank"),
			"--first is not supported with --ccb_explore_adf"},
		{"ccb csoaa_ldf", withOptions(" --ccb_explore_adf --cb_explore_adf --cb_sample --cb_adf --csoaa_ldf mc --csoaa_rank"), "options not supported: --csoaa_ldf mc"},
		{"csoaa_ldf", withOptions(" --cb_explore_adf --cb_adf --csoaa_ldf m --csoaa_rank"), "options not supported: --csoaa_ldf m"},
		{"cb_type dm", withOptions(" --cb_explore_adf --cb_adf --cb_type dm"), `--cb_type "dm" is not supported`},
		{"no state", edit(func(b []byte) []byte { return b[:len(b)-10] }), "file is truncated"},
		{"weight index", append(bytes.Clone(good), 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), "weight index 9 is out of range for 2 bits"},
		{"partial weight", append(bytes.Clone(good), 1, 0, 0), "3 bytes of weights are not whole records"},
	}
	for _, tt := range tests {
		_, err := ReadVWModel(tt.b)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	if IsVWModel([]byte("PZBANDIT\x02\x00\x00\x00")) || IsVWModel(nil) {
		t.Error("IsVWModel accepts a file that is not VW's")
	}
}

// BenchmarkModelFile writes and reads the model vw -f wrote for the
// reference data's first 2,000 events (-b 18, every slot scanned) in
// VW's format and in this package's.
func BenchmarkModelFile(b *testing.B) {
	vwFile, err := os.ReadFile("../testdata/vw-models/cb_mtr_lr0.1_first2000.vw")
	if err != nil {
		b.Fatal(err)
	}
	m, err := ReadVWModel(vwFile)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	m.WriteTo(&buf)
	ours := bytes.Clone(buf.Bytes())
	b.Run("write/ours", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			m.WriteTo(&buf)
		}
	})
	b.Run("write/vw", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			m.WriteVW(&buf, nil)
		}
	})
	b.Run("read/ours", func(b *testing.B) {
		for b.Loop() {
			if _, err := ReadModel(bytes.NewReader(ours)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("read/vw", func(b *testing.B) {
		for b.Loop() {
			if _, err := ReadVWModel(vwFile); err != nil {
				b.Fatal(err)
			}
		}
	})
}
