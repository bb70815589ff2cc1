package bandit

import "testing"

// The benchmark event: 10 actions of 10 features, 10 shared features,
// -q :: (so 231 features per action with the constant and interactions).

func BenchmarkLearn(b *testing.B) {
	m := NewModel(mustPolicy(b, DefaultPolicy))
	var e Event
	var p Prediction
	event(&e, 10, 10)
	m.Learn(&e, &p)
	b.ReportAllocs()
	for b.Loop() {
		m.Learn(&e, &p)
	}
}

func BenchmarkPredict(b *testing.B) {
	m := NewModel(mustPolicy(b, DefaultPolicy))
	var e Event
	var p Prediction
	event(&e, 10, 10)
	m.Learn(&e, &p)
	b.ReportAllocs()
	for b.Loop() {
		m.Predict(&e, &p)
	}
}

func BenchmarkParseDSJSON(b *testing.B) {
	line := readLines(b, "../testdata/vw/public_train.dsjson.gz")[0]
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
}
