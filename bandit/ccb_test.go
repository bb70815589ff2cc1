package bandit

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const ccbTestPolicy = "--ccb_explore_adf --epsilon 0.2 --power_t 0 -q :: -l 0.1"

func parseCCB(t *testing.T, line []byte) *Event {
	t.Helper()
	var e Event
	d := DSJSONParser{CCB: true}
	if err := d.Parse(line, &e); err != nil {
		t.Fatalf("parse %s: %v", line, err)
	}
	return &e
}

// slotFeatures returns, for each slot of e in training (later slots
// without the actions logged earlier), the features of each candidate
// and the candidate VW learns.
func slotFeatures(m *Model, e *Event) (feats [][][]HashedFeature, learned []int) {
	c := new(ccbScratch)
	c.exclude = make([]bool, e.n)
	c.ord = e.shared.indices(nil)
	for k := range e.nslots {
		m.slotEvent(e, e.slots[k], k, true, c)
		feats = append(feats, Features(&c.ev, m.policy))
		learned = append(learned, c.ev.label.chosen)
		c.exclude[e.slots[k].out.action] = true
	}
	return feats, learned
}

// sortedFeatures orders features by index then value, to compare VW's
// audit lists, which are sorted by |weight * value|.
func sortedFeatures(fs []HashedFeature) []HashedFeature {
	fs = slices.Clone(fs)
	slices.SortFunc(fs, func(a, b HashedFeature) int {
		if a.Index != b.Index {
			return int(a.Index) - int(b.Index)
		}
		return int(a.Value*1e6) - int(b.Value*1e6)
	})
	return fs
}

func auditAsFeatures(block []auditFeature) []HashedFeature {
	var out []HashedFeature
	for _, f := range block {
		out = append(out, HashedFeature{Index: f.index, Value: float32(f.value)})
	}
	return out
}

// TestAuditCCB reproduces VW's audit of the first two public multi-slot
// events: for every slot, every candidate's 182 features (slot features,
// the slot index, pairs and slot-index triples) and the learned action;
// and, after the first event is learned, the weights and adaptive sums
// VW prints for the second event's first slot.
func TestAuditCCB(t *testing.T) {
	t.Parallel()
	blocks := readAudit(t, "../testdata/vw-ccb/first2.audit.txt")
	lines := readLines(t, "../testdata/vw-ccb/first2.dsjson")
	m := NewModel(mustPolicy(t, ccbTestPolicy))
	m.ccbMulti = true
	var p Prediction
	b := 0
	for ev, line := range lines {
		e := parseCCB(t, line)
		feats, learned := slotFeatures(m, e)
		if ev == 1 {
			// VW sorts each list by |weight * value|: check the weights.
			for _, blk := range blocks[b : b+len(feats[0])+1] {
				for _, w := range blk {
					weight := strconv.FormatFloat(float64(m.w[4*w.index]), 'g', 6, 32)
					sumG := strconv.FormatFloat(float64(m.w[4*w.index+1]), 'g', 6, 32)
					if weight != w.weight || sumG != w.sumG {
						t.Fatalf("event 2 slot 0 %s: weight %s@%s, VW %s@%s", w.name, weight, sumG, w.weight, w.sumG)
					}
				}
			}
		}
		for k, cands := range feats {
			for a, fs := range append(cands, cands[learned[k]]) {
				what := "event " + strconv.Itoa(ev+1) + " slot " + strconv.Itoa(k) + " candidate " + strconv.Itoa(a)
				if len(fs) != 182 {
					t.Fatalf("%s: %d features, want 182", what, len(fs))
				}
				if ev == 0 && k == 0 {
					// All weights are 0: VW's order is the features' order.
					sameFeatures(t, what, fs, blocks[b])
				} else {
					got, want := sortedFeatures(fs), sortedFeatures(auditAsFeatures(blocks[b]))
					for i := range want {
						if got[i].Index != want[i].Index || !closeTo(float64(got[i].Value), float64(want[i].Value)) {
							t.Fatalf("%s: feature %d:%v, VW %d:%v", what, got[i].Index, got[i].Value, want[i].Index, want[i].Value)
						}
					}
				}
				b++
			}
		}
		if _, labeled := m.Learn(e, &p); !labeled {
			t.Fatalf("event %d not labelled", ev+1)
		}
	}
	if b != len(blocks) {
		t.Errorf("checked %d audit blocks of %d", b, len(blocks))
	}
	if m.mtr[0] != (mtrState{events: 6, actions: 42}) {
		t.Errorf("mtr counters %+v, want 6 events and 42 actions", m.mtr[0])
	}
}

