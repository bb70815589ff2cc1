package bandit

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Vowpal Wabbit 9.11.2 model files, as vw -f writes them and vw -i reads
// them for --cb_explore_adf and --ccb_explore_adf (VW saves the full
// resume state by default). The layout, little-endian, as VW's save_load
// functions write it:
//
//	version       uint32 length + "9.11.2\0"
//	header        uint32 length + model id + '\0', 'm', min and max label
//	              (float32), bits, lda, ngram and skip counts (uint32),
//	              uint32 length + the options VW keeps + '\0', then
//	              uint32 4 + the checksum: MurmurHash3 chained over every
//	              write of the header after the version
//	ccb state     --ccb_explore_adf: whether a multi-slot event was seen
//	              (1 byte), which turns the slot-index feature on
//	explore state --first: tau, --squarecb: counter (uint64)
//	cb_adf state  mtr's event and action sums (uint64 each; per model
//	              with --per_model_save_load)
//	gd state      resume flag (1 byte); initial_t (float32); the
//	              normalizer (float64, per model with
//	              --per_model_save_load); t, sum_loss,
//	              sum_loss_since_last_dump (float64); dump_interval, min
//	              and max label (float32); weighted labelled examples,
//	              labels, unlabelled examples (float64); example number
//	              and total features (uint64); total weight (float64, per
//	              model with --per_model_save_load); old weighted
//	              labelled examples (float64); current pass (uint64); l1
//	              and l2 state (float64)
//	weights       per weight slot in use, in slot order: uint32 slot, the
//	              weight, then the adaptive sum and/or the normalizer if
//	              the update keeps them (float32)
const (
	vwVersion = "9.11.2"
	// vwVersionMajor is the major version whose files have this layout
	// for the cb reductions: 9.0.0 added the last field (the l1 and l2
	// state), and the 9.x releases changed nothing of it since.
	vwVersionMajor = 9
)

// VWStats are the counters a VW model file carries besides the learning
// state: VW's progress counters (its shared_data), which it resets when
// it loads a model to learn on or to test with, so they change nothing
// learned or predicted. The zero value is what a model that learned
// nothing since it was created or loaded has.
type VWStats struct {
	SumLoss            float64 // sum of the events' losses
	SumLossSinceDump   float64 // since the last progress row VW printed
	DumpInterval       float32 // the weight at which VW prints the next progress row; 0 means 1
	WeightedLabeled    float64 // weight of the labelled events
	WeightedUnlabeled  float64 // weight of the unlabelled events
	OldWeightedLabeled float64 // WeightedLabeled at the last progress row
	Examples           uint64  // events counted
	TotalFeatures      uint64  // features of the events counted
	Passes             uint64  // passes completed
}

// IsVWModel reports whether b starts like a VW 9.x model file: the
// length-prefixed, NUL-terminated version string.
func IsVWModel(b []byte) bool {
	_, ok := vwFileVersion(b)
	return ok
}

// vwFileVersion returns the version string at the start of b.
func vwFileVersion(b []byte) (string, bool) {
	if len(b) < 4 {
		return "", false
	}
	n := binary.LittleEndian.Uint32(b)
	if n < 2 || n > 32 || uint64(len(b)) < 4+uint64(n) || b[3+n] != 0 {
		return "", false
	}
	v := string(b[4 : 3+n])
	for _, c := range []byte(v) {
		if (c < '0' || c > '9') && c != '.' {
			return "", false
		}
	}
	major, _, ok := strings.Cut(v, ".")
	return v, ok && major != ""
}

// vwOption is one option VW keeps in a model file: its long name and its
// value ("" for a flag).
type vwOption struct{ name, value string }

