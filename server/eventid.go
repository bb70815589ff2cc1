package server

// validateOutcomeEventID checks the event id of a Reward or Activate,
// which must name the event: unlike Rank's, it is not optional.
func validateOutcomeEventID(l Limits, field, id string) error {
	if id == "" {
		return invalid(field, "event id is required")
	}
	return l.ValidateEventID(field, id)
}
