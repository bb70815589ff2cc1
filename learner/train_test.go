package learner

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
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

func TestTrainSkipsBadLines(t *testing.T) {
	t.Parallel()
	tiny, err := os.ReadFile("../testdata/vw/tiny.dsjson")
	if err != nil {
		t.Fatal(err)
	}
	good := strings.Split(strings.TrimSpace(string(tiny)), "\n")
	data := writeDSJSON(t,
		good[0],
		"",
		`{"a":[1],"c":{"_multi":[{"A":{"x":1}}]`, // truncated
		`{"_skipLearn":true,"a":[1],"c":{"_multi":[{"A":{"x":1}}]}}`,
		`{"a":[],"c":{"_multi":[{"A":{"x":1}}]}}`,
		`not json`,
		good[1],
	)
	var stderr bytes.Buffer
	s, err := Train(context.Background(), TrainConfig{Data: data, Policy: bandit.DefaultPolicy, Quiet: true}, io.Discard, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if s.Examples != 2 || s.Dropped != 2 || s.Malformed != 2 {
		t.Errorf("examples %d dropped %d malformed %d, want 2, 2, 2", s.Examples, s.Dropped, s.Malformed)
	}
	for _, w := range []string{"warning: line 3 skipped", "warning: line 6 skipped"} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "line 4") || strings.Contains(stderr.String(), "finished run") {
		t.Errorf("unexpected output with Quiet:\n%s", stderr.String())
	}
}

// TestTrainResume trains on the first half, saves and loads the model and
// trains on the second half: the predictions must be those of one run.
func TestTrainResume(t *testing.T) {
	t.Parallel()
	lines := strings.SplitAfter(string(gunzipFile(t, vwTrainData)), "\n")
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first"), filepath.Join(dir, "second")
	if err := os.WriteFile(first, []byte(strings.Join(lines[:1500], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(second, []byte(strings.Join(lines[1500:], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 --cb_type dr -q ::"
	run := func(cfg TrainConfig) (Summary, []byte) {
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

	_, whole := run(TrainConfig{Data: vwTrainData, Policy: policy})
	s1, p1 := run(TrainConfig{Data: first, Policy: policy})
	var buf bytes.Buffer
	if _, err := s1.Model.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	m, err := bandit.ReadModel(&buf)
	if err != nil {
		t.Fatal(err)
	}
	_, p2 := run(TrainConfig{Data: second, Init: m})
	if !bytes.Equal(append(p1, p2...), whole) {
		t.Error("resumed training predicts differently from one run")
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
