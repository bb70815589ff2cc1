package bandit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// DefaultPolicy is Azure Personalizer's default learning policy.
const DefaultPolicy = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"

// DefaultMultiSlotPolicy is DefaultPolicy for multi-slot events: VW's
// conditional contextual bandit with the same settings.
const DefaultMultiSlotPolicy = "--ccb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"

// CB types: how a logged bandit label becomes regression examples.
const (
	cbMTR = "mtr" // learn the chosen action's cost, importance weighted
	cbIPS = "ips" // learn cost/p for the chosen action and 0 for the others
	cbDR  = "dr"  // doubly robust: a cost model plus an IPS-corrected policy model
)

// Exploration algorithms (VW's cb_explore_adf_* reductions).
const (
	exploreGreedy   = iota // epsilon-greedy, the default
	exploreFirst           // --first N: uniform for N learned events, then greedy
	exploreSoftmax         // --softmax: probabilities proportional to exp(-lambda*score)
	exploreSquareCB        // --squarecb: inverse-gap weighting
	exploreBag             // --bag N: N bootstrapped models vote
)

// Limits that keep a hostile policy string from exhausting memory.
const (
	maxBits       = 28   // -b: the weights take 16<<b bytes
	maxWidth      = 1024 // --bag times the cb_type's models per feature
	maxTermLength = 16   // namespaces in one --interactions term
)

// Policy is a parsed VW command line for --cb_explore_adf or
// --ccb_explore_adf. It is immutable.
type Policy struct {
	args string

	explore                   int
	epsilon                   float32
	firstOnly                 bool    // --first_only: ties do not share the greedy mass
	tau                       uint64  // --first
	lambda                    float32 // --softmax
	gammaScale, gammaExponent float32
	bag                       int  // --bag
	greedify                  bool // --greedify
	randomSeed                uint64
	perModelSaveLoad          bool // --per_model_save_load: see Model.WriteVW

	cbType string

	// --ccb_explore_adf (multi-slot): see ccb.go.
	ccb          bool
	allSlotsLoss bool // --all_slots_loss: the progressive loss sums every slot's, not the first's
	noSlotIndex  bool // --ccb_no_slot_index: no slot-index feature

	// gd: VW's update rule and its options, resolved as gd_setup does.
	eta, powerT, initialT float32
	sgdDefaultT           bool // initialT is plain SGD's default, not given: VW counts no fake examples
	sqrtRate              bool // power_t == 0.5: VW's specialised update
	adaptive, normalized  bool
	invariant             bool
	l1, l2                float32
	bits                  uint

	// Features.
	hashAll      bool
	noConstant   bool
	ignore       [256]bool
	ignoreLinear [256]bool
	anyIgnoreLin bool
	terms        []term // -q, --cubic and --interactions after VW's sort and deduplication
	wildcard     bool   // some term has ':', so terms are compiled per event

	shape *Model // a model without weights: enough to hash and expand features
}

// option describes one VW argument: whether it takes a value and how to
// apply it. Repeatable options may be given more than once.
type option struct {
	value      bool
	repeatable bool
	apply      func(p *Policy, v string) error
}

// flag returns an option without a value that sets *field(p).
func flag(field func(p *Policy) *bool) option {
	return option{apply: func(p *Policy, _ string) error { *field(p) = true; return nil }}
}

// number returns an option whose value is a float32 checked by ok (which
// names the allowed range).
func number(field func(p *Policy) *float32, check func(float32) string) option {
	return option{value: true, apply: func(p *Policy, v string) error {
		f, err := strconv.ParseFloat(v, 32)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return fmt.Errorf("%q is not a number", v)
		}
		*field(p) = float32(f)
		if check != nil {
			if why := check(float32(f)); why != "" {
				return fmt.Errorf("%v %s", float32(f), why)
			}
		}
		return nil
	}}
}

func count(field func(p *Policy) *uint64, min, max uint64) option {
	return option{value: true, apply: func(p *Policy, v string) error {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n < min || n > max {
			return fmt.Errorf("%q: want a whole number from %d to %d", v, min, max)
		}
		*field(p) = n
		return nil
	}}
}