// TestCCBTerms checks the interactions a multi-slot policy adds: every
// term with the slot index appended, and every namespace with it, in VW's
// order once the wildcards are expanded over A, S, U.
func TestCCBTerms(t *testing.T) {
	t.Parallel()
	var set nsSet
	for _, ns := range []byte("ASU") {
		set.add(ns)
	}
	var c termCache
	var got []string
	for _, tm := range c.compile(mustPolicy(t, ccbTestPolicy), set) {
		got = append(got, strings.ReplaceAll(string(tm.bytes()), "\x8c", "#"))
	}
	want := "AA AS AU A# SS SU S# UU U# AA# AS# AU# SS# SU# UU#"
	if strings.Join(got, " ") != want {
		t.Errorf("terms %s, want %s", strings.Join(got, " "), want)
	}
	// A slot's default namespace (139) is a wildcard value, after '~'.
	set.add(ccbSlotNamespace)
	got = got[:0]
	for _, tm := range c.compile(mustPolicy(t, "--ccb_explore_adf -q ::"), set) {
		if tm.n == 2 && tm.ns[1] == ccbSlotNamespace {
			got = append(got, string(tm.ns[:1]))
		}
	}
	if strings.Join(got, "") != "ASU\x8b" {
		t.Errorf("terms with namespace 139: %q", got)
	}
}

// TestCCBBuilder checks that an event built with AddSlot and its friends
// is the parsed one: same decisions, same learning.
func TestCCBBuilder(t *testing.T) {
	t.Parallel()
	line := []byte(`{"c":{"U":{"u":1.5,"seg":"x"},"_multi":[{"A":{"id":"a0","f":1}},{"A":{"id":"a1","f":-1}},{"A":{"id":"a2","f":0.5}}],` +
		`"_slots":[{"_id":"top","S":{"pos":"top"},"w":2},{"_id":"side","S":{"pos":"side"},"_inc":[0,2],"_tag":"seed=e1side"}]},` +
		`"_outcomes":[{"_label_cost":-1,"_a":[2,0,1],"_p":[0.5,0.25,0.25],"_id":"top","_o":[]},{"_id":"side"}]}`)
	parsed := parseCCB(t, line)
	var built Event
	u := built.Shared()
	u.Namespace("U")
	u.Number("u", 1.5)
	u.String("seg", "x")
	for i, f := range []float64{1, -1, 0.5} {
		a := built.AddAction()
		a.Namespace("A")
		a.String("id", "a"+strconv.Itoa(i))
		a.Number("f", f)
	}
	s := built.AddSlot()
	s.Namespace("S")
	s.String("pos", "top")
	s.Namespace("")
	s.Number("w", 2)
	s = built.AddSlot()
	s.Namespace("S")
	s.String("pos", "side")
	built.SetSlotInclude(1, []int{0, 2})
	built.SetSlotTag(1, "seed=e1side")
	built.SetSlotOutcome(0, 2, -1, 0.5)
	if built.NumSlots() != 2 || parsed.NumSlots() != 2 {
		t.Fatalf("%d and %d slots", built.NumSlots(), parsed.NumSlots())
	}
	if a, cost, prob, ok := parsed.SlotOutcome(0); a != 2 || cost != -1 || prob != 0.5 || !ok {
		t.Errorf("slot 0 outcome %d %v %v %v", a, cost, prob, ok)
	}
	if _, _, _, ok := parsed.SlotOutcome(1); ok {
		t.Error("slot 1 has an outcome")
	}
	pol := mustPolicy(t, ccbTestPolicy)
	m1, m2 := NewModel(pol), NewModel(pol)
	var p1, p2 Prediction
	for range 3 {
		l1, ok1 := m1.Learn(parsed, &p1)
		l2, ok2 := m2.Learn(&built, &p2)
		if l1 != l2 || ok1 != ok2 || !ok1 || slotsString(p1.Slots()) != slotsString(p2.Slots()) {
			t.Fatalf("parsed: %v %v %s; built: %v %v %s", l1, ok1, slotsString(p1.Slots()), l2, ok2, slotsString(p2.Slots()))
		}
	}
	// The first slot learned action 2 three times; the second may take 0 or
	// 2 and not 2, which the first took.
	if got := slotsString(p1.Slots()); !strings.HasPrefix(got, "2:") || !strings.Contains(got, "|0:1") {
		t.Errorf("decisions %s", got)
	}
	if !bytes.Equal(modelBytes(t, m1), modelBytes(t, m2)) {
		t.Error("the models differ")
	}
}

