package client

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/internal/decide"
)

// TestInvalidEntry finds the entry a LogRanks InvalidArgument names.
func TestInvalidEntry(t *testing.T) {
	t.Parallel()
	named := func(field string) error {
		var inv *decide.InvalidError
		errors.As(decide.Invalid(field, "bad"), &inv)
		return inv.GRPCStatus().Err()
	}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"an entry's request", named("entries[3].request.actions[0].id"), 3},
		{"an entry's ranking", named("entries[0].ranking[2]"), 0},
		{"past the batch", named("entries[9].ranking"), -1},
		{"no entry", named("request"), -1},
		{"no details", status.Error(codes.InvalidArgument, "entries[1]: bad"), -1},
	}
	for _, tt := range tests {
		if got := invalidEntry(tt.err, 5); got != tt.want {
			t.Errorf("%s: entry %d, want %d", tt.name, got, tt.want)
		}
	}
}