// vwKept lists the policy options VW 9.11.2 writes into a model file's
// options, and how it formats their values: a float option as a float32
// widened to double and printed with 15 significant digits. Options not
// listed are not kept: --bit_precision and --id have their own header
// fields, --initial_t is in gd's state, --random_seed becomes VW's random
// state, and VW does not store --l1 and --l2 at all, nor ccb's
// --all_slots_loss and --ccb_no_slot_index.
var vwKept = map[string]byte{
	"cb_explore_adf": 'b', "cb_adf": 'b', "cb_type": 's', "epsilon": 'f', "first_only": 'b', "first": 'u',
	"softmax": 'b', "lambda": 'f', "squarecb": 'b', "gamma_scale": 'f', "gamma_exponent": 'f',
	"bag": 'u', "greedify": 'b', "learning_rate": 'f', "power_t": 'f', "sgd": 'b', "adaptive": 'b',
	"normalized": 'b', "invariant": 'b', "hash": 's', "noconstant": 'b', "quadratic": 's', "cubic": 's',
	"interactions": 's', "per_model_save_load": 'b', "ccb_explore_adf": 'b',
}

// vwImplied returns the options VW keeps that a policy implies:
// --cb_explore_adf stacks cb_adf on csoaa_ldf in multiline rank mode, and
// --ccb_explore_adf (ccb) adds cb_explore_adf and cb_sample on top.
func vwImplied(ccb bool) []vwOption {
	opts := []vwOption{{"cb_adf", ""}, {"csoaa_ldf", "multiline"}, {"csoaa_rank", ""}}
	if ccb {
		opts = append(opts, vwOption{"cb_explore_adf", ""}, vwOption{"cb_sample", ""})
	}
	return opts
}

// policyOptions returns the options of p's command line by long name, in
// the order given, as VW reads them: an option given twice counts once
// (the first value), except the repeatable ones.
func (p *Policy) policyOptions() []vwOption {
	var out []vwOption
	seen := map[string]bool{}
	fields := strings.Fields(p.args)
	for i := 0; i < len(fields); i++ {
		name, value, hasValue := splitOption(fields[i])
		if long, ok := shortNames[name]; ok {
			name = long
		}
		opt := options[name] // ParsePolicy accepted every name
		if opt.value && !hasValue && i+1 < len(fields) {
			i++
			value = fields[i]
		}
		if seen[name] && !opt.repeatable {
			continue
		}
		seen[name] = true
		out = append(out, vwOption{name, value})
	}
	return out
}

// vwOptions returns the options string VW writes into a model file of
// m: its kept options and those the policy implies, once each, sorted by
// name (the values of a repeated option in the order given), the
// namespaces of --ignore and --ignore_linear merged, then VW's random
// state if it is not 0. It starts with a space, as VW's.
func (m *Model) vwOptions() string {
	var kept []vwOption
	ignore := map[string]map[byte]bool{"ignore": {}, "ignore_linear": {}}
	for _, o := range m.policy.policyOptions() {
		if set, ok := ignore[o.name]; ok {
			for _, c := range []byte(decodeInlineHex(o.value)) {
				set[c] = true
			}
			continue
		}
		kind, ok := vwKept[o.name]
		if !ok {
			continue
		}
		switch kind {
		case 'f':
			f, _ := strconv.ParseFloat(o.value, 32)
			o.value = strconv.FormatFloat(float64(float32(f)), 'g', 15, 64)
		case 'u':
			n, _ := strconv.ParseUint(o.value, 10, 64)
			o.value = strconv.FormatUint(n, 10)
		}
		kept = append(kept, o)
	}
	// VW always keeps cb_type.
	for _, o := range append(vwImplied(m.policy.ccb), vwOption{"cb_type", m.policy.cbType}) {
		if !slices.ContainsFunc(kept, func(k vwOption) bool { return k.name == o.name }) {
			kept = append(kept, o)
		}
	}
	slices.SortStableFunc(kept, func(a, b vwOption) int { return strings.Compare(a.name, b.name) })
	var b strings.Builder
	for _, o := range kept {
		b.WriteString(" --" + o.name)
		if o.value != "" || vwKept[o.name] == 's' {
			b.WriteString(" " + o.value)
		}
	}
	for _, name := range []string{"ignore", "ignore_linear"} {
		if set := ignore[name]; len(set) > 0 {
			var ns []byte
			for c := range set {
				ns = append(ns, c)
			}
			// VW sorts them as C chars, signed.
			slices.SortFunc(ns, func(a, b byte) int { return int(int8(a)) - int(int8(b)) })
			b.WriteString(" --" + name + " " + string(ns))
		}
	}
	if m.rand != 0 {
		b.WriteString(" --random_seed " + strconv.FormatUint(m.rand, 10))
	}
	return b.String()
}

