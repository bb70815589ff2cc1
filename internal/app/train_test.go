package app

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	trainData = "../../testdata/vw/public_train.dsjson.gz"
	ccbData   = "../../testdata/vw-ccb/ccb_public.dsjson.gz"
)

// TestTrainFlags runs `personalizer train` as a VW user would: VW's way of
// naming the data file, -f then -i on the two halves of the reference data
// (the same predictions as one run), -t, and the readable model.
func TestTrainFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	policy := "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 --cb_type mtr -q ::"
	train := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), append([]string{"train"}, args...), &stdout, &stderr, noEnv); err != nil {
			t.Fatalf("train %q: %v\n%s", args, err, stderr.String())
		}
		return stdout.String() + stderr.String()
	}
	want := gunzip(t, "../../testdata/vw/pmf_mtr_lr0.1.pred.gz")

	// vw --dsjson -d FILE, and the file as the last argument.
	for _, args := range [][]string{
		{"--dsjson", "-d", trainData, "--policy", policy, "-p", filepath.Join(dir, "a")},
		{"--policy", policy, "-p", filepath.Join(dir, "b"), trainData},
	} {
		out := train(args...)
		if !strings.Contains(out, "average loss = -0.580200\n") {
			t.Errorf("train %q does not report VW's loss:\n%s", args, out)
		}
	}
	for _, name := range []string{"a", "b"} {
		if got, _ := os.ReadFile(filepath.Join(dir, name)); !bytes.Equal(got, want) {
			t.Errorf("predictions %s differ from VW's", name)
		}
	}

	// -f on the first half, -i on the second.
	all := strings.SplitAfter(string(gunzip(t, trainData)), "\n")
	first, second := filepath.Join(dir, "first.dsjson"), filepath.Join(dir, "second.dsjson")
	os.WriteFile(first, []byte(strings.Join(all[:1000], "")), 0o600)
	os.WriteFile(second, []byte(strings.Join(all[1000:], "")), 0o600)
	model := filepath.Join(dir, "model")
	train("-d", first, "--policy", policy, "-f", model, "-p", filepath.Join(dir, "p1"), "--quiet")
	out := train("-d", second, "-i", model, "-p", filepath.Join(dir, "p2"), "-f", filepath.Join(dir, "model2"),
		"--readable_model", filepath.Join(dir, "readable"))
	if !strings.Contains(out, "number of examples = 3000\n") || !strings.Contains(out, "policy = "+policy+"\n") {
		t.Errorf("resumed run output:\n%s", out)
	}
	p1, _ := os.ReadFile(filepath.Join(dir, "p1"))
	p2, _ := os.ReadFile(filepath.Join(dir, "p2"))
	if !bytes.Equal(append(p1, p2...), want) {
		t.Error("-f then -i predicts differently from one run")
	}
	if r, _ := os.ReadFile(filepath.Join(dir, "readable")); !bytes.HasPrefix(r, []byte("Version 9.11.2\n")) {
		t.Errorf("readable model starts %q", r[:min(len(r), 40)])
	}

	// -t with the final model learns nothing: it predicts the first event
	// the same both times.
	out = train("-d", first, "-i", filepath.Join(dir, "model2"), "-t", "-p", filepath.Join(dir, "t"), "--passes", "1")
	if !strings.Contains(out, "only testing\n") || !strings.Contains(out, "number of examples = 1000\n") {
		t.Errorf("-t output:\n%s", out)
	}
}

func TestTrainFlagErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notModel := filepath.Join(dir, "not-a-model")
	os.WriteFile(notModel, []byte("hello"), 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"train"}, "train needs --dsjson FILE"},
		{[]string{"train", "--dsjson", trainData, "--policy", "--cb_explore_adf --bogus 1"}, "option --bogus is not supported"},
		{[]string{"train", "--dsjson", trainData, "--policy", "--cb_explore_adf --cb_type sm"}, `--cb_type "sm" is not supported`},
		{[]string{"train", "--dsjson", filepath.Join(dir, "missing.dsjson")}, "open data"},
		{[]string{"train", "--dsjson", trainData, "-i", filepath.Join(dir, "missing.model")}, "initial model"},
		{[]string{"train", "--dsjson", trainData, "-i", notModel}, "not a bandit model file"},
		// VW's multi-slot model file gives its policy.
		{[]string{"train", "--dsjson", ccbData, "-i", "../../testdata/vw-models/ccb_mtr_lr0.1_first1500.vw", "--passes", "2"},
			"multi-slot (--ccb_explore_adf) training makes one pass"},
		{[]string{"train", "--dsjson", trainData, "--passes", "0"}, "--passes 0 must be at least 1"},
		{[]string{"train", "--dsjson", trainData, "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"train", "--dsjson", trainData, "-f", filepath.Join(dir, "no", "such", "dir", "m")}, "write model"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tt.args, &stdout, &stderr, noEnv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestTrainVWModel writes a VW model file with -f --vw-model (the file
// vw -f writes for the same run) and continues from a file vw -f wrote
// with -i (vw -i's predictions and average loss), for single-slot and
// multi-slot (--ccb_explore_adf) policies.
func TestTrainVWModel(t *testing.T) {
	t.Parallel()
	const models = "../../testdata/vw-models/"
	tests := []struct {
		name, data string
		split      int
		policy     string
		vwFile     string
		cont, loss string
	}{
		{"cb", trainData, 2000, "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.1 --cb_type mtr -q ::",
			"cb_mtr_lr0.1_first2000.vw", "cont_mtr_lr0.1.pred.gz", "-0.560500"},
		{"ccb", ccbData, 1500, "--ccb_explore_adf --epsilon 0.2 --power_t 0 -q :: -l 0.1",
			"ccb_mtr_lr0.1_first1500.vw", "ccb_cont_mtr_lr0.1.pred.gz", "-0.696000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			all := strings.SplitAfter(string(gunzip(t, tt.data)), "\n")
			first, second := filepath.Join(dir, "first.dsjson"), filepath.Join(dir, "second.dsjson")
			os.WriteFile(first, []byte(strings.Join(all[:tt.split], "")), 0o600)
			os.WriteFile(second, []byte(strings.Join(all[tt.split:], "")), 0o600)
			train := func(args ...string) string {
				t.Helper()
				var stderr bytes.Buffer
				if err := run(context.Background(), append([]string{"train"}, args...), io.Discard, &stderr, noEnv); err != nil {
					t.Fatalf("train %q: %v\n%s", args, err, stderr.String())
				}
				return stderr.String()
			}
			out := filepath.Join(dir, "model.vw")
			train("-d", first, "--policy", tt.policy, "-f", out, "--vw-model", "--quiet")
			got, _ := os.ReadFile(out)
			want, _ := os.ReadFile(models + tt.vwFile)
			if len(want) == 0 || !bytes.Equal(got, want) {
				t.Error("-f --vw-model wrote another file than vw -f")
			}
			summary := train("-d", second, "-i", models+tt.vwFile, "-p", filepath.Join(dir, "p"))
			if p, _ := os.ReadFile(filepath.Join(dir, "p")); !bytes.Equal(p, gunzip(t, models+tt.cont)) {
				t.Error("-i of vw -f's file predicts differently from vw -i")
			}
			if !strings.Contains(summary, "\naverage loss = "+tt.loss+"\n") {
				t.Errorf("-i of vw -f's file: the summary lacks vw -i's average loss %s:\n%s", tt.loss, summary)
			}
		})
	}
}
