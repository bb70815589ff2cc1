package bandit

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// twoActions is an event with actions a0 and a1 (one feature each in the
// default namespace), labelled: action chosen, cost -1, probability 0.5.
func twoActions(chosen int) *Event {
	var e Event
	e.AddAction().Number("a0", 1)
	e.AddAction().Number("a1", 1)
	e.SetLabel(chosen, -1, 0.5)
	return &e
}

// TestProcessCounts checks VW's example counter t (plain SGD's schedule)
// and what each mode learns: t counts every event after it is learned; VW
// leaves held-out and unlabelled weight out of the schedule.
func TestProcessCounts(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, "--cb_explore_adf --sgd"))
	var p Prediction
	unlabeled := twoActions(0)
	unlabeled.label = label{}
	steps := []struct {
		e       *Event
		mode    Mode
		labeled bool
	}{
		{twoActions(0), ModeLearn, true},
		{twoActions(1), ModeHoldout, true},
		{unlabeled, ModeLearn, false},
		{twoActions(0), ModeTest, true},
	}
	for _, s := range steps {
		if _, labeled := m.Process(s.e, &p, s.mode); labeled != s.labeled {
			t.Errorf("mode %d: labeled %v, want %v", s.mode, labeled, s.labeled)
		}
	}
	if m.t != 1+4 || m.tHoldout != 1 || m.tUnlabeled != 1 || m.mtr[0].events != 2 {
		t.Errorf("t %v holdout %v unlabeled %v, learned %d events; want 5 1 1 2", m.t, m.tHoldout, m.tUnlabeled, m.mtr[0].events)
	}
	// VW does not save the held-out and unlabelled weight: a loaded model
	// counts them in t.
	var buf bytes.Buffer
	m.WriteTo(&buf)
	if r, err := ReadModel(&buf); err != nil || r.t != 5 || r.tHoldout != 0 || r.tUnlabeled != 0 {
		t.Errorf("loaded t %v holdout %v unlabeled %v (%v)", r.t, r.tHoldout, r.tUnlabeled, err)
	}
}

// TestFirstExplores checks --first: uniform PMFs for the first tau learned
// events (test mode does not count), greedy after.
func TestFirstExplores(t *testing.T) {
	t.Parallel()
	m := NewModel(mustPolicy(t, "--cb_explore_adf --first 2"))
	var p Prediction
	m.Process(twoActions(1), &p, ModeTest)
	if m.tau != 2 {
		t.Fatalf("tau %d after a test event, want 2", m.tau)
	}
	for i := range 3 {
		m.Learn(twoActions(1), &p)
		uniform := p.PMF()[0].Prob == 0.5
		if uniform != (i < 2) {
			t.Errorf("event %d: PMF %v", i, p.PMF())
		}
	}
	if m.tau != 0 || p.PMF()[0] != (ActionProb{1, 1}) {
		t.Errorf("tau %d, PMF %v; want 0 and action 1 certain", m.tau, p.PMF())
	}
}

// TestSquareCBLearns checks what SquareCB learns: VW sets the logged
// probability to 1 (no importance weight) on every action but the last one,
// and counts learned events for gamma.
func TestSquareCBLearns(t *testing.T) {
	t.Parallel()
	learn := func(args string, chosen int, prob float32) []float32 {
		m := NewModel(mustPolicy(t, "--cb_explore_adf --power_t 0 -l 0.1 "+args))
		e := twoActions(chosen)
		e.label.prob = prob
		var p Prediction
		m.Learn(e, &p)
		if args != "" && m.counter != 1 {
			t.Errorf("counter %d, want 1", m.counter)
		}
		return m.w
	}
	if !reflect.DeepEqual(learn("--squarecb", 0, 0.5), learn("", 0, 1)) {
		t.Error("SquareCB learned the first action with an importance weight")
	}
	if !reflect.DeepEqual(learn("--squarecb", 1, 0.5), learn("", 1, 0.5)) {
		t.Error("SquareCB learned the last action without its importance weight (VW keeps it)")
	}
}

// TestBagLearns checks --bag's bootstrap: from --random_seed 0 the Poisson
// draws are 0 0 0 for the first event and 1 3 0 for the second (see
// TestPoisson), so after two events model 0 learned once, model 1 three
// times, model 2 never; --greedify makes model 0 learn every event once.
func TestBagLearns(t *testing.T) {
	t.Parallel()
	// The weight of action 1's feature in each model, after learning the
	// same event k times with a plain model, is the reference.
	plain := func(k int) float32 {
		pol := mustPolicy(t, "--cb_explore_adf --power_t 0 -l 0.1")
		m := NewModel(pol)
		var p Prediction
		for range k {
			m.Learn(twoActions(1), &p)
		}
		return m.w[4*Features(twoActions(1), pol)[1][0].Index]
	}
	tests := []struct {
		args string
		want [3]int // times each model learned
	}{
		{"", [3]int{1, 3, 0}},
		// Model 0 learns once per event without a draw; models 1 and 2 take
		// the draws 0 0, then 0 1.
		{"--greedify", [3]int{2, 0, 1}},
	}
	for _, tt := range tests {
		pol := mustPolicy(t, "--cb_explore_adf --power_t 0 -l 0.1 --bag 3 "+tt.args)
		m := NewModel(pol)
		var p Prediction
		m.Learn(twoActions(1), &p)
		m.Learn(twoActions(1), &p)
		slot := Features(twoActions(1), pol)[1][0].Index
		for k, n := range tt.want {
			if got, want := m.w[4*(slot+uint64(k))], plain(n); got != want {
				t.Errorf("%s: model %d weight %v, want %v (learned %d times)", tt.args, k, got, want, n)
			}
		}
	}
}

func TestReadModelChecksum(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	NewModel(mustPolicy(t, "--cb_explore_adf -b 4")).WriteTo(&buf)
	b := buf.Bytes()
	b[len(b)/2] ^= 1
	if _, err := ReadModel(bytes.NewReader(b)); !errors.Is(err, ErrChecksum) {
		t.Errorf("ReadModel(corrupt) = %v, want ErrChecksum", err)
	}
}