func slotsString(slots [][]ActionProb) string {
	var b strings.Builder
	for k, d := range slots {
		if k > 0 {
			b.WriteByte('|')
		}
		for i, ap := range d {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(ap.Action) + ":" + strconv.FormatFloat(float64(ap.Prob), 'g', -1, 32))
		}
	}
	return b.String()
}

func modelBytes(t *testing.T, m *Model) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCCBPredictReadsOnly checks that Predict of a multi-slot event does
// not change the model (its random state included), that unseeded slots
// then sample from the model's random state, and that the model file keeps
// the multi-slot state.
func TestCCBPredictReadsOnly(t *testing.T) {
	t.Parallel()
	lines := readLines(t, "../testdata/vw-ccb/first2.dsjson")
	m := NewModel(mustPolicy(t, ccbTestPolicy))
	var p Prediction
	m.Learn(parseCCB(t, lines[0]), &p)
	before := modelBytes(t, m)
	e := parseCCB(t, lines[1])
	m.Predict(e, &p)
	first := slotsString(p.Slots())
	m.Predict(e, &p)
	if got := slotsString(p.Slots()); got != first {
		t.Errorf("second prediction %s, first %s", got, first)
	}
	if !bytes.Equal(modelBytes(t, m), before) {
		t.Error("Predict changed the model")
	}
	// ModeTest samples every slot and advances the random state once per
	// slot: the model changes (not its weights).
	m2 := m.Clone()
	m2.Process(e, &p, ModeTest)
	if got := slotsString(p.Slots()); got != first {
		t.Errorf("ModeTest %s, Predict %s", got, first)
	}
	if m2.rand == m.rand {
		t.Error("ModeTest did not advance the random state")
	}
	r, err := ReadModel(bytes.NewReader(before))
	if err != nil {
		t.Fatal(err)
	}
	if !r.ccbMulti || !bytes.Equal(modelBytes(t, r), before) {
		t.Errorf("model file round trip: multi-slot state %v", r.ccbMulti)
	}
	if p.NumFeatures() != 182*(8+7+6) {
		t.Errorf("%d features, want %d", p.NumFeatures(), 182*21)
	}
}

