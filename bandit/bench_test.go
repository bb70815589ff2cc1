package bandit

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// genLine is one event of the training benchmark (learner.BenchmarkTrain):
// nActions actions with an "id" and nFeatures features in namespace "A",
// nShared shared features in "U", a third of the features strings, logged
// uniformly.
func genLine(r *rand.Rand, e, nActions, nFeatures, nShared int) []byte {
	var w strings.Builder
	feats := func(prefix string, k int) {
		for i := range k {
			if i > 0 {
				w.WriteByte(',')
			}
			if i%3 == 0 {
				fmt.Fprintf(&w, `"%s%d":"v%d"`, prefix, i, r.IntN(10))
			} else {
				fmt.Fprintf(&w, `"%s%d":%.4f`, prefix, i, r.NormFloat64())
			}
		}
	}
	chosen := r.IntN(nActions)
	fmt.Fprintf(&w, `{"_label_cost":%d,"_label_probability":%g,"_label_Action":%d,"_labelIndex":%d,"EventId":"e%d","a":[%d`,
		-r.IntN(2), 1/float64(nActions), chosen+1, chosen, e, chosen+1)
	for a := range nActions {
		if a != chosen {
			fmt.Fprintf(&w, ",%d", a+1)
		}
	}
	w.WriteString(`],"c":{"U":{`)
	feats("u", nShared)
	w.WriteString(`},"_multi":[`)
	for a := range nActions {
		if a > 0 {
			w.WriteByte(',')
		}
		fmt.Fprintf(&w, `{"A":{"id":"%d",`, a)
		feats("f", nFeatures)
		w.WriteString("}}")
	}
	fmt.Fprintf(&w, "]},\"p\":[%g", 1/float64(nActions))
	for range nActions - 1 {
		fmt.Fprintf(&w, ",%g", 1/float64(nActions))
	}
	w.WriteString("]}")
	return []byte(w.String())
}

// benchEvents parses n generated events of 10 actions with 10 features and
// 10 shared features.
func benchEvents(tb testing.TB, n int) []*Event { return benchEventsOf(tb, n, 10, 10) }

// benchEventsOf parses n generated events of 10 actions with nFeatures
// features and nShared shared features.
func benchEventsOf(tb testing.TB, n, nFeatures, nShared int) []*Event {
	r := rand.New(rand.NewPCG(1, 2))
	var d DSJSONParser
	evs := make([]*Event, n)
	for i := range evs {
		evs[i] = new(Event)
		if err := d.Parse(genLine(r, i, 10, nFeatures, nShared), evs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	return evs
}

// BenchmarkLearn learns a stream of distinct events (10 actions of 11
// features, 10 shared features, -q ::), as VW would, for each cb_type;
// "prepared" events had Event.Prepare run (by the parsing goroutine in
// personalizer train).
func BenchmarkLearn(b *testing.B) {
	for _, cbType := range []string{"mtr", "ips", "dr"} {
		for _, prepared := range []bool{false, true} {
			name := cbType
			if prepared {
				name += "_prepared"
			}
			b.Run(name, func(b *testing.B) {
				pol := mustPolicy(b, "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 -q :: --cb_type "+cbType)
				evs := benchEvents(b, 1000)
				if prepared {
					for _, e := range evs {
						e.Prepare(pol)
					}
				}
				m := NewModel(pol)
				var p Prediction
				for _, e := range evs {
					m.Learn(e, &p)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					m.Learn(evs[i%len(evs)], &p)
					i++
				}
			})
		}
	}
}

// BenchmarkLearnSeed is BenchmarkLearn/mtr_prepared on events of the seed
// workload's shape: 10 actions of 46 features, 50 shared features, about
// 4,750 features per action with -q ::.
func BenchmarkLearnSeed(b *testing.B) {
	pol := mustPolicy(b, DefaultPolicy)
	evs := benchEventsOf(b, 200, 45, 50)
	for _, e := range evs {
		e.Prepare(pol)
	}
	m := NewModel(pol)
	var p Prediction
	for _, e := range evs {
		m.Learn(e, &p)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Learn(evs[i%len(evs)], &p)
		i++
	}
}

// BenchmarkPredict scores such events with a trained model: Rank's work.
func BenchmarkPredict(b *testing.B) {
	pol := mustPolicy(b, DefaultPolicy)
	evs := benchEvents(b, 1000)
	m := NewModel(pol)
	var p Prediction
	for _, e := range evs {
		m.Learn(e, &p)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Predict(evs[i%len(evs)], &p)
		i++
	}
}

// BenchmarkPrepare is the feature expansion the parsing goroutine of
// personalizer train does for the learning one.
func BenchmarkPrepare(b *testing.B) {
	pol := mustPolicy(b, DefaultPolicy)
	evs := benchEvents(b, 100)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		evs[i%len(evs)].Prepare(pol)
		i++
	}
}

func BenchmarkParseDSJSON(b *testing.B) {
	lines := map[string][]byte{
		"public":    readLines(b, "../testdata/vw/public_train.dsjson.gz")[0],
		"generated": genLine(rand.New(rand.NewPCG(1, 2)), 0, 10, 10, 10),
	}
	for _, name := range []string{"public", "generated"} {
		line := lines[name]
		b.Run(name, func(b *testing.B) {
			var d DSJSONParser
			var e Event
			if err := d.Parse(line, &e); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				if err := d.Parse(line, &e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
