package bandit

import (
	"strings"
	"testing"
)

func termStrings(ts []term) []string {
	var out []string
	for _, t := range ts {
		out = append(out, string(t.bytes()))
	}
	return out
}

// TestParsePolicy checks each option and VW's defaults as gd_setup,
// parse_feature_tweaks and the cb_explore_adf_* setups resolve them.
func TestParsePolicy(t *testing.T) {
	t.Parallel()
	type want struct {
		explore                         int
		epsilon, eta, powerT, initialT  float32
		adaptive, normalized, invariant bool
		cbType                          string
		terms                           string // comma-separated
		bits                            uint
	}
	def := want{explore: exploreGreedy, epsilon: 0.05, eta: 0.5, powerT: 0.5, adaptive: true, normalized: true, invariant: true, cbType: "mtr", bits: 18}
	with := func(f func(w *want)) want { w := def; f(&w); return w }
	tests := []struct {
		args string
		want want
	}{
		{"--cb_explore_adf", def},
		{DefaultPolicy, with(func(w *want) { w.epsilon, w.eta, w.powerT, w.terms = 0.2, 0.001, 0, "::" })},
		{"--cb_explore_adf --epsilon=0.1 --cb_type ips -b20 --dsjson --quiet --json --id N/A", with(func(w *want) { w.epsilon, w.cbType, w.bits = 0.1, "ips", 20 })},
		{"--cb_explore_adf --cb_adf --cb_type dr --learning_rate 0.3 --power_t 0 --initial_t 2", with(func(w *want) { w.cbType, w.eta, w.powerT, w.initialT = "dr", 0.3, 0, 2 })},
		// Exploration: epsilon defaults to 0 for everything but epsilon-greedy.
		{"--cb_explore_adf --first 3", with(func(w *want) { w.explore, w.epsilon = exploreFirst, 0 })},
		{"--cb_explore_adf --softmax --lambda -2", with(func(w *want) { w.explore, w.epsilon = exploreSoftmax, 0 })},
		{"--cb_explore_adf --squarecb --epsilon 0.1", with(func(w *want) { w.explore, w.epsilon = exploreSquareCB, 0.1 })},
		{"--cb_explore_adf --bag 3 --greedify --first_only", with(func(w *want) { w.explore, w.epsilon = exploreBag, 0 })},
		// The update rule: naming any of --sgd, --adaptive, --normalized,
		// --invariant turns the others off and the rate defaults to 10, and
		// plain SGD starts its counter at 1 (eta *= t0^power_t).
		{"--cb_explore_adf --sgd", with(func(w *want) { w.adaptive, w.normalized, w.invariant, w.eta, w.initialT = false, false, false, 10, 1 })},
		{"--cb_explore_adf --sgd -l 0.1 --initial_t 4", with(func(w *want) {
			w.adaptive, w.normalized, w.invariant, w.eta, w.initialT = false, false, false, 0.2, 4
		})},
		{"--cb_explore_adf --adaptive", with(func(w *want) { w.normalized, w.invariant, w.eta = false, false, 10 })},
		{"--cb_explore_adf --normalized", with(func(w *want) { w.adaptive, w.invariant, w.eta = false, false, 10 })},
		{"--cb_explore_adf --adaptive --normalized", with(func(w *want) { w.invariant = false })},
		{"--cb_explore_adf --invariant -l 2", with(func(w *want) { w.adaptive, w.normalized, w.eta, w.initialT = false, false, 2, 1 })},
		// Interactions are sorted by length then bytes; terms naming the same
		// namespaces are kept once; a term repeating a namespace among others
		// is sorted; \xHH escapes are decoded.
		{"--cb_explore_adf -q UA -q AU -q ::", with(func(w *want) { w.terms = "::,AU" })},
		{"--cb_explore_adf -qUA --quadratic=AB", with(func(w *want) { w.terms = "AB,UA" })},
		{"--cb_explore_adf --cubic UAU --interactions ABC --interactions CBA -q BA", with(func(w *want) { w.terms = "BA,ABC,AUU" })},
		{`--cb_explore_adf -q \x20A --interactions ABCD`, with(func(w *want) { w.terms = " A,ABCD" })},
		// An option given twice: the same value is fine; for these four the
		// first value wins, as VW's allow_override.
		{"--cb_explore_adf --epsilon 0.1 --epsilon 0.3 -l 0.2 -l 0.4 --power_t 0 --power_t 1 --cb_type dr --cb_type dr",
			with(func(w *want) { w.epsilon, w.eta, w.powerT, w.cbType = 0.1, 0.2, 0, "dr" })},
	}
	for _, tt := range tests {
		p, err := ParsePolicy(tt.args)
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tt.args, err)
			continue
		}
		got := want{p.explore, p.epsilon, p.eta, p.powerT, p.initialT, p.adaptive, p.normalized, p.invariant, p.cbType,
			strings.Join(termStrings(p.terms), ","), p.bits}
		if got != tt.want || p.String() != tt.args {
			t.Errorf("ParsePolicy(%q) =\n%+v, want\n%+v", tt.args, got, tt.want)
		}
	}
}

