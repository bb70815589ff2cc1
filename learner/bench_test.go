package learner

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// The benchmark set has 500,000 events (-events 500000, about 800
// MB of DSJson); the default keeps `go test -bench .` quick. The seed
// workload (events of about 500 features and 10 KB) is -features 45
// -shared 50; -data keeps the generated file, to give the same data to
// `personalizer train` or `vw --dsjson`.
var (
	benchEvents   = flag.Int("events", 20000, "events in the generated BenchmarkTrain data")
	benchFeatures = flag.Int("features", 10, "features per action (namespace A, besides id) in the BenchmarkTrain data")
	benchShared   = flag.Int("shared", 10, "shared features (namespace U) in the BenchmarkTrain data")
	benchData     = flag.String("data", "", "write the BenchmarkTrain data to this file and keep it (default: a temporary file)")
)

// writeEvents writes n uniformly logged events with nActions actions of an
// "id" and nFeatures features (namespace "A") and nShared shared features
// (namespace "U"), a third of the features strings, to a file.
// If path is empty, the file is in a temporary directory.
func writeEvents(tb testing.TB, path string, n, nActions, nFeatures, nShared int) (string, int64) {
	tb.Helper()
	if path == "" {
		path = filepath.Join(tb.TempDir(), "events.dsjson")
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(1, 2))
	feats := func(prefix string, k int) {
		for i := range k {
			if i > 0 {
				w.WriteByte(',')
			}
			if i%3 == 0 {
				fmt.Fprintf(w, `"%s%d":"v%d"`, prefix, i, r.IntN(10))
			} else {
				fmt.Fprintf(w, `"%s%d":%.4f`, prefix, i, r.NormFloat64())
			}
		}
	}
	for e := range n {
		chosen := r.IntN(nActions)
		fmt.Fprintf(w, `{"_label_cost":%d,"_label_probability":%g,"_label_Action":%d,"_labelIndex":%d,"EventId":"e%d","a":[%d`,
			-r.IntN(2), 1/float64(nActions), chosen+1, chosen, e, chosen+1)
		for a := range nActions {
			if a != chosen {
				fmt.Fprintf(w, ",%d", a+1)
			}
		}
		w.WriteString(`],"c":{"U":{`)
		feats("u", nShared)
		w.WriteString(`},"_multi":[`)
		for a := range nActions {
			if a > 0 {
				w.WriteByte(',')
			}
			fmt.Fprintf(w, `{"A":{"id":"%d",`, a)
			feats("f", nFeatures)
			w.WriteString("}}")
		}
		fmt.Fprintf(w, "]},\"p\":[%g", 1/float64(nActions))
		for range nActions - 1 {
			fmt.Fprintf(w, ",%g", 1/float64(nActions))
		}
		w.WriteString("]}\n")
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	f.Close()
	return path, st.Size()
}

// BenchmarkTrain is `personalizer train` on DSJson: reading, parsing and
// learning, with 10 actions x 10 features, 10 shared features (-features,
// -shared) and -q ::, for each cb_type, and with -t (scoring only, from a
// model trained on the same data).
func BenchmarkTrain(b *testing.B) {
	events := *benchEvents
	path, size := writeEvents(b, *benchData, events, 10, *benchFeatures, *benchShared)
	policy := func(cbType string) string {
		return "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type " + cbType + " -q ::"
	}
	for _, cbType := range []string{"mtr", "ips", "dr"} {
		b.Run(cbType, func(b *testing.B) {
			cfg := TrainConfig{Data: path, Policy: policy(cbType), Quiet: true}
			b.SetBytes(size)
			for b.Loop() {
				s, err := Train(context.Background(), cfg, io.Discard, io.Discard)
				if err != nil || s.Examples != int64(events) {
					b.Fatalf("trained %d events: %v", s.Examples, err)
				}
			}
			b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
	b.Run("test-only", func(b *testing.B) {
		s, err := Train(context.Background(), TrainConfig{Data: path, Policy: policy("mtr"), Quiet: true}, io.Discard, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		cfg := TrainConfig{Data: path, Init: s.Model, Test: true, Quiet: true}
		b.SetBytes(size)
		for b.Loop() {
			if _, err := Train(context.Background(), cfg, io.Discard, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