func nonNegative(f float32) string {
	if f < 0 {
		return "must not be negative"
	}
	return ""
}

func probability(f float32) string {
	if f < 0 || f > 1 {
		return "is not in [0, 1]"
	}
	return ""
}

// parsed collects what ParsePolicy needs besides the Policy fields: which
// options were given, and the raw interaction terms.
type parsed struct {
	given                map[string]bool
	values               map[string]string
	quadratic, cubic     []string
	interactions         []string
	ignore, ignoreLinear []string
	first, bag           uint64
	sgd                  bool
}

// options lists every supported argument by its long name. VW reads the
// same names; everything else is rejected by name.
var options = map[string]option{
	// Input and output settings: they do not change what is learned.
	"cb_explore_adf":    {},
	"ccb_explore_adf":   flag(func(p *Policy) *bool { return &p.ccb }),
	"all_slots_loss":    flag(func(p *Policy) *bool { return &p.allSlotsLoss }),
	"ccb_no_slot_index": flag(func(p *Policy) *bool { return &p.noSlotIndex }),
	"cb_adf":            {}, // implied by --cb_explore_adf; VW writes it into saved options
	"dsjson":            {},
	"json":              {},
	"quiet":             {},
	"id":                {value: true, apply: func(*Policy, string) error { return nil }}, // a model id, as in Personalizer's "--id N/A"
	// VW model files keep every model's normalizer sums and mtr counts,
	// not only the first's (see Model.WriteVW).
	"per_model_save_load": flag(func(p *Policy) *bool { return &p.perModelSaveLoad }),

	// Exploration.
	"epsilon":        number(func(p *Policy) *float32 { return &p.epsilon }, probability),
	"first_only":     flag(func(p *Policy) *bool { return &p.firstOnly }),
	"first":          {value: true},
	"softmax":        {},
	"lambda":         number(func(p *Policy) *float32 { return &p.lambda }, nil),
	"squarecb":       {},
	"gamma_scale":    number(func(p *Policy) *float32 { return &p.gammaScale }, nonNegative),
	"gamma_exponent": number(func(p *Policy) *float32 { return &p.gammaExponent }, nonNegative),
	"bag":            {value: true},
	"greedify":       flag(func(p *Policy) *bool { return &p.greedify }),
	"random_seed":    count(func(p *Policy) *uint64 { return &p.randomSeed }, 0, math.MaxUint64),

	// Reduction.
	"cb_type": {value: true, apply: func(p *Policy, v string) error {
		switch v {
		case cbMTR, cbIPS, cbDR:
			p.cbType = v
			return nil
		case "dm", "sm":
			return fmt.Errorf("%q is not supported (want mtr, ips or dr)", v)
		}
		return fmt.Errorf("%q is not a cb_type (want mtr, ips or dr)", v)
	}},

	// Update rule.
	"learning_rate": number(func(p *Policy) *float32 { return &p.eta }, func(f float32) string {
		if !(f > 0) {
			return "must be positive (VW treats 0 as test only: use personalizer train -t)"
		}
		return ""
	}),
	"power_t":    number(func(p *Policy) *float32 { return &p.powerT }, nonNegative),
	"initial_t":  number(func(p *Policy) *float32 { return &p.initialT }, nonNegative),
	"l1":         number(func(p *Policy) *float32 { return &p.l1 }, nonNegative),
	"l2":         number(func(p *Policy) *float32 { return &p.l2 }, nonNegative),
	"sgd":        {},
	"adaptive":   flag(func(p *Policy) *bool { return &p.adaptive }),
	"normalized": flag(func(p *Policy) *bool { return &p.normalized }),
	"invariant":  flag(func(p *Policy) *bool { return &p.invariant }),
	"bit_precision": {value: true, apply: func(p *Policy, v string) error {
		b, err := strconv.ParseUint(v, 10, 8)
		if err != nil || b < 1 || b > maxBits {
			return fmt.Errorf("%q: want a number of bits from 1 to %d", v, maxBits)
		}
		p.bits = uint(b)
		return nil
	}},

	// Features.
	"hash": {value: true, apply: func(p *Policy, v string) error {
		switch v {
		case "strings":
			p.hashAll = false
		case "all":
			p.hashAll = true
		default:
			return fmt.Errorf("%q: want strings or all", v)
		}
		return nil
	}},
	"noconstant":    flag(func(p *Policy) *bool { return &p.noConstant }),
	"quadratic":     {value: true, repeatable: true},
	"cubic":         {value: true, repeatable: true},
	"interactions":  {value: true, repeatable: true},
	"ignore":        {value: true, repeatable: true},
	"ignore_linear": {value: true, repeatable: true},
}