// vwID returns the --id of m's policy, which VW stores in the header.
func (p *Policy) vwID() string {
	for _, o := range p.policyOptions() {
		if o.name == "id" {
			return o.value
		}
	}
	return ""
}

// vwWriter writes VW's binary fields, hashing them while hashing is on
// as VW's io_buf does: each write extends the checksum.
type vwWriter struct {
	w       *bufio.Writer
	hash    bool
	sum     uint32
	scratch [8]byte
}

func (v *vwWriter) raw(b []byte) {
	if len(b) == 0 {
		return
	}
	v.w.Write(b)
	if v.hash {
		v.sum = murmur3(b, v.sum)
	}
}

// sized writes b with its length first, as VW's bin_write: two writes.
func (v *vwWriter) sized(b []byte) {
	v.u32(uint32(len(b)))
	v.raw(b)
}

func (v *vwWriter) u32(x uint32)  { v.raw(binary.LittleEndian.AppendUint32(v.scratch[:0], x)) }
func (v *vwWriter) u64(x uint64)  { v.raw(binary.LittleEndian.AppendUint64(v.scratch[:0], x)) }
func (v *vwWriter) f32(x float32) { v.u32(math.Float32bits(x)) }
func (v *vwWriter) f64(x float64) { v.u64(math.Float64bits(x)) }

// WriteVW writes m as a VW 9.11.2 model file, which vw -i reads to
// predict (-t) exactly as m does and to learn on exactly as m would; st
// holds VW's progress counters (nil: all zero). Like VW, the file keeps
// the normalizer sums and mtr counts of the first model only unless the
// policy has --per_model_save_load (dr's cost model and --bag's other
// models then restart theirs), and it does not store --l1 and --l2. It
// only reads m, so it may run concurrently with [Model.Predict].
func (m *Model) WriteVW(w io.Writer, st *VWStats) error {
	if st == nil {
		st = &VWStats{}
	}
	pol := m.policy
	v := &vwWriter{w: bufio.NewWriterSize(w, 1<<16)}
	v.sized(append([]byte(vwVersion), 0))
	v.hash = true
	v.sized(append([]byte(pol.vwID()), 0))
	v.raw([]byte{'m'})
	v.f32(m.minLabel)
	v.f32(m.maxLabel)
	v.u32(uint32(pol.bits))
	v.u32(0) // lda
	v.u32(0) // ngrams
	v.u32(0) // skips
	v.sized(append([]byte(m.vwOptions()), 0))
	v.sized(binary.LittleEndian.AppendUint32(nil, v.sum))
	v.hash = false

	if pol.ccb {
		var seen byte
		if m.ccbMulti {
			seen = 1
		}
		v.raw([]byte{seen})
	}
	switch pol.explore {
	case exploreFirst:
		v.u64(m.tau)
	case exploreSquareCB:
		v.u64(m.counter)
	}
	perModel := pol.perModelSaveLoad
	for i, s := range m.mtr {
		if i > 0 && !perModel {
			break
		}
		v.u64(s.events)
		v.u64(s.actions)
	}
	v.raw([]byte{1}) // save_resume
	v.f32(pol.initialT)
	for i, s := range m.gd {
		if i > 0 && !perModel {
			break
		}
		v.f64(s.normSumNormX)
	}
	dump := st.DumpInterval
	if dump == 0 {
		dump = 1
	}
	v.f64(m.t)
	v.f64(st.SumLoss)
	v.f64(st.SumLossSinceDump)
	v.f32(dump)
	v.f32(m.minLabel)
	v.f32(m.maxLabel)
	v.f64(st.WeightedLabeled)
	v.f64(0) // weighted labels: a bandit label has none
	v.f64(st.WeightedUnlabeled)
	v.u64(st.Examples)
	v.u64(st.TotalFeatures)
	for i, s := range m.gd {
		if i > 0 && !perModel {
			break
		}
		v.f64(s.totalWeight)
	}
	v.f64(st.OldWeightedLabeled)
	v.u64(st.Passes)
	v.f64(m.gravity)
	v.f64(m.contraction)

	// The floats VW keeps per weight: ours are always [w, G, N, rate].
	keep := []int{0}
	if pol.adaptive {
		keep = append(keep, 1)
	}
	if pol.normalized {
		keep = append(keep, 2)
	}
	rec := make([]byte, 4+4*len(keep))
	for slot := 0; slot < len(m.w); slot += 4 {
		s := m.w[slot : slot+4]
		used := false
		for _, k := range keep {
			used = used || s[k] != 0
		}
		if !used {
			continue
		}
		binary.LittleEndian.PutUint32(rec, uint32(slot/4))
		for j, k := range keep {
			binary.LittleEndian.PutUint32(rec[4+4*j:], math.Float32bits(s[k]))
		}
		v.w.Write(rec)
	}
	return v.w.Flush()
}

