package learner

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/open-personalizer/personalizer/bandit"
)

const vwTrainData = "../testdata/vw/public_train.dsjson.gz"

func gunzipFile(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// samePredictions compares -p outputs event by event: the same actions in
// the same order with probabilities within 1e-4. (Our output is in fact
// byte-identical to VW's.)
func samePredictions(t *testing.T, got, want []byte) {
	t.Helper()
	g, w := strings.Split(string(got), "\n\n"), strings.Split(string(want), "\n\n")
	if len(g) != len(w) {
		t.Fatalf("%d predictions, VW made %d", len(g)-1, len(w)-1)
	}
	for i := range w {
		if g[i] == w[i] {
			continue
		}
		gp, wp := strings.Split(g[i], ","), strings.Split(w[i], ",")
		ok := len(gp) == len(wp)
		for j := 0; ok && j < len(wp); j++ {
			ga, gprob, _ := strings.Cut(gp[j], ":")
			wa, wprob, _ := strings.Cut(wp[j], ":")
			x, err1 := strconv.ParseFloat(gprob, 64)
			y, err2 := strconv.ParseFloat(wprob, 64)
			ok = ga == wa && err1 == nil && err2 == nil && x-y < 1e-4 && y-x < 1e-4
		}
		if !ok {
			t.Fatalf("event %d: predicted %s, VW %s", i, g[i], w[i])
		}
	}
	if !bytes.Equal(got, want) {
		t.Errorf("predictions agree within 1e-4 but are not byte-identical to VW's")
	}
}

// TestTrainMatchesVW replays VW 9.11.2's reference runs: the progressive
// average loss and every event's PMF must be VW's.
func TestTrainMatchesVW(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cbType, lr string
		loss       string
	}{
		{"mtr", "0.001", "-0.428200"},
		{"mtr", "0.1", "-0.580200"},
		{"ips", "0.001", "-0.454200"},
		{"ips", "0.1", "-0.522200"},
		{"dr", "0.001", "-0.460200"},
		{"dr", "0.1", "-0.482200"},
	}
	for _, tt := range tests {
		t.Run(tt.cbType+"_"+tt.lr, func(t *testing.T) {
			t.Parallel()
			preds := filepath.Join(t.TempDir(), "pred")
			var stderr bytes.Buffer
			cfg := TrainConfig{
				Data:   vwTrainData,
				Policy: "--cb_explore_adf --epsilon 0.2 --power_t 0 -l " + tt.lr + " --cb_type " + tt.cbType + " -q :: --dsjson",
				Preds:  preds,
			}
			s, err := Train(context.Background(), cfg, io.Discard, &stderr)
			if err != nil {
				t.Fatal(err)
			}
			if got := strconv.FormatFloat(s.AverageLoss, 'f', 6, 64); got != tt.loss {
				t.Errorf("average loss %s, VW %s", got, tt.loss)
			}
			for _, line := range []string{"number of examples = 4000", "average loss = " + tt.loss} {
				if !strings.Contains(stderr.String(), "\n"+line+"\n") {
					t.Errorf("summary lacks %q:\n%s", line, stderr.String())
				}
			}
			if s.Examples != 4000 || s.Dropped != 0 || s.Malformed != 0 {
				t.Errorf("summary %+v", s)
			}
			got, err := os.ReadFile(preds)
			if err != nil {
				t.Fatal(err)
			}
			samePredictions(t, got, gunzipFile(t, "../testdata/vw/pmf_"+tt.cbType+"_lr"+tt.lr+".pred.gz"))
		})
	}
}

// TestTrainProgress checks the progress table and summary against what VW
// printed for tiny.dsjson (tiny.dsjson.audit.txt).
func TestTrainProgress(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	cfg := TrainConfig{Data: "../testdata/vw/tiny.dsjson", Policy: "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"}
	if _, err := Train(context.Background(), cfg, io.Discard, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"average  since         example        example        current        current  current",
		"loss     last          counter         weight          label        predict features",
		"-0.41666 -0.41666            1            1.0       1:-1:0.8         0:0.33       63",
		"-0.20833 0.000000            2            2.0        0:0:0.1         1:0.87       63",
		"finished run\nnumber of examples = 2\nweighted example sum = 2.000000\nweighted label sum = 0.000000\naverage loss = -0.208333\ntotal feature number = 126",
	} {
		if !strings.Contains(stderr.String(), line+"\n") {
			t.Errorf("output lacks\n%s\ngot\n%s", line, stderr.String())
		}
	}
}