// overridable lists the options VW lets a command line give twice (with
// allow_override): the first value counts.
var overridable = map[string]bool{"epsilon": true, "lambda": true, "learning_rate": true, "power_t": true}

// shortNames maps VW's one-letter options to their long names.
var shortNames = map[string]string{"q": "quadratic", "l": "learning_rate", "b": "bit_precision"}

// notPolicy names VW options that are run settings of personalizer train,
// not part of a learning policy.
var notPolicy = map[string]string{
	"t": "-t", "testonly": "-t", "passes": "--passes", "d": "--dsjson FILE", "data": "--dsjson FILE",
	"p": "-p", "predictions": "-p", "f": "-f", "final_regressor": "-f", "i": "-i", "initial_regressor": "-i",
	"readable_model": "--readable_model", "invert_hash": "--invert_hash", "holdout_off": "--holdout_off",
	"c": "--passes (no cache is needed)", "cache": "--passes (no cache is needed)",
}

// ParsePolicy parses a VW command line for --cb_explore_adf or, for
// multi-slot events, --ccb_explore_adf ([Policy.CCB]). Options not
// given take VW 9.11.2's defaults. Unknown or unsupported options are errors
// that name the option.
func ParsePolicy(args string) (*Policy, error) {
	p, err := parsePolicy(args)
	if err != nil {
		return nil, fmt.Errorf("policy %q: %w", args, err)
	}
	return p, nil
}