// TestCCBSingleSlot checks VW's switch to the slot index: a single slot
// without features learns without it, until an event with two slots turns
// it on for good.
func TestCCBSingleSlot(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, ccbTestPolicy))
	var p Prediction
	one := parseCCB(t, []byte(`{"c":{"U":{"u":1},"_multi":[{"A":{"x":1}},{"A":{"y":1}}],"_slots":[{"_id":"only"}]},"_outcomes":[{"_label_cost":-1,"_a":0,"_p":0.5}]}`))
	m.Learn(one, &p)
	// A, U and the constant: 3 linear features, AA AU UU: 3 pairs.
	if m.ccbMulti || p.NumFeatures() != 2*6 {
		t.Errorf("single slot: multi %v, %d features", m.ccbMulti, p.NumFeatures())
	}
	two := parseCCB(t, []byte(`{"c":{"U":{"u":1},"_multi":[{"A":{"x":1}},{"A":{"y":1}}],"_slots":[{},{}]},"_outcomes":[{"_label_cost":-1,"_a":0,"_p":0.5}]}`))
	m.Learn(two, &p)
	m.Learn(one, &p)
	// Plus the slot index, A# U#, and AA# AU# UU#.
	if !m.ccbMulti || p.NumFeatures() != 2*(6+1+2+3) {
		t.Errorf("after two slots: multi %v, %d features", m.ccbMulti, p.NumFeatures())
	}
	// An event without slots is predicted as one slot, not learned.
	var cb Event
	cb.Shared().Namespace("U")
	cb.Shared().Number("u", 1)
	for _, f := range []string{"x", "y"} {
		a := cb.AddAction()
		a.Namespace("A")
		a.Number(f, 1)
	}
	cb.SetLabel(1, -1, 0.5)
	before := modelBytes(t, m)
	if _, labeled := m.Learn(&cb, &p); labeled || p.Slots() != nil || len(p.PMF()) != 2 || p.NumFeatures() != 2*12 ||
		p.PMF()[0].Prob+p.PMF()[1].Prob != 1 || !bytes.Equal(modelBytes(t, m), before) {
		t.Errorf("event without slots: labelled %v, slots %v, PMF %v, %d features", labeled, p.Slots(), p.PMF(), p.NumFeatures())
	}
	m = NewModel(mustPolicy(t, ccbTestPolicy+" --ccb_no_slot_index"))
	m.Learn(two, &p)
	if !m.ccbMulti || p.NumFeatures() != 2*6+1*6 {
		t.Errorf("--ccb_no_slot_index: %d features", p.NumFeatures())
	}
}

func TestSampleNormalized(t *testing.T) {
	t.Parallel()
	pmf := []ActionProb{{0, 0.5}, {1, -0.25}, {2, 0.5}, {3, 0.25}}
	// merand48(0) = 7.5e-6: the first entry with mass.
	if got := sampleNormalized(0, pmf); got != 0 {
		t.Errorf("seed 0 chose %d", got)
	}
	if want := []ActionProb{{0, 0.4}, {1, 0}, {2, 0.4}, {3, 0.2}}; !slices.Equal(pmf, want) {
		t.Errorf("normalized %v, want %v", pmf, want)
	}
	// merand48(2147483647) = 0.048357; with 0.999 the last entry.
	if got := sampleNormalized(2147483647, []ActionProb{{5, 0.01}, {6, 0.99}}); got != 1 {
		t.Errorf("chose %d, want 1", got)
	}
	zero := []ActionProb{{0, 0}, {1, 0}}
	if got := sampleNormalized(7, zero); got != 0 || zero[0].Prob != 1 {
		t.Errorf("all zero: chose %d, %v", got, zero)
	}
}