func writeDSJSON(t *testing.T, lines ...string) string {
	t.Helper()
	return writeFile(t, "data.dsjson", lines...)
}

func writeFile(t *testing.T, name string, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTrainSkipsBadLines: every malformed line is skipped with a message
// naming its line number and counted in the summary; events VW drops are
// counted too, and reported unless they are the "_skipLearn" events
// Personalizer logs normally have.
func TestTrainSkipsBadLines(t *testing.T) {
	t.Parallel()
	tiny, err := os.ReadFile("../testdata/vw/tiny.dsjson")
	if err != nil {
		t.Fatal(err)
	}
	good := strings.Split(strings.TrimSpace(string(tiny)), "\n")
	const c = `"c":{"_multi":[{"A":{"x":1}},{"A":{"y":1}}]}`
	bad := []struct {
		line, why string
	}{
		{`{"a":[1],"c":{"_multi":[{"A":{"x":1}}]`, "unexpected end of line"},
		{`{"_label_cost":"high","_label_probability":0.5,"_labelIndex":0,"a":[1],` + c + `}`, `_label_cost is a string`},
		{`{"_label_cost":1,"_label_probability":0.5,"_labelIndex":"0","a":[1],` + c + `}`, "expected an unsigned integer"},
		{`{"a":"1",` + c + `}`, "expected an unsigned integer"},
		{`{"a":[1],"c":[]}`, `"c" must be an object`},
		{`{"_label_cost":1,"_label_probability":0.5,"a":[1],` + c + `}`, `no "_labelIndex"`},
		{`{"_label_cost":"NaN","_label_probability":0.5,"_labelIndex":0,"a":[1],` + c + `}`, "NaN"},
		{`{"_label_cost":1,"_label_probability":0,"_labelIndex":0,"a":[1],` + c + `}`, "_label_probability 0 is not in (0, 1]"},
		{`{"_label_cost":1,"_label_probability":1.5,"_labelIndex":0,"a":[1],` + c + `}`, "_label_probability 1.5 is not in (0, 1]"},
		{`{"_label_cost":1,"_label_probability":0.5,"_labelIndex":5,"a":[1],` + c + `}`, "_labelIndex 5 is out of range: 2 actions"},
		{`not json`, "must start with '{'"},
	}
	dropped := []struct{ line, why string }{
		{`{"a":[],` + c + `}`, `"a" is missing or empty`},
		{`{` + c + `}`, `"a" is missing or empty`},
	}
	lines := []string{good[0], ""}
	for _, b := range bad {
		lines = append(lines, b.line)
	}
	for _, d := range dropped {
		lines = append(lines, d.line)
	}
	lines = append(lines, `{"_skipLearn":true,"a":[1],`+c+`}`, good[1])
	data := writeDSJSON(t, lines...)
	var stderr bytes.Buffer
	s, err := Train(context.Background(), TrainConfig{Data: data, Policy: bandit.DefaultPolicy, Quiet: true}, io.Discard, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if s.Examples != 2 || s.Dropped != len(dropped)+1 || s.Malformed != len(bad) {
		t.Errorf("examples %d dropped %d malformed %d, want 2, %d, %d", s.Examples, s.Dropped, s.Malformed, len(dropped)+1, len(bad))
	}
	for i, b := range append(bad, dropped...) {
		want := fmt.Sprintf("warning: line %d skipped: ", i+3)
		var got string
		for l := range strings.Lines(stderr.String()) {
			if strings.HasPrefix(l, want) {
				got = l
			}
		}
		if !strings.Contains(got, b.why) {
			t.Errorf("line %d: message %q, want %q and %q", i+3, got, want, b.why)
		}
	}
	if n := strings.Count(stderr.String(), "warning:"); n != len(bad)+len(dropped) {
		t.Errorf("%d warnings, want %d (none for blank and _skipLearn lines):\n%s", n, len(bad)+len(dropped), stderr.String())
	}
	if strings.Contains(stderr.String(), "finished run") {
		t.Errorf("summary printed with Quiet:\n%s", stderr.String())
	}

	// Without Quiet the summary counts them.
	stderr.Reset()
	if _, err := Train(context.Background(), TrainConfig{Data: data, Policy: bandit.DefaultPolicy}, io.Discard, &stderr); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("events dropped = %d\nmalformed lines skipped = %d\n", len(dropped)+1, len(bad))
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, stderr.String())
	}
}

// splitData writes the reference data's first n lines and the rest to two
// files.
func splitData(t *testing.T, n int) (first, second string) {
	t.Helper()
	return splitFile(t, vwTrainData, n)
}

