package decide

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/loop"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Limits bound what one request may carry.
type Limits struct {
	MaxActions      int // per Rank; Personalizer's limit is 50
	MaxIDLength     int // action and event ids; Personalizer's limit is 256
	MaxFeatureBytes int // names and string values of one request, summed
	MaxFeatures     int // context and action features of one request, counted
	// MaxInteractionFeatures bounds the features the policy makes of one
	// Rank to score it, interactions included, summed over its actions
	// (the count VW reports): quadratic interactions make n(n+1)/2
	// features of a namespace of n, so this, not MaxFeatures, bounds
	// what scoring and learning an event cost.
	MaxInteractionFeatures int
}

// DefaultLimits are Personalizer's limits, a 1 MiB feature budget, 10000
// features (200 for each of 50 actions) and 2 million features scored.
var DefaultLimits = Limits{MaxActions: 50, MaxIDLength: 256, MaxFeatureBytes: 1 << 20, MaxFeatures: 10000, MaxInteractionFeatures: 2_000_000}

// RegisterFlags registers the limits' flags, with [DefaultLimits] as defaults.
func (l *Limits) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.IntVar(&l.MaxActions, prefix+"max-actions", DefaultLimits.MaxActions, "most actions in one Rank")
	fs.IntVar(&l.MaxIDLength, prefix+"max-id-length", DefaultLimits.MaxIDLength, "longest action or event id, in bytes")
	fs.IntVar(&l.MaxFeatureBytes, prefix+"max-feature-bytes", DefaultLimits.MaxFeatureBytes, "most bytes of feature names and string values in one Rank")
	fs.IntVar(&l.MaxFeatures, prefix+"max-features", DefaultLimits.MaxFeatures, "most context and action features in one Rank")
	fs.IntVar(&l.MaxInteractionFeatures, prefix+"max-interaction-features", DefaultLimits.MaxInteractionFeatures, "most features the policy makes of one Rank to score it, interactions included, summed over its actions")
}

// Validate checks that every limit is positive.
func (l Limits) Validate() error {
	if l.MaxActions < 1 || l.MaxIDLength < 1 || l.MaxFeatureBytes < 1 || l.MaxFeatures < 1 || l.MaxInteractionFeatures < 1 {
		return errors.New("limits: --max-actions, --max-id-length, --max-feature-bytes, --max-features and --max-interaction-features must be at least 1")
	}
	return nil
}

// Over returns l with the limits a loop sets (its non-zero ones) in place.
func (l Limits) Over(o loop.Limits) Limits {
	pick := func(own, loop int) int {
		if loop > 0 {
			return loop
		}
		return own
	}
	return Limits{
		MaxActions:             pick(l.MaxActions, o.MaxActions),
		MaxIDLength:            pick(l.MaxIDLength, o.MaxIDLength),
		MaxFeatureBytes:        pick(l.MaxFeatureBytes, o.MaxFeatureBytes),
		MaxFeatures:            pick(l.MaxFeatures, o.MaxFeatures),
		MaxInteractionFeatures: pick(l.MaxInteractionFeatures, o.MaxInteractionFeatures),
	}
}

// featureBudget is what is left of a request's feature limits.
type featureBudget struct{ bytes, features int }

// InvalidError is a request that breaks a rule; Field names the offending
// field the way a client spells it in its request. Both APIs answer it as
// a caller's error: gRPC InvalidArgument, REST 400.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

// GRPCStatus is e as gRPC answers it: InvalidArgument, with the field in
// a BadRequest detail.
func (e *InvalidError) GRPCStatus() *status.Status {
	st := status.New(codes.InvalidArgument, e.Error())
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: e.Field, Description: e.Reason},
	}}); err == nil {
		st = d
	}
	return st
}

// Invalid returns an [*InvalidError] of field, its reason formatted.
func Invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

func invalid(field, format string, args ...any) error { return Invalid(field, format, args...) }

