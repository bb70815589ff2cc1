package server

import (
	"context"
	"testing"

	"google.golang.org/grpc/status"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// TestOutcomeEventIDRequired: Reward and Activate without an event id say
// it is required; Rank's event id is optional, but not empty when present.
func TestOutcomeEventIDRequired(t *testing.T) {
	t.Parallel()
	client, _, _ := newTestServer(t)
	ctx := context.Background()
	_, rewardErr := client.Reward(ctx, &personalizerv1.RewardRequest{Value: 1})
	_, activateErr := client.Activate(ctx, &personalizerv1.ActivateRequest{})
	rank := validRank()
	rank.EventId = new(string)
	_, rankErr := client.Rank(ctx, rank)
	for _, tt := range []struct {
		call string
		err  error
		want string
	}{
		{"Reward", rewardErr, "event_id: event id is required"},
		{"Activate", activateErr, "event_id: event id is required"},
		{"Rank", rankErr, "event_id: event id should be non-empty or absent"},
	} {
		assertInvalid(t, tt.err, "event_id")
		if msg := statusMessage(tt.err); msg != tt.want {
			t.Errorf("%s: %q, want %q", tt.call, msg, tt.want)
		}
	}
}

func statusMessage(err error) string { return status.Convert(err).Message() }
