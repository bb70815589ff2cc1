package bandit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// DefaultPolicy is Azure Personalizer's default learning policy.
const DefaultPolicy = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"

// CB types: how a logged bandit label becomes regression examples.
const (
	cbMTR = "mtr" // learn the chosen action's cost, importance weighted
	cbIPS = "ips" // learn cost/p for the chosen action and 0 for the others
	cbDR  = "dr"  // doubly robust: a cost model plus an IPS-corrected policy model
)

// maxBits caps -b: the weights take 16<<b bytes.
const maxBits = 28

// Policy is a parsed VW command line for --cb_explore_adf. It is immutable.
type Policy struct {
	args         string
	epsilon      float32
	cbType       string
	eta          float32
	powerT       float32
	initialT     float32
	bits         uint
	interactions [][2]byte // -q terms in command-line order; ':' is the wildcard
}

// ParsePolicy parses a VW command line. Options not given take VW's
// defaults. Unknown or unsupported options are errors.
func ParsePolicy(args string) (*Policy, error) {
	p := &Policy{args: args, epsilon: 0.05, cbType: cbMTR, eta: 0.5, powerT: 0.5, bits: 18}
	explore := false
	seen := map[string]bool{}
	fields := strings.Fields(args)
	for i := 0; i < len(fields); i++ {
		name, value, hasValue := splitOption(fields[i])
		if name == "" {
			return nil, fmt.Errorf("policy %q: unexpected argument %q", args, fields[i])
		}
		canonical := name
		switch name {
		case "l":
			canonical = "learning_rate"
		case "b":
			canonical = "bit_precision"
		case "q", "quadratic":
			canonical = "" // repeatable
		}
		if canonical != "" && seen[canonical] {
			return nil, fmt.Errorf("policy %q: option %s is given twice", args, fields[i])
		}
		seen[canonical] = true
		needValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(fields) {
				return "", fmt.Errorf("option %s needs a value", fields[i])
			}
			i++
			return fields[i], nil
		}
		var err error
		var v string
		switch name {
		case "cb_explore_adf", "dsjson", "json", "quiet":
			// --dsjson, --json and --quiet are input and output settings:
			// they do not change what is learned.
			explore = explore || name == "cb_explore_adf"
			if hasValue {
				err = fmt.Errorf("option --%s takes no value", name)
			}
		case "epsilon":
			if v, err = needValue(); err == nil {
				p.epsilon, err = parseFloat32(name, v)
			}
			if err == nil && !(p.epsilon >= 0 && p.epsilon <= 1) {
				err = fmt.Errorf("--epsilon %v is not in [0, 1]", p.epsilon)
			}
		case "cb_type":
			if v, err = needValue(); err == nil {
				switch v {
				case cbMTR, cbIPS, cbDR:
					p.cbType = v
				default:
					err = fmt.Errorf("--cb_type %q is not supported (want mtr, ips or dr)", v)
				}
			}
		case "q", "quadratic":
			if v, err = needValue(); err == nil {
				if len(v) != 2 || strings.Contains(v, `\`) {
					err = fmt.Errorf("-q %q: want two namespace characters, ':' for any", v)
				} else {
					p.interactions = append(p.interactions, [2]byte{v[0], v[1]})
				}
			}
		case "l", "learning_rate":
			if v, err = needValue(); err == nil {
				p.eta, err = parseFloat32(name, v)
			}
			if err == nil && !(p.eta > 0) {
				err = fmt.Errorf("--learning_rate %v must be positive", p.eta)
			}
		case "power_t":
			if v, err = needValue(); err == nil {
				p.powerT, err = parseFloat32(name, v)
			}
			if err == nil && p.powerT < 0 {
				err = fmt.Errorf("--power_t %v must not be negative", p.powerT)
			}
		case "initial_t":
			if v, err = needValue(); err == nil {
				p.initialT, err = parseFloat32(name, v)
			}
			if err == nil && p.initialT < 0 {
				err = fmt.Errorf("--initial_t %v must not be negative", p.initialT)
			}
		case "b", "bit_precision":
			if v, err = needValue(); err == nil {
				var b uint64
				b, err = strconv.ParseUint(v, 10, 8)
				if err != nil || b < 1 || b > maxBits {
					err = fmt.Errorf("-b %q: want a number of bits from 1 to %d", v, maxBits)
				}
				p.bits = uint(b)
			}
		default:
			err = fmt.Errorf("option %s is not supported", fields[i])
		}
		if err != nil {
			return nil, fmt.Errorf("policy %q: %w", args, err)
		}
	}
	if !explore {
		return nil, fmt.Errorf("policy %q: --cb_explore_adf is required", args)
	}
	return p, nil
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

func parseFloat32(name, v string) (float32, error) {
	f, err := strconv.ParseFloat(v, 32)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("--%s %q is not a number", name, v)
	}
	return float32(f), nil
}

// String returns the command line p was parsed from.
func (p *Policy) String() string { return p.args }

// Epsilon returns the exploration probability: each action gets Epsilon/K,
// the best action(s) share the rest.
func (p *Policy) Epsilon() float32 { return p.epsilon }

// CBType returns the --cb_type: "mtr", "ips" or "dr".
func (p *Policy) CBType() string { return p.cbType }

// width is VW's total feature width: dr keeps two models per feature.
func (p *Policy) width() uint64 {
	if p.cbType == cbDR {
		return 2
	}
	return 1
}