// ValidateRank checks a RankRequest and returns, for each action, whether
// it is excluded (in excluded, reused).
func (l Limits) ValidateRank(req *personalizerv1.RankRequest, excluded []bool) ([]bool, error) {
	if _, err := l.validateActions(req.GetActions(), req.EventId, req.GetContextFeatures()); err != nil {
		return nil, err
	}
	excluded, eligible, unknown := features.Excluded(excluded, req.GetActions(), req.GetExcludedActions())
	if unknown >= 0 {
		return nil, invalid(fmt.Sprintf("excluded_actions[%d]", unknown), "no action has id %q", req.GetExcludedActions()[unknown])
	}
	if eligible == 0 {
		return nil, invalid("excluded_actions", "every action is excluded")
	}
	return excluded, nil
}

// validateActions checks what Rank and MultiSlotRank requests share: the
// actions, the event id and the context features. It returns what is
// left of the request's feature budget.
func (l Limits) validateActions(actions []*personalizerv1.Action, eventID *string, context []*personalizerv1.Namespace) (featureBudget, error) {
	budget := featureBudget{bytes: l.MaxFeatureBytes, features: l.MaxFeatures}
	if n := len(actions); n < 1 || n > l.MaxActions {
		return budget, invalid("actions", "action count should be between 1 and %d, got %d", l.MaxActions, n)
	}
	if eventID != nil {
		if err := l.ValidateEventID("event_id", *eventID); err != nil {
			return budget, err
		}
	}
	if err := l.validateNamespaces(func() string { return "context_features" }, context, &budget); err != nil {
		return budget, err
	}
	for i, a := range actions {
		id := a.GetId()
		if id == "" {
			return budget, invalid(fmt.Sprintf("actions[%d].id", i), "action ids must not be empty")
		}
		if len(id) > l.MaxIDLength {
			return budget, invalid(fmt.Sprintf("actions[%d].id", i), "longer than %d bytes", l.MaxIDLength)
		}
		for j := range i {
			if actions[j].GetId() == id {
				return budget, invalid(fmt.Sprintf("actions[%d].id", i), "duplicate action id %q (also actions[%d])", id, j)
			}
		}
		if err := l.validateNamespaces(func() string { return fmt.Sprintf("actions[%d].features", i) }, a.GetFeatures(), &budget); err != nil {
			return budget, err
		}
	}
	return budget, nil
}

// ValidateMultiSlotRank checks a MultiSlotRankRequest and returns, for
// each slot, which actions it excludes (in excluded, reused). The slot
// rules and their messages are Personalizer's.
func (l Limits) ValidateMultiSlotRank(req *personalizerv1.MultiSlotRankRequest, excluded [][]bool) ([][]bool, error) {
	actions, slots := req.GetActions(), req.GetSlots()
	budget, err := l.validateActions(actions, req.EventId, req.GetContextFeatures())
	if err != nil {
		return nil, err
	}
	switch n := len(slots); {
	case n == 0:
		return nil, invalid("slots", "At lease one slot must be defined in a multi-slot rank request.") // sic, Personalizer's
	case n > len(actions) || n > l.MaxActions:
		return nil, invalid("slots", "Slots count should be between 1 and the number of actions (%d), got %d.", len(actions), n)
	}
	for k, s := range slots {
		id := s.GetId()
		if id == "" || len(id) > l.MaxIDLength {
			return nil, invalid(fmt.Sprintf("slots[%d].id", k), "All slot's must contain unique, non empty ID (at most %d bytes).", l.MaxIDLength)
		}
		for j := range k {
			if slots[j].GetId() == id {
				return nil, invalid(fmt.Sprintf("slots[%d].id", k), "All slot's must contain unique, non empty ID: %q is also slots[%d]'s.", id, j)
			}
		}
		if err := l.validateNamespaces(func() string { return fmt.Sprintf("slots[%d].features", k) }, s.GetFeatures(), &budget); err != nil {
			return nil, err
		}
	}
	excluded, k, unknown := features.SlotExcluded(excluded, actions, slots)
	if k >= 0 {
		return nil, invalid(fmt.Sprintf("slots[%d].excluded_actions[%d]", k, unknown), "All excluded action ID's must have corresponding action ID: no action has id %q.", slots[k].GetExcludedActions()[unknown])
	}
	for k, s := range slots {
		if !slices.Contains(excluded[k], false) {
			return nil, invalid(fmt.Sprintf("slots[%d].excluded_actions", k), "Slot %q excludes every action.", s.GetId())
		}
		b := s.GetBaselineAction()
		i := slices.IndexFunc(actions, func(a *personalizerv1.Action) bool { return a.GetId() == b })
		unique := !slices.ContainsFunc(slots[:k], func(o *personalizerv1.Slot) bool { return o.GetBaselineAction() == b })
		if i < 0 || !unique {
			return nil, invalid(fmt.Sprintf("slots[%d].baseline_action", k), "Each slot must contain a unique BaselineAction with an ID corresponding to an element of Actions, got %q.", b)
		}
		if excluded[k][i] {
			return nil, invalid(fmt.Sprintf("slots[%d].baseline_action", k), "BaselineAction cannot be part of ExcludedActions (%q).", b)
		}
	}
	return excluded, nil
}