func TestParsePolicyDetails(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, `--cb_explore_adf --softmax --lambda -2 --hash all --noconstant --ignore AB --ignore \x20 --ignore_linear C --l1 0.01 --l2 0.5 --random_seed 7`)
	if p.lambda != 2 || !p.hashAll || !p.noConstant || p.l1 != 0.01 || p.l2 != 0.5 || p.randomSeed != 7 {
		t.Errorf("policy %+v", p)
	}
	for c := range 256 {
		if p.ignore[c] != (c == 'A' || c == 'B' || c == ' ') || p.ignoreLinear[c] != (c == 'C') {
			t.Errorf("ignore[%q] = %v, ignoreLinear = %v", rune(c), p.ignore[c], p.ignoreLinear[c])
		}
	}
	b := mustPolicy(t, "--cb_explore_adf --bag 4 --cb_type dr --greedify")
	if b.bag != 4 || !b.greedify || b.width() != 8 {
		t.Errorf("bag %d greedify %v width %d, want 4 true 8", b.bag, b.greedify, b.width())
	}
	s := mustPolicy(t, "--cb_explore_adf --squarecb --gamma_scale 2 --gamma_exponent 1")
	if s.gammaScale != 2 || s.gammaExponent != 1 {
		t.Errorf("squarecb %v %v", s.gammaScale, s.gammaExponent)
	}
	if f := mustPolicy(t, "--cb_explore_adf --first 12"); f.tau != 12 {
		t.Errorf("tau %d", f.tau)
	}
	if q := mustPolicy(t, "--cb_explore_adf --power_t 0.5"); !q.sqrtRate {
		t.Error("power_t 0.5 does not select VW's square-root rate")
	}
}

// TestParsePolicyErrors: nothing is silently ignored, and every error names
// the option.
func TestParsePolicyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ args, want string }{
		{"", "--cb_explore_adf is required"},
		{"--epsilon 0.2", "--cb_explore_adf is required"},
		{"--cb_explore_adf --bogus", "option --bogus is not supported"},
		{"--cb_explore_adf --cover 3", "option --cover is not supported"},
		{"--cb_explore_adf --hash_seed 3", "option --hash_seed is not supported"},
		{"--cb_explore_adf -x", "option -x is not supported"},
		{"--cb_explore_adf -t", "option -t is not a learning policy option; give it to personalizer train as -t"},
		{"--cb_explore_adf --passes 3", "give it to personalizer train as --passes"},
		{"--cb_explore_adf -d data.json", "give it to personalizer train as --dsjson FILE"},
		{"--cb_explore_adf --cb_type dm", `--cb_type "dm" is not supported`},
		{"--cb_explore_adf --cb_type xyz", `--cb_type "xyz" is not a cb_type`},
		{"--cb_explore_adf -q ABC", "--quadratic \"ABC\": want two namespace characters"},
		{"--cb_explore_adf --cubic AB", "--cubic \"AB\": want three"},
		{"--cb_explore_adf --interactions A", "--interactions \"A\": want 2 to 16"},
		{"--cb_explore_adf --epsilon", "option --epsilon needs a value"},
		{"--cb_explore_adf --epsilon 2", "--epsilon 2 is not in [0, 1]"},
		{"--cb_explore_adf --epsilon x", `--epsilon "x" is not a number`},
		{"--cb_explore_adf -l 0", "--learning_rate 0 must be positive"},
		{"--cb_explore_adf --power_t -1", "--power_t -1 must not be negative"},
		{"--cb_explore_adf --l1 -0.1", "--l1 -0.1 must not be negative"},
		{"--cb_explore_adf -b 40", "--bit_precision \"40\": want a number of bits from 1 to 28"},
		{"--cb_explore_adf --bag 0", "--bag \"0\": want a whole number from 1"},
		{"--cb_explore_adf --first -1", "--first \"-1\""},
		{"--cb_explore_adf --hash words", `--hash "words": want strings or all`},
		{"--cb_explore_adf --l1 0.1 --l1 0.2", `option --l1 is given twice with different values "0.1" and "0.2"`},
		{"--cb_explore_adf --cb_type ips --cb_type dr", "option --cb_type is given twice"},
		{"--cb_explore_adf --quiet=1", "option --quiet takes no value"},
		{"--cb_explore_adf stray", `unexpected argument "stray"`},
		{"--cb_explore_adf --first 2 --softmax", "--first and --softmax cannot be combined"},
		{"--cb_explore_adf --bag 2 --squarecb", "--bag and --squarecb cannot be combined"},
		{"--cb_explore_adf --lambda 2", "--lambda is only used with --softmax"},
		{"--cb_explore_adf --gamma_scale 2", "--gamma_scale is only used with --squarecb"},
		{"--cb_explore_adf --greedify", "--greedify is only used with --bag"},
		{"--cb_explore_adf --softmax --first_only", "--first_only is only used with epsilon-greedy or --bag"},
		{"--cb_explore_adf --squarecb --cb_type dr", "--squarecb supports only --cb_type mtr"},
	}
	for _, tt := range tests {
		_, err := ParsePolicy(tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePolicy(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestDecodeInlineHex(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{`\x20`: " ", `a\x41b`: "aAb", `\x`: `\x`, `\xZZ1`: `\xZZ1`, `ab`: "ab", `\x41\x42`: "AB"} {
		if got := decodeInlineHex(in); got != want {
			t.Errorf("decodeInlineHex(%q) = %q, want %q", in, got, want)
		}
	}
}