// vwHeader is what a VW model file's header says.
type vwHeader struct {
	version            string
	id                 string
	minLabel, maxLabel float32
	bits               uint32
	options            string
}

// readVWHeader reads and checks the header of a VW model file, leaving d
// at the first reduction's state.
func readVWHeader(b []byte) (*vwHeader, *vwReader, error) {
	version, ok := vwFileVersion(b)
	if !ok {
		return nil, nil, errors.New("not a VW model file")
	}
	major, _ := strconv.Atoi(version[:strings.IndexByte(version, '.')])
	if major != vwVersionMajor {
		return nil, nil, fmt.Errorf("VW model file version %s: only version %d.x files are read (written by VW %s)", version, vwVersionMajor, vwVersion)
	}
	d := &vwReader{decoder: decoder{b: b[4+len(version)+1:]}, hash: true}
	h := &vwHeader{version: version}
	h.id = d.cstring(d.u32())
	if m := d.bytes(1); d.err == nil && m[0] != 'm' {
		return nil, nil, errors.New("VW model file: the header has no model marker")
	}
	h.minLabel = math.Float32frombits(d.u32())
	h.maxLabel = math.Float32frombits(d.u32())
	h.bits = d.u32()
	if lda := d.u32(); d.err == nil && lda != 0 {
		return nil, nil, errors.New("VW model file: --lda models are not supported")
	}
	if n := d.u32(); d.err == nil && n != 0 {
		return nil, nil, errors.New("VW model file: --ngram is not supported")
	}
	if n := d.u32(); d.err == nil && n != 0 {
		return nil, nil, errors.New("VW model file: --skips is not supported")
	}
	h.options = d.cstring(d.u32())
	sum := d.sum
	d.hash = false
	if n := d.u32(); d.err == nil && n != 4 {
		d.err = fmt.Errorf("checksum field of %d bytes", n)
	}
	if got := d.u32(); d.err == nil && got != sum {
		return nil, nil, fmt.Errorf("VW model file: header checksum %d, the header hashes to %d: the file is corrupted", got, sum)
	}
	if d.err != nil {
		return nil, nil, fmt.Errorf("VW model file: header: %w", d.err)
	}
	return h, d, nil
}

// vwReader is a decoder that hashes what it reads while hash is on, as
// VW checks a header.
type vwReader struct {
	decoder
	hash bool
	sum  uint32
}

func (d *vwReader) bytes(n int) []byte {
	v := d.decoder.bytes(n)
	if d.hash && len(v) > 0 {
		d.sum = murmur3(v, d.sum)
	}
	return v
}