// validateNamespaces checks names and values and charges their bytes to
// budget. Field paths are formatted only on error: this runs for every
// feature of every Rank.
func (l Limits) validateNamespaces(field func() string, nss []*personalizerv1.Namespace, budget *featureBudget) error {
	for i, ns := range nss {
		name := ns.GetName()
		if reason := NamespaceNameProblem(name); reason != "" {
			return invalid(fmt.Sprintf("%s[%d].name", field(), i), "%s", reason)
		}
		budget.bytes -= len(name)
		for j, f := range ns.GetFeatures() {
			at := func(suffix string) string { return fmt.Sprintf("%s[%d].features[%d]%s", field(), i, j, suffix) }
			fname := f.GetName()
			if reason := FeatureNameProblem(fname); reason != "" {
				return invalid(at(".name"), "%s", reason)
			}
			budget.bytes -= len(fname) + 8
			budget.features--
			switch v := f.GetValue().(type) {
			case nil:
				return invalid(at(""), "feature %q has no value", fname)
			case *personalizerv1.Feature_NumberValue:
				if math.IsNaN(v.NumberValue) || math.IsInf(v.NumberValue, 0) {
					return invalid(at(".number_value"), "must be a finite number, got %v", v.NumberValue)
				}
			case *personalizerv1.Feature_StringValue:
				budget.bytes -= len(v.StringValue)
			}
			if budget.bytes < 0 {
				return invalid("request", "features exceed the limit of %d bytes", l.MaxFeatureBytes)
			}
			if budget.features < 0 {
				return invalid("request", "more than the limit of %d features", l.MaxFeatures)
			}
		}
	}
	return nil
}

// NamespaceNameProblem says what is wrong with a namespace name, or "".
// The empty name is the default namespace.
func NamespaceNameProblem(name string) string {
	if len(name) > 0 && (name[0] == '_' || name[0] <= ' ') {
		return "namespace names must not start with '_', a space or a control character"
	}
	return ""
}

// FeatureNameProblem says what is wrong with a feature name, or "".
func FeatureNameProblem(name string) string {
	switch {
	case name == "":
		return "feature names must not be empty"
	case name[0] == '_':
		return "feature names must not start with '_'"
	}
	return ""
}

// ValidateEventID checks an event id; field names it in the error.
func (l Limits) ValidateEventID(field, id string) error {
	switch {
	case id == "":
		return invalid(field, "event id should be non-empty or absent")
	case len(id) > l.MaxIDLength:
		return invalid(field, "longer than %d bytes", l.MaxIDLength)
	case !utf8.ValidString(id): // a REST path can carry any bytes (%FF); the record would not decode
		return invalid(field, "event id must be valid UTF-8")
	}
	return nil
}
