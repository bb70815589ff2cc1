package server

import (
	"fmt"
	"math"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Limits bound what one request may carry.
type Limits struct {
	MaxActions      int // per Rank; Personalizer's limit is 50
	MaxIDLength     int // action and event ids; Personalizer's limit is 256
	MaxFeatureBytes int // names and string values of one request, summed
}

// DefaultLimits are Personalizer's limits and a 1 MiB feature budget.
var DefaultLimits = Limits{MaxActions: 50, MaxIDLength: 256, MaxFeatureBytes: 1 << 20}

// invalidError is a request that breaks a rule; Field names the offending
// field the way a client spells it in its request.
type invalidError struct {
	Field  string
	Reason string
}

func (e *invalidError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &invalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// validateRank checks a RankRequest and returns, for each action, whether
// it is excluded.
func (l Limits) validateRank(req *personalizerv1.RankRequest, excluded []bool) ([]bool, error) {
	actions := req.GetActions()
	if n := len(actions); n < 1 || n > l.MaxActions {
		return nil, invalid("actions", "action count should be between 1 and %d, got %d", l.MaxActions, n)
	}
	if req.EventId != nil {
		if err := l.validateEventID("event_id", req.GetEventId()); err != nil {
			return nil, err
		}
	}
	budget := l.MaxFeatureBytes
	if err := l.validateNamespaces(func() string { return "context_features" }, req.GetContextFeatures(), &budget); err != nil {
		return nil, err
	}
	for i, a := range actions {
		id := a.GetId()
		if id == "" {
			return nil, invalid(fmt.Sprintf("actions[%d].id", i), "action ids must not be empty")
		}
		if len(id) > l.MaxIDLength {
			return nil, invalid(fmt.Sprintf("actions[%d].id", i), "longer than %d bytes", l.MaxIDLength)
		}
		for j := range i {
			if actions[j].GetId() == id {
				return nil, invalid(fmt.Sprintf("actions[%d].id", i), "duplicate action id %q (also actions[%d])", id, j)
			}
		}
		if err := l.validateNamespaces(func() string { return fmt.Sprintf("actions[%d].features", i) }, a.GetFeatures(), &budget); err != nil {
			return nil, err
		}
	}
	excluded = append(excluded[:0], make([]bool, len(actions))...)
	eligible := len(actions)
	for i, id := range req.GetExcludedActions() {
		k := -1
		for j, a := range actions {
			if a.GetId() == id {
				k = j
				break
			}
		}
		if k < 0 {
			return nil, invalid(fmt.Sprintf("excluded_actions[%d]", i), "no action has id %q", id)
		}
		if !excluded[k] {
			excluded[k] = true
			eligible--
		}
	}
	if eligible == 0 {
		return nil, invalid("excluded_actions", "every action is excluded")
	}
	return excluded, nil
}

// validateNamespaces checks names and values and charges their bytes to
// budget. Field paths are formatted only on error: this runs for every
// feature of every Rank.
func (l Limits) validateNamespaces(field func() string, nss []*personalizerv1.Namespace, budget *int) error {
	for i, ns := range nss {
		name := ns.GetName()
		if len(name) > 0 && (name[0] == '_' || name[0] <= ' ') {
			return invalid(fmt.Sprintf("%s[%d].name", field(), i), "namespace names must not start with '_', a space or a control character")
		}
		*budget -= len(name)
		for j, f := range ns.GetFeatures() {
			at := func(suffix string) string { return fmt.Sprintf("%s[%d].features[%d]%s", field(), i, j, suffix) }
			fname := f.GetName()
			switch {
			case fname == "":
				return invalid(at(".name"), "feature names must not be empty")
			case fname[0] == '_':
				return invalid(at(".name"), "feature names must not start with '_'")
			}
			*budget -= len(fname) + 8
			switch v := f.GetValue().(type) {
			case nil:
				return invalid(at(""), "feature %q has no value", fname)
			case *personalizerv1.Feature_NumberValue:
				if math.IsNaN(v.NumberValue) || math.IsInf(v.NumberValue, 0) {
					return invalid(at(".number_value"), "must be a finite number, got %v", v.NumberValue)
				}
			case *personalizerv1.Feature_StringValue:
				*budget -= len(v.StringValue)
			}
			if *budget < 0 {
				return invalid("request", "features exceed the limit of %d bytes", l.MaxFeatureBytes)
			}
		}
	}
	return nil
}

func (l Limits) validateEventID(field, id string) error {
	switch {
	case id == "":
		return invalid(field, "event id should be non-empty or absent")
	case len(id) > l.MaxIDLength:
		return invalid(field, "longer than %d bytes", l.MaxIDLength)
	}
	return nil
}

func (l Limits) validateReward(req *personalizerv1.RewardRequest) error {
	if err := l.validateEventID("event_id", req.GetEventId()); err != nil {
		return err
	}
	v := req.GetValue()
	if math.IsNaN(float64(v)) || v < -1 || v > 1 {
		return invalid("value", "reward must be a number between -1 and 1, got %v", v)
	}
	return nil
}
