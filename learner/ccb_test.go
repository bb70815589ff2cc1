package learner

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The multi-slot reference runs of VW 9.11.2 (testdata/vw-ccb/README.md).
const (
	ccbDir    = "../testdata/vw-ccb/"
	ccbPolicy = "--ccb_explore_adf --epsilon 0.2 --power_t 0 -q :: --dsjson"
)

// trainCCB trains on data with policy and returns the summary, VW's output
// on stderr and the -p file.
func trainCCB(t *testing.T, cfg TrainConfig) (Summary, string, []byte) {
	t.Helper()
	cfg.Preds = filepath.Join(t.TempDir(), "pred")
	var stderr bytes.Buffer
	s, err := Train(context.Background(), cfg, io.Discard, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(cfg.Preds)
	if err != nil {
		t.Fatal(err)
	}
	return s, stderr.String(), got
}

// TestTrainCCBMatchesVW replays VW's --ccb_explore_adf runs on the public
// multi-slot set: the average loss (first slot, or all with
// --all_slots_loss) and every slot's -p line, byte for byte.
func TestTrainCCBMatchesVW(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cbType, lr     string
		loss, allSlots string
	}{
		{"mtr", "0.001", "-0.554600", "-1.258200"},
		{"mtr", "0.1", "-0.673000", "-1.650467"},
		{"ips", "0.1", "-0.613267", "-1.541800"},
		{"dr", "0.1", "-0.609000", "-1.533133"},
	}
	want := map[string][]byte{}
	for _, tt := range tests {
		want[tt.cbType+tt.lr] = gunzipFile(t, ccbDir+"public_"+tt.cbType+"_lr"+tt.lr+".pred.gz")
	}
	for _, tt := range tests {
		for _, all := range []bool{false, true} {
			name, policy, loss := tt.cbType+"_"+tt.lr, ccbPolicy+" -l "+tt.lr, tt.loss
			if tt.cbType != "mtr" {
				policy += " --cb_type " + tt.cbType
			}
			if all {
				name, policy, loss = name+"_all_slots_loss", policy+" --all_slots_loss", tt.allSlots
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				s, stderr, got := trainCCB(t, TrainConfig{Data: ccbDir + "ccb_public.dsjson.gz", Policy: policy})
				if got := strconv.FormatFloat(s.AverageLoss, 'f', 6, 64); got != loss {
					t.Errorf("average loss %s, VW %s", got, loss)
				}
				for _, line := range []string{"number of examples = 3000", "average loss = " + loss} {
					if !strings.Contains(stderr, "\n"+line+"\n") {
						t.Errorf("summary lacks %q:\n%s", line, stderr)
					}
				}
				if s.Examples != 3000 || s.Labeled != 3000 || s.Dropped != 0 || s.Malformed != 0 {
					t.Errorf("summary %+v", s.Counts)
				}
				// --all_slots_loss changes only the loss.
				if w := want[tt.cbType+tt.lr]; !bytes.Equal(got, w) {
					t.Errorf("predictions differ from VW's at %s", firstDiff(got, w))
				}
			})
		}
	}
}

// firstDiff describes where two -p outputs first differ: the event (blank
// line separated) and both lines.
func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n\n"), strings.Split(string(want), "\n\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return "event " + strconv.Itoa(i) + ":\n" + g[i] + "\nVW:\n" + w[i]
		}
	}
	return strconv.Itoa(len(g)-1) + " events, VW " + strconv.Itoa(len(w)-1)
}

// TestTrainCCBTiny replays VW's small cases: "_inc" restricting a slot
// (also to one candidate, and without the logged action: the slot is then
// unlabelled and sampled), "_skipLearn" and outcome-less events dropped
// without a trace, and a partially labelled event, whose unlabelled slots
// sample from the model's random state. The progress table is VW's.
func TestTrainCCBTiny(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		loss           string
		dropped        int
		progress, warn []string
	}{
		{"tiny_inc", "-0.400000", 0, []string{
			"-1.00000 -1.00000            1            1.0  1:-1,0:-1,...          1,0,7     3276",
			"-0.60000 -0.20000            2            2.0   6:-1,4:0,...          6,4,0     2912",
		}, nil},
		{"tiny_skip", "-0.333333", 2, []string{
			"-1.00000 -1.00000            1            1.0  1:-1,0:-1,...          1,0,7     3822",
			"-0.50000 0.000000            2            2.0    3:0,2:0,...          3,2,1     3822",
		}, []string{"warning: line 5: Unlabeled example in train set, was this intentional?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, stderr, got := trainCCB(t, TrainConfig{Data: ccbDir + tt.name + ".dsjson", Policy: ccbPolicy + " -l 0.1"})
			want, err := os.ReadFile(ccbDir + tt.name + ".pred")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("predictions differ from VW's at %s", firstDiff(got, want))
			}
			if got := strconv.FormatFloat(s.AverageLoss, 'f', 6, 64); got != tt.loss {
				t.Errorf("average loss %s, VW %s", got, tt.loss)
			}
			if s.Examples != 3 || s.Dropped != tt.dropped || s.Malformed != 0 {
				t.Errorf("summary %+v", s.Counts)
			}
			for _, line := range append(tt.progress, tt.warn...) {
				if !strings.Contains(stderr, "\n"+line+"\n") {
					t.Errorf("output lacks %q:\n%s", line, stderr)
				}
			}
		})
	}
}