// splitFile writes the first n lines of the gzipped file at path and the
// rest to two files.
func splitFile(t *testing.T, path string, n int) (first, second string) {
	t.Helper()
	lines := strings.SplitAfter(string(gunzipFile(t, path)), "\n")
	dir := t.TempDir()
	first, second = filepath.Join(dir, "first"), filepath.Join(dir, "second")
	if err := os.WriteFile(first, []byte(strings.Join(lines[:n], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(second, []byte(strings.Join(lines[n:], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	return first, second
}

func trainPreds(t *testing.T, cfg TrainConfig) (Summary, []byte) {
	t.Helper()
	cfg.Preds = filepath.Join(t.TempDir(), "pred")
	cfg.Quiet = true
	s, err := Train(context.Background(), cfg, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.Preds)
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

// TestTrainResume trains on the first part with -f, then on the rest from
// that file with -i: the predictions must be those of one run over the
// whole file, for every cb_type and exploration algorithm.
func TestTrainResume(t *testing.T) {
	t.Parallel()
	first, second := splitData(t, 1500)
	for _, args := range []string{
		"--cb_type mtr", "--cb_type ips", "--cb_type dr", "--first 2000 --epsilon 0.1", "--softmax --lambda 5",
		"--squarecb", "--bag 3 --cb_type dr", "--sgd --l2 1e-5",
	} {
		t.Run(args, func(t *testing.T) {
			t.Parallel()
			policy := "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 -q :: " + args
			_, whole := trainPreds(t, TrainConfig{Data: vwTrainData, Policy: policy})
			model := filepath.Join(t.TempDir(), "model")
			_, p1 := trainPreds(t, TrainConfig{Data: first, Policy: policy, Final: model})
			f, err := os.Open(model)
			if err != nil {
				t.Fatal(err)
			}
			m, err := bandit.ReadModel(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			_, p2 := trainPreds(t, TrainConfig{Data: second, Init: m})
			if !bytes.Equal(append(p1, p2...), whole) {
				t.Error("resumed training predicts differently from one run")
			}
		})
	}
}

// TestTrainTestOnly checks -t: the model predicts every event as it stands
// and learns nothing, and the loss is still reported.
func TestTrainTestOnly(t *testing.T) {
	t.Parallel()
	first, second := splitData(t, 2000)
	policy := "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 -q :: --l1 1e-6 --l2 1e-6"
	trained, _ := trainPreds(t, TrainConfig{Data: first, Policy: policy})
	var buf bytes.Buffer
	if _, err := trained.Model.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	before := bytes.Clone(buf.Bytes())
	s, preds := trainPreds(t, TrainConfig{Data: second, Init: trained.Model, Test: true})

	// The same predictions, one by one, from the model with its lazy
	// regularization applied, as VW applies it when it loads a model to
	// test with.
	m := trained.Model.Clone()
	m.ApplyRegularization()
	var want bytes.Buffer
	var d bandit.DSJSONParser
	var e bandit.Event
	var p bandit.Prediction
	for _, line := range bytes.Split(bytes.TrimSpace(gunzipFile(t, vwTrainData)), []byte("\n"))[2000:] {
		if err := d.Parse(line, &e); err != nil {
			t.Fatal(err)
		}
		m.Predict(&e, &p)
		bw := bufio.NewWriter(&want)
		writePMF(bw, p.PMF(), "")
		bw.Flush()
	}
	if !bytes.Equal(preds, want.Bytes()) {
		t.Error("-t predictions differ from the model's")
	}
	buf.Reset()
	trained.Model.WriteTo(&buf)
	if !bytes.Equal(buf.Bytes(), before) {
		t.Error("-t changed the initial model")
	}
	if s.Examples != 2000 || math.IsNaN(s.AverageLoss) || s.AverageLoss >= 0 {
		t.Errorf("summary %+v", s)
	}
}

// TestTrainPasses checks several passes: VW holds out every tenth event
// of each pass (learned, but its loss counted apart), reports the best
// pass's holdout loss, keeps the model of that pass, and stops after three
// passes without improvement.
func TestTrainPasses(t *testing.T) {
	t.Parallel()
	policy := "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.4 -q ::"
	dir := t.TempDir()
	var stderr bytes.Buffer
	model := filepath.Join(dir, "model")
	s, err := Train(context.Background(), TrainConfig{Data: vwTrainData, Policy: policy, Passes: 12, Final: model}, io.Discard, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	out := stderr.String()
	if s.Examples != 3600*int64(s.Passes) || math.IsNaN(s.HoldoutLoss) {
		t.Errorf("summary %+v, want 3600 examples per pass and a holdout loss", s)
	}
	for _, want := range []string{
		"number of examples per pass = 3600\n", fmt.Sprintf("passes used = %d\n", s.Passes),
		"average loss = " + strconv.FormatFloat(s.HoldoutLoss, 'f', 6, 32) + " h\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, " h\n") || strings.Count(out, "\n") < 10 {
		t.Errorf("no holdout progress lines:\n%s", out)
	}
	if s.Passes == 12 {
		t.Fatalf("training never stopped early (holdout loss %v); pick a policy that overfits", s.HoldoutLoss)
	}
	// It stopped three passes after the best one and kept that model:
	// training that many passes gives the same file.
	best := filepath.Join(dir, "best")
	if _, err := Train(context.Background(), TrainConfig{Data: vwTrainData, Policy: policy, Passes: s.Passes - 3, Final: best, Quiet: true}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(model)
	b, _ := os.ReadFile(best)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("the model after early termination is not the best pass's")
	}

	// --holdout_off: every event counts, the loss is progressive.
	s, err = Train(context.Background(), TrainConfig{Data: vwTrainData, Policy: policy, Passes: 2, HoldoutOff: true, Quiet: true}, io.Discard, io.Discard)
	if err != nil || s.Examples != 8000 || s.Passes != 2 || !math.IsNaN(s.HoldoutLoss) || math.IsNaN(s.AverageLoss) {
		t.Errorf("--holdout_off: summary %+v, %v", s, err)
	}
}

// TestTrainReadable checks --readable_model and --invert_hash.
func TestTrainReadable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	readable, inverted := filepath.Join(dir, "readable"), filepath.Join(dir, "inverted")
	cfg := TrainConfig{Data: "../testdata/vw/tiny.dsjson", Policy: bandit.DefaultPolicy, Readable: readable, InvertHash: inverted, Quiet: true}
	if _, err := Train(context.Background(), cfg, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	r, _ := os.ReadFile(readable)
	inv, _ := os.ReadFile(inverted)
	// tiny.dsjson.audit.txt: User^gender=f is slot 43308, Constant 116060,
	// Action^id=politics*User^gender=f 242549.
	for _, want := range []string{"\n43308:", "\n116060:", "\n242549:"} {
		if !bytes.Contains(r, []byte(want)) {
			t.Errorf("readable model lacks %q:\n%s", want, r)
		}
	}
	for _, want := range []string{"\nUser^gender=f:43308:", "\nConstant:116060:", "\nAction^id=politics*User^gender=f:242549:"} {
		if !bytes.Contains(inv, []byte(want)) {
			t.Errorf("inverted model lacks %q:\n%s", want, inv)
		}
	}
}

func TestTrainErrors(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	data := writeDSJSON(t, `{"a":[1],"c":{"_multi":[{"A":{"x":1}}]}}`)
	other := bandit.NewModel(policyForTest(t, "--cb_explore_adf -b 4"))
	tests := []struct {
		name string
		ctx  context.Context
		cfg  TrainConfig
		want string
	}{
		{"bad policy", context.Background(), TrainConfig{Data: vwTrainData, Policy: "--bogus"}, "not supported"},
		{"missing file", context.Background(), TrainConfig{Data: "no/such/file", Policy: bandit.DefaultPolicy}, "open data"},
		{"not gzip", context.Background(), TrainConfig{Data: writeFile(t, "data.gz", "not gzip at all"), Policy: bandit.DefaultPolicy}, "gzip: invalid header"},
		{"policy differs from Init", context.Background(), TrainConfig{Data: vwTrainData, Policy: bandit.DefaultPolicy, Init: other}, "differs"},
		{"canceled", canceled, TrainConfig{Data: data, Policy: bandit.DefaultPolicy, Quiet: true}, context.Canceled.Error()},
	}
	for _, tt := range tests {
		_, err := Train(tt.ctx, tt.cfg, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Train = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := Train(canceled, TrainConfig{Data: data, Policy: bandit.DefaultPolicy}, io.Discard, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("Train with a canceled context = %v, want context.Canceled", err)
	}
}

func policyForTest(t *testing.T, args string) *bandit.Policy {
	t.Helper()
	p, err := bandit.ParsePolicy(args)
	if err != nil {
		t.Fatal(fmt.Errorf("policy: %w", err))
	}
	return p
}