func (d *vwReader) u32() uint32 {
	if v := d.bytes(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *vwReader) u64() uint64 {
	if v := d.bytes(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (d *vwReader) f32() float32 { return math.Float32frombits(d.u32()) }
func (d *vwReader) f64() float64 { return math.Float64frombits(d.u64()) }

// cstring reads a string field of n bytes that VW ends with a NUL.
func (d *vwReader) cstring(n uint32) string {
	if d.err == nil && n > uint32(len(d.b)) {
		d.err = errors.New("file is truncated")
	}
	s := d.bytes(int(n))
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return string(s)
}

// vwPolicy turns the options of a VW model file's header into a policy:
// the options VW keeps for --cb_explore_adf or --ccb_explore_adf, less
// those the policy implies, with the bits, the id and gd's initial_t.
// Options this package does not implement are an error that names every
// one of them.
func vwPolicy(h *vwHeader, initialT float32) (*Policy, error) {
	fields := strings.Fields(h.options)
	var args, unsupported []string
	implied := map[string]string{}
	for _, o := range vwImplied(slices.Contains(fields, "--ccb_explore_adf")) {
		implied[o.name] = o.value
	}
	for i := 0; i < len(fields); i++ {
		name, value, hasValue := splitOption(fields[i])
		opt, ok := options[name]
		if iv, imp := implied[name]; imp {
			if iv != "" && !hasValue && i+1 < len(fields) {
				i++
				value = fields[i]
			}
			if value != iv {
				unsupported = append(unsupported, strings.TrimSpace("--"+name+" "+value))
			}
			continue
		}
		if !ok || !strings.HasPrefix(fields[i], "--") {
			u := fields[i]
			if i+1 < len(fields) && !strings.HasPrefix(fields[i+1], "--") {
				i++ // its value
				u += " " + fields[i]
			}
			unsupported = append(unsupported, u)
			continue
		}
		if opt.value && !hasValue && i+1 < len(fields) {
			i++
			value = fields[i]
		}
		if kind := vwKept[name]; kind == 'f' {
			// VW writes float32 values at double precision: the shortest
			// form of the float32 reads back the same.
			if f, err := strconv.ParseFloat(value, 32); err == nil {
				value = strconv.FormatFloat(f, 'g', -1, 32)
			}
		}
		if opt.value {
			args = append(args, "--"+name, value)
		} else {
			args = append(args, "--"+name)
		}
	}
	if len(unsupported) > 0 {
		return nil, fmt.Errorf("VW model file: options not supported: %s (supported: --cb_explore_adf or --ccb_explore_adf with --cb_type mtr, ips or dr and the exploration and update options of the learning policy)", strings.Join(unsupported, ", "))
	}
	if h.bits != 18 {
		args = append(args, "-b", strconv.FormatUint(uint64(h.bits), 10))
	}
	if initialT != 0 {
		args = append(args, "--initial_t", strconv.FormatFloat(float64(initialT), 'g', -1, 32))
	}
	if h.id != "" {
		args = append(args, "--id", h.id)
	}
	pol, err := ParsePolicy(strings.Join(args, " "))
	if err != nil {
		return nil, fmt.Errorf("VW model file: %w", err)
	}
	return pol, nil
}

// ReadVWModelPolicy returns the policy of the VW model file b (without
// gd's --initial_t), reading only its header, so that what the model would take
// ([Policy.WeightBytes]) can be bounded before [ReadVWModel] allocates it.
func ReadVWModelPolicy(b []byte) (*Policy, error) {
	h, _, err := readVWHeader(b)
	if err != nil {
		return nil, err
	}
	return vwPolicy(h, 0)
}

// ReadVWModel reads a VW 9.x model file written by vw -f for
// --cb_explore_adf or --ccb_explore_adf with a policy this package
// implements, so that the model predicts and goes on learning exactly as
// vw -i FILE does: VW's progress counters restart, as VW restarts them,
// and a file saved without its learning state (--predict_only_model)
// starts it afresh.
func ReadVWModel(b []byte) (*Model, error) {
	h, d, err := readVWHeader(b)
	if err != nil {
		return nil, err
	}
	// The policy decides which reductions' state follows; parse it without
	// initial_t first (it changes no layout) and again once gd's state has
	// given it.
	pol, err := vwPolicy(h, 0)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Model, error) { return nil, fmt.Errorf("VW model file: %w", err) }
	var multi bool // ccb's state
	if pol.ccb {
		if b := d.bytes(1); b != nil {
			multi = b[0] != 0
		}
	}
	var tau, counter uint64
	switch pol.explore {
	case exploreFirst:
		tau = d.u64()
	case exploreSquareCB:
		counter = d.u64()
	}
	n := 1
	if pol.perModelSaveLoad {
		n = pol.bag // cb_adf keeps one mtr state per --bag model
	}
	mtr := make([]mtrState, n)
	for i := range mtr {
		mtr[i] = mtrState{events: d.u64(), actions: d.u64()}
	}
	resume := d.bytes(1)
	if d.err != nil {
		return fail(d.err)
	}
	if resume[0] == 0 {
		// Saved without the learning state (--predict_only_model): the
		// weights alone. VW starts the rest afresh, as for a new model,
		// with the header's label range.
		m := NewModel(pol)
		m.tau, m.counter, m.ccbMulti = tau, counter, multi
		copy(m.mtr, mtr)
		m.minLabel, m.maxLabel = h.minLabel, h.maxLabel
		if err := readVWWeights(m, d.b, []int{0}); err != nil {
			return fail(err)
		}
		return m, nil
	}
	initialT := d.f32()
	if d.err != nil {
		return fail(d.err)
	}
	if initialT != pol.initialT {
		if pol, err = vwPolicy(h, initialT); err != nil {
			return nil, err
		}
	}
	m := shape(pol)
	m.tau, m.counter, m.ccbMulti = tau, counter, multi
	copy(m.mtr, mtr)
	gdN := 1
	if pol.perModelSaveLoad {
		gdN = len(m.gd)
	}
	clear(m.gd) // VW restarts the models whose sums it did not save
	for i := range gdN {
		m.gd[i].normSumNormX = d.f64()
	}
	m.t = d.f64()
	d.f64() // sum_loss
	d.f64() // sum_loss_since_last_dump
	d.f32() // dump_interval
	m.minLabel, m.maxLabel = d.f32(), d.f32()
	d.f64() // weighted labelled examples
	d.f64() // weighted labels
	d.f64() // weighted unlabelled examples
	d.u64() // example number
	d.u64() // total features
	for i := range gdN {
		m.gd[i].totalWeight = d.f64()
	}
	d.f64() // old weighted labelled examples
	d.u64() // current pass
	m.gravity, m.contraction = d.f64(), d.f64()
	if d.err != nil {
		return fail(d.err)
	}
	if m.minLabel != h.minLabel || m.maxLabel != h.maxLabel {
		return fail(fmt.Errorf("the label range [%v, %v] of the header differs from gd's [%v, %v]", h.minLabel, h.maxLabel, m.minLabel, m.maxLabel))
	}

	m.w = make([]float32, 4<<pol.bits)
	if pol.initialT > 0 && pol.adaptive {
		// VW starts every weight's adaptive sum at initial_t before it
		// reads the saved ones.
		for i := 1; i < len(m.w); i += 4 {
			m.w[i] = pol.initialT
		}
	}
	keep := []int{0}
	if pol.adaptive {
		keep = append(keep, 1)
	}
	if pol.normalized {
		keep = append(keep, 2)
	}
	if err := readVWWeights(m, d.b, keep); err != nil {
		return fail(err)
	}
	return m, nil
}

// readVWWeights reads the weight records of a VW model file into m's
// allocated weights: each a uint32 slot, then the floats keep says (0 the
// weight, 1 the adaptive sum, 2 the normalizer).
func readVWWeights(m *Model, rest []byte, keep []int) error {
	size := 4 + 4*len(keep)
	if len(rest)%size != 0 {
		return fmt.Errorf("%d bytes of weights are not whole records of %d bytes", len(rest), size)
	}
	bits := m.policy.bits
	for ; len(rest) > 0; rest = rest[size:] {
		slot := binary.LittleEndian.Uint32(rest)
		if uint64(slot) >= 1<<bits {
			return fmt.Errorf("weight index %d is out of range for %d bits", slot, bits)
		}
		s := m.w[4*uint64(slot) : 4*uint64(slot)+4]
		for j, k := range keep {
			s[k] = math.Float32frombits(binary.LittleEndian.Uint32(rest[4+4*j:]))
		}
		s[3] = 0 // the rate is recomputed at the next update
	}
	return nil
}

// ReadAnyModel reads a model file in either format it detects by its
// header: this package's ([Model.WriteTo]) or VW's ([ReadVWModel]).
func ReadAnyModel(b []byte) (*Model, error) {
	if IsVWModel(b) {
		return ReadVWModel(b)
	}
	return ReadModel(bytes.NewReader(b))
}

// ReadAnyModelPolicy is [ReadModelPolicy] or [ReadVWModelPolicy], by the
// file's header.
func ReadAnyModelPolicy(b []byte) (*Policy, error) {
	if IsVWModel(b) {
		return ReadVWModelPolicy(b)
	}
	return ReadModelPolicy(b)
}