func parsePolicy(args string) (*Policy, error) {
	p := &Policy{args: args, cbType: cbMTR, eta: 0.5, powerT: 0.5, bits: 18, lambda: 1, gammaScale: 10, gammaExponent: 0.5}
	st := parsed{given: map[string]bool{}, values: map[string]string{}}
	fields := strings.Fields(args)
	for i := 0; i < len(fields); i++ {
		arg := fields[i]
		name, value, hasValue := splitOption(arg)
		if name == "" {
			return nil, fmt.Errorf("unexpected argument %q", arg)
		}
		if long, ok := shortNames[name]; ok {
			name = long
		} else if len(name) == 1 || strings.HasPrefix(arg, "--") == false {
			if how, ok := notPolicy[name]; ok {
				return nil, fmt.Errorf("option %s is not a learning policy option; give it to personalizer train as %s", arg, how)
			}
			return nil, fmt.Errorf("option %s is not supported", arg)
		}
		opt, ok := options[name]
		if !ok {
			if how, ok := notPolicy[name]; ok {
				return nil, fmt.Errorf("option %s is not a learning policy option; give it to personalizer train as %s", arg, how)
			}
			return nil, fmt.Errorf("option %s is not supported", arg)
		}
		switch {
		case !opt.value && hasValue:
			return nil, fmt.Errorf("option --%s takes no value", name)
		case opt.value && !hasValue:
			if i+1 >= len(fields) {
				return nil, fmt.Errorf("option %s needs a value", arg)
			}
			i++
			value = fields[i]
		}
		// VW reads an option given twice only if both values agree, except
		// for a few options where the first one wins.
		if prev, ok := st.values[name]; ok && !opt.repeatable {
			if prev != value && !overridable[name] {
				return nil, fmt.Errorf("option --%s is given twice with different values %q and %q", name, prev, value)
			}
			continue
		}
		st.given[name] = true
		st.values[name] = value
		var err error
		switch name {
		case "quadratic":
			st.quadratic = append(st.quadratic, value)
		case "cubic":
			st.cubic = append(st.cubic, value)
		case "interactions":
			st.interactions = append(st.interactions, value)
		case "ignore":
			st.ignore = append(st.ignore, value)
		case "ignore_linear":
			st.ignoreLinear = append(st.ignoreLinear, value)
		case "first":
			err = count(func(*Policy) *uint64 { return &st.first }, 0, math.MaxUint64).apply(p, value)
		case "bag":
			err = count(func(*Policy) *uint64 { return &st.bag }, 1, maxWidth/2).apply(p, value)
		case "sgd":
			st.sgd = true
		default:
			if opt.apply != nil {
				err = opt.apply(p, value)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("--%s %w", name, err)
		}
	}
	if !st.given["cb_explore_adf"] && !p.ccb {
		return nil, errors.New("--cb_explore_adf is required (--ccb_explore_adf for multi-slot events)")
	}
	if err := p.checkCCB(&st); err != nil {
		return nil, err
	}
	if err := p.resolveExplore(&st); err != nil {
		return nil, err
	}
	p.resolveUpdate(&st)
	if err := p.resolveFeatures(&st); err != nil {
		return nil, err
	}
	p.shape = shape(p)
	return p, nil
}

// resolveExplore picks the exploration algorithm and its defaults, as the
// cb_explore_adf_* setup functions do: epsilon defaults to 0.05 for
// epsilon-greedy and to 0 for the others.
func (p *Policy) resolveExplore(st *parsed) error {
	var chosen []string
	for _, name := range []string{"first", "bag", "squarecb", "softmax"} {
		if st.given[name] {
			chosen = append(chosen, "--"+name)
		}
	}
	if len(chosen) > 1 {
		return fmt.Errorf("%s cannot be combined: choose one exploration algorithm", strings.Join(chosen, " and "))
	}
	only := func(opt, with string) error {
		if st.given[opt] && !st.given[with] {
			return fmt.Errorf("--%s is only used with --%s", opt, with)
		}
		return nil
	}
	for _, o := range [][2]string{{"lambda", "softmax"}, {"gamma_scale", "squarecb"}, {"gamma_exponent", "squarecb"}, {"greedify", "bag"}} {
		if err := only(o[0], o[1]); err != nil {
			return err
		}
	}
	switch {
	case st.given["first"]:
		p.explore, p.tau = exploreFirst, st.first
	case st.given["bag"]:
		p.explore, p.bag = exploreBag, int(st.bag)
	case st.given["squarecb"]:
		p.explore = exploreSquareCB
		if p.cbType != cbMTR {
			return fmt.Errorf("--squarecb supports only --cb_type mtr, not %s", p.cbType)
		}
	case st.given["softmax"]:
		p.explore = exploreSoftmax
		p.lambda = float32(math.Abs(float64(p.lambda))) // VW uses |lambda|: scores are costs
	default:
		p.explore = exploreGreedy
		if !st.given["epsilon"] {
			p.epsilon = 0.05
		}
	}
	if st.given["first_only"] && p.explore != exploreGreedy && p.explore != exploreBag {
		return errors.New("--first_only is only used with epsilon-greedy or --bag exploration")
	}
	if p.bag == 0 {
		p.bag = 1
	}
	return nil
}

// resolveUpdate applies gd_setup's rules: adaptive, normalized and invariant
// are all on unless one of --sgd, --adaptive, --normalized or --invariant is
// given, in which case only the named ones are, the learning rate defaults
// to 10 unless both adaptive and normalized, and plain SGD starts its
// example counter t at 1.
func (p *Policy) resolveUpdate(st *parsed) {
	if st.sgd || p.adaptive || p.normalized || p.invariant {
		if !st.given["learning_rate"] && !(p.adaptive && p.normalized) {
			p.eta = 10
		}
		if !p.adaptive && !p.normalized {
			if !st.given["initial_t"] {
				p.initialT, p.sgdDefaultT = 1, true
			}
			p.eta *= powf(p.initialT, p.powerT)
		}
	} else {
		p.adaptive, p.normalized, p.invariant = true, true, true
	}
	p.sqrtRate = p.powerT == 0.5
}

// resolveFeatures decodes the namespace arguments and prepares the
// interaction terms as parse_feature_tweaks does.
func (p *Policy) resolveFeatures(st *parsed) error {
	for _, v := range st.ignore {
		for _, c := range []byte(decodeInlineHex(v)) {
			p.ignore[c] = true
		}
	}
	for _, v := range st.ignoreLinear {
		for _, c := range []byte(decodeInlineHex(v)) {
			p.ignoreLinear[c] = true
			p.anyIgnoreLin = true
		}
	}
	var terms [][]byte
	add := func(opt string, vs []string, ok func(n int) bool, want string) error {
		for _, v := range vs {
			t := []byte(decodeInlineHex(v))
			if !ok(len(t)) {
				return fmt.Errorf("--%s %q: %s", opt, v, want)
			}
			terms = append(terms, t)
		}
		return nil
	}
	if err := add("quadratic", st.quadratic, func(n int) bool { return n == 2 }, "want two namespace characters, ':' for any"); err != nil {
		return err
	}
	if err := add("cubic", st.cubic, func(n int) bool { return n == 3 }, "want three namespace characters, ':' for any"); err != nil {
		return err
	}
	maxLen := maxTermLength
	if p.ccb {
		maxLen-- // the slot index is appended to every term
	}
	if err := add("interactions", st.interactions, func(n int) bool { return n >= 2 && n <= maxLen },
		fmt.Sprintf("want 2 to %d namespace characters, ':' for any", maxLen)); err != nil {
		return err
	}
	if p.ccb {
		terms = ccbTerms(terms)
	}
	p.terms = sortTerms(terms)
	for _, t := range p.terms {
		p.wildcard = p.wildcard || t.hasWildcard()
	}
	return nil
}

// decodeInlineHex replaces \xHH escapes, as VW does for namespace arguments
// (so that -q '\x20A' names the default namespace).
func decodeInlineHex(s string) string {
	if len(s) < 4 {
		return s
	}
	var b strings.Builder
	i := 0
	for ; i < len(s)-3; i++ {
		if s[i] == '\\' && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	b.WriteString(s[i:])
	return b.String()
}

// splitOption splits "--name=value", "--name", "-x" and "-xVALUE" into the
// option name and an attached value.
func splitOption(arg string) (name, value string, hasValue bool) {
	switch {
	case strings.HasPrefix(arg, "--"):
		name, value, hasValue = strings.Cut(arg[2:], "=")
		return name, value, hasValue
	case strings.HasPrefix(arg, "-") && len(arg) >= 2:
		if len(arg) > 2 {
			return arg[1:2], arg[2:], true
		}
		return arg[1:], "", false
	}
	return "", "", false
}

// String returns the command line p was parsed from.
func (p *Policy) String() string { return p.args }

// Epsilon returns the exploration probability: with epsilon-greedy each
// action gets Epsilon/K and the best action(s) share the rest; the other
// algorithms use it as a floor, as VW's enforce_minimum_probability.
func (p *Policy) Epsilon() float32 { return p.epsilon }

// CBType returns the --cb_type: "mtr", "ips" or "dr".
func (p *Policy) CBType() string { return p.cbType }

// cbWidth is the number of models cb_adf keeps per feature: dr keeps a cost
// model besides the policy.
func (p *Policy) cbWidth() uint64 {
	if p.cbType == cbDR {
		return 2
	}
	return 1
}

// WeightBytes is the memory a model of the policy takes for its weights
// (16 bytes per slot of the 2^-b table), what bounds its size.
func (p *Policy) WeightBytes() int64 { return 16 << p.bits }

// width is VW's total feature width: the models --bag and the cb_type keep
// per feature.
func (p *Policy) width() uint64 { return uint64(p.bag) * p.cbWidth() }