// TestRankCCBMatchesVW ranks with a trained model as VW's -t does with
// Personalizer's per-slot seeds ("seed=<EventId><slot id>"): every slot's
// sampled action and PMF is VW's. The model goes through a model file.
func TestRankCCBMatchesVW(t *testing.T) {
	t.Parallel()
	final := filepath.Join(t.TempDir(), "model")
	if _, err := Train(context.Background(), TrainConfig{Data: ccbDir + "ccb_public.dsjson.gz", Policy: ccbPolicy + " -l 0.1", Final: final, Quiet: true}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	m := readModelFile(t, final)
	_, _, got := trainCCB(t, TrainConfig{Data: ccbDir + "rank_first50.dsjson", Init: m, Test: true, Quiet: true})
	want, err := os.ReadFile(ccbDir + "rank_first50.pred")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("predictions differ from VW's at %s", firstDiff(got, want))
	}
}

// TestTrainCCBInvertHash checks --invert_hash against VW's after the
// public set (mtr, -l 0.1): every weight in use, its name (slot features
// and slot-index triples included), value, adaptive sum and normalizer.
func TestTrainCCBInvertHash(t *testing.T) {
	t.Parallel()
	inv := filepath.Join(t.TempDir(), "inv")
	cfg := TrainConfig{Data: ccbDir + "ccb_public.dsjson.gz", Policy: ccbPolicy + " -l 0.1", InvertHash: inv, Quiet: true}
	if _, err := Train(context.Background(), cfg, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	weights := func(path string) []string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, after, ok := strings.Cut(string(b), "\nl2_state ")
		if !ok {
			t.Fatalf("%s has no l2_state line", path)
		}
		lines := strings.Split(strings.TrimSpace(after), "\n")[1:]
		slices.Sort(lines)
		return lines
	}
	got, want := weights(inv), weights(ccbDir+"public_mtr_lr0.1.invert_hash.txt")
	if len(want) != 1012 || !slices.Equal(got, want) {
		t.Errorf("%d weight lines, VW %d (1012); first: %q, VW %q", len(got), len(want), got[:min(3, len(got))], want[:3])
	}
}

// TestTrainCCBErrors checks that bad multi-slot input is skipped with a
// warning that says what is wrong, and that a multi-slot policy makes one
// pass.
func TestTrainCCBErrors(t *testing.T) {
	t.Parallel()
	c := `"c":{"_multi":[{"A":{"x":1}},{"A":{"y":1}}],"_slots":[{"_id":"s0"},{"_id":"s1"}]}`
	out := `"_outcomes":[{"_label_cost":-1,"_a":[1],"_p":[0.5]}]`
	lines := []string{
		`{` + c + `,` + out + `}`, // fine
		`{"_label_cost":-1,"_label_probability":0.5,"_labelIndex":0,"a":[1],"c":{"_multi":[{"A":{"x":1}}]}}`,
		`{` + c + `,"_outcomes":[{"_label_cost":-1,"_a":[1,0],"_p":[0.5]}]}`,
		`{` + c + `,"_outcomes":[{"_a":[1],"_p":[0.5]}]}`,
		`{` + c + `,"_outcomes":[{"_label_cost":-1,"_a":[1],"_p":[0]}]}`,
		`{` + c + `,"_outcomes":[{},{},{}]}`,
		`{"c":{"_multi":[{"A":{"x":1}}],"_slots":[{},{}]},` + out + `}`,
		`{` + out + `,` + c + `}`,
		`{` + c + `,"_outcomes":[{"_label_cost":-1,"_a":"x","_p":[0.5]}]}`,
	}
	data := filepath.Join(t.TempDir(), "bad.dsjson")
	if err := os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, stderr, got := trainCCB(t, TrainConfig{Data: data, Policy: ccbPolicy})
	if s.Examples != 1 || s.Malformed != 8 {
		t.Errorf("summary %+v", s.Counts)
	}
	for _, want := range []string{
		`line 2 skipped: "c" has no "_slots"`,
		`line 3 skipped: offset 136: outcome 0: "_a" has 2 actions but "_p" 1 probabilities`,
		`line 4 skipped: offset 117: outcome 0 has no "_label_cost"`,
		`line 5 skipped: offset 132: outcome 0: probability 0 is not in (0, 1]`,
		`line 6 skipped: offset 102: "_outcomes" has more entries than the 2 slots`,
		`line 7 skipped: 2 slots but only 1 actions: every slot needs its own action`,
		`line 8 skipped: offset 13: "_outcomes" must come after "c"`,
		`line 9 skipped: offset 119: expected an unsigned integer`,
	} {
		if !strings.Contains(stderr, "warning: "+want) {
			t.Errorf("output lacks %q:\n%s", want, stderr)
		}
	}
	if want := "1:0.5,0:0.5\n0:1\n\n"; string(got) != want {
		t.Errorf("predictions %q, want %q", got, want)
	}
	_, err := Train(context.Background(), TrainConfig{Data: data, Policy: ccbPolicy, Passes: 2}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "one pass") {
		t.Errorf("two passes: error %v", err)
	}
}

