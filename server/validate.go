package server

import (
	"math"

	"github.com/open-personalizer/personalizer/internal/decide"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Limits bound what one request may carry; see [decide.Limits], where
// Rank's validation lives so that local inference applies it too.
type Limits = decide.Limits

// DefaultLimits are Personalizer's limits; see [decide.DefaultLimits].
var DefaultLimits = decide.DefaultLimits

// invalidError is a request that breaks a rule.
type invalidError = decide.InvalidError

func invalid(field, format string, args ...any) error { return decide.Invalid(field, format, args...) }

func namespaceNameProblem(name string) string { return decide.NamespaceNameProblem(name) }

func featureNameProblem(name string) string { return decide.FeatureNameProblem(name) }

func validateReward(l Limits, req *personalizerv1.RewardRequest) error {
	if err := validateOutcomeEventID(l, "event_id", req.GetEventId()); err != nil {
		return err
	}
	v := req.GetValue()
	if math.IsNaN(float64(v)) || v < -1 || v > 1 {
		return invalid("value", "reward must be a number between -1 and 1, got %v", v)
	}
	return nil
}