// TestParseCCB checks the multi-slot DSJson rules: errors for lines that
// cannot be multi-slot events, drops where VW drops.
func TestParseCCB(t *testing.T) {
	t.Parallel()
	c := `"c":{"_multi":[{"A":{"a":1}},{"A":{"b":1}}],"_slots":[{"_id":"x"},{"_id":"y"}]}`
	tests := []struct {
		name, line, want string
		skip             bool
	}{
		{"no outcomes", `{` + c + `}`, "no slot has an outcome", true},
		{"empty outcomes", `{` + c + `,"_outcomes":[{"_id":"x"},{}]}`, "no slot has an outcome", true},
		{"skipLearn", `{"_skipLearn":true,` + c + `,"_outcomes":[{"_label_cost":0,"_a":[0],"_p":[1]}]}`, "_skipLearn", true},
		{"no slots", `{"c":{"_multi":[{"A":{"a":1}}]},"_outcomes":[]}`, `"c" has no "_slots"`, false},
		{"empty slots", `{"c":{"_multi":[{"A":{"a":1}}],"_slots":[]}}`, `"c" has no "_slots"`, false},
		{"CB label", `{"_label_cost":1,"_label_probability":1,"_labelIndex":0,` + c + `,"_outcomes":[{"_label_cost":0,"_a":[0],"_p":[1]}]}`, "label single-slot events", false},
		{"slot not an object", `{"c":{"_multi":[{"A":{"a":1}}],"_slots":[1]}}`, "must be objects", false},
		{"outcome not an object", `{` + c + `,"_outcomes":[[0]]}`, "must be objects", false},
		{"outcome feature", `{` + c + `,"_outcomes":[{"x":1}]}`, `unexpected key "x"`, false},
		{"infinite cost", `{` + c + `,"_outcomes":[{"_label_cost":1e300,"_a":[0],"_p":[1]}]}`, "overflows", false},
		{"probability above 1", `{` + c + `,"_outcomes":[{"_label_cost":0,"_a":[0],"_p":[1.5]}]}`, "not in (0, 1]", false},
		{"outcomes twice", `{` + c + `,"_outcomes":[],"_outcomes":[]}`, "twice", false},
		{"slots twice", `{"c":{"_multi":[{"A":{"a":1}}],"_slots":[{}],"_slots":[{}]}}`, "twice", false},
		{"nested slots", `{"c":{"_multi":[{"A":{"a":1}}],"N":{"_slots":[{}]}}}`, "top of", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var e Event
			d := DSJSONParser{CCB: true}
			err := d.Parse([]byte(tt.line), &e)
			if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, ErrSkip) != tt.skip {
				t.Errorf("Parse = %v, want an error containing %q (skip %v)", err, tt.want, tt.skip)
			}
		})
	}
	// Scalars for "_a" and "_p", "_inc" beyond the actions, unknown "_"
	// keys in slots and outcomes.
	e := parseCCB(t, []byte(`{"c":{"_multi":[{"A":{"a":1}},{"A":{"b":1}}],"_slots":[{"_id":"x","_inc":[1,7],"_foo":{"z":1},"_tag":"seed=1"},{}]},`+
		`"_outcomes":[{"_label_cost":-1,"_a":1,"_p":0.25,"_o":[{"v":1}],"_original_label_cost":-1}],"EventId":"e","VWState":{"m":"x"}}`))
	if a, cost, prob, ok := e.SlotOutcome(0); a != 1 || cost != -1 || prob != 0.25 || !ok {
		t.Errorf("outcome %d %v %v %v", a, cost, prob, ok)
	}
	if s := e.slots[0]; !slices.Equal(s.inc, []int{1, 7}) || string(s.tag) != "seed=1" || len(s.x.groups) != 0 {
		t.Errorf("slot 0: inc %v tag %q groups %v", s.inc, s.tag, s.x.groups)
	}
}

func TestParsePolicyCCB(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, "--ccb_explore_adf --all_slots_loss --ccb_no_slot_index --cb_type dr")
	if !p.CCB() || !p.allSlotsLoss || !p.noSlotIndex || p.CBType() != "dr" || p.Epsilon() != 0.05 {
		t.Errorf("policy %+v", p)
	}
	for _, tt := range []struct{ args, want string }{
		{"--cb_explore_adf --all_slots_loss", "--all_slots_loss is only used with --ccb_explore_adf"},
		{"--cb_explore_adf --ccb_no_slot_index", "only used with --ccb_explore_adf"},
		{"--ccb_explore_adf --bag 3", "--bag is not supported with --ccb_explore_adf"},
		{"--ccb_explore_adf --softmax", "--softmax is not supported"},
		{"--ccb_explore_adf --interactions ABCDEFGHIJKLMNOP", "want 2 to 15 namespace characters"},
	} {
		if _, err := ParsePolicy(tt.args); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePolicy(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

// TestWildcardTermOrder checks the terms of --cubic ::: over A, S, U in
// VW's order and form, as its audit prints them: the term of three
// distinct namespaces is "USA".
func TestWildcardTermOrder(t *testing.T) {
	t.Parallel()
	var set nsSet
	for _, ns := range []byte("ASU") {
		set.add(ns)
	}
	var c termCache
	var got []string
	for _, tm := range c.compile(mustPolicy(t, "--cb_explore_adf --cubic :::"), set) {
		got = append(got, string(tm.bytes()))
	}
	if want := "AAA AAS ASS SSS AAU USA SSU AUU SUU UUU"; strings.Join(got, " ") != want {
		t.Errorf("terms %s, want %s", strings.Join(got, " "), want)
	}
}