// TestTrainCCBVariants replays VW on a variant of the public set that
// exercises the rest of the slot rules: the first slot's features at its
// top level (VW's slot namespace 139), a namespace only some slots have,
// every fifth event's first slot unlabelled (sampled from the model's
// random state), every seventh event's third slot limited by "_inc"; with
// quadratic and cubic wildcard interactions, with and without the slot
// index, and dr with --hash all.
func TestTrainCCBVariants(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, args, loss string }{
		{"q", "-q ::", "-0.476667"},
		{"cubic_noindex", "--cubic ::: --ccb_no_slot_index", "-0.464667"},
		{"cubic", "--cubic :::", "-0.428667"},
		{"dr_hashall", "-q :: --cb_type dr --hash all", "-0.464667"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			policy := "--ccb_explore_adf --epsilon 0.1 --power_t 0 -l 0.05 --dsjson " + tt.args
			s, _, got := trainCCB(t, TrainConfig{Data: ccbDir + "variants.dsjson.gz", Policy: policy})
			if got := strconv.FormatFloat(s.AverageLoss, 'f', 6, 64); got != tt.loss {
				t.Errorf("average loss %s, VW %s", got, tt.loss)
			}
			if s.Examples != 600 || s.Malformed != 0 {
				t.Errorf("summary %+v", s.Counts)
			}
			if want := gunzipFile(t, ccbDir+"variants_"+tt.name+".pred.gz"); !bytes.Equal(got, want) {
				t.Errorf("predictions differ from VW's at %s", firstDiff(got, want))
			}
		})
	}
}

// TestTrainCubicWildcardMatchesVW checks a single-slot run whose --cubic
// ::: spans three namespaces (A, U, V): VW generates the term of three
// distinct namespaces as V, U, A, which sets the order its features are
// summed in.
func TestTrainCubicWildcardMatchesVW(t *testing.T) {
	t.Parallel()
	policy := "--cb_explore_adf --epsilon 0.1 --power_t 0 -l 0.05 --dsjson --cubic :::"
	s, _, got := trainCCB(t, TrainConfig{Data: "../testdata/vw/cubic_v.dsjson.gz", Policy: policy})
	if got := strconv.FormatFloat(s.AverageLoss, 'f', 6, 64); got != "-0.611167" {
		t.Errorf("average loss %s, VW -0.611167", got)
	}
	if want := gunzipFile(t, "../testdata/vw/cubic_v.pred.gz"); !bytes.Equal(got, want) {
		t.Errorf("predictions differ from VW's at %s", firstDiff(got, want))
	}
}

// TestTrainCCBEdges replays VW on 200 public events changed at the edges
// of the slot rules: slots whose namespaces differ in order (VW's shared
// example keeps the earlier slots' namespaces in place), a slot namespace
// the shared example also has, "pdrop", a slot whose "_inc" leaves no
// candidate (an empty -p line), a logged action beyond the actions; then
// -t with the trained model, whose unseeded slots sample from the random
// state.
func TestTrainCCBEdges(t *testing.T) {
	t.Parallel()
	const policy = "--ccb_explore_adf --epsilon 0.1 --power_t 0 -l 0.05 --dsjson -q ::"
	tests := []struct{ name, args, loss string }{
		{"q", "", "-0.435833"},
		{"noindex", " --ccb_no_slot_index", "-0.495833"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _, got := trainCCB(t, TrainConfig{Data: ccbDir + "edges.dsjson.gz", Policy: policy + tt.args})
			if got := strconv.FormatFloat(s.AverageLoss, 'f', 6, 64); got != tt.loss {
				t.Errorf("average loss %s, VW %s", got, tt.loss)
			}
			if want := gunzipFile(t, ccbDir+"edges_"+tt.name+".pred.gz"); !bytes.Equal(got, want) {
				t.Errorf("predictions differ from VW's at %s", firstDiff(got, want))
			}
			if tt.name != "q" {
				return
			}
			s, _, got = trainCCB(t, TrainConfig{Data: ccbDir + "edges.dsjson.gz", Init: s.Model, Test: true})
			if got := strconv.FormatFloat(s.AverageLoss, 'f', 6, 64); got != "-0.517083" {
				t.Errorf("-t: average loss %s, VW -0.517083", got)
			}
			if want := gunzipFile(t, ccbDir+"edges_q_test.pred.gz"); !bytes.Equal(got, want) {
				t.Errorf("-t: predictions differ from VW's at %s", firstDiff(got, want))
			}
		})
	}
}
