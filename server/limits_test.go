package server

import (
	"context"
	"flag"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/status"
)

func TestLimitsFlags(t *testing.T) {
	t.Parallel()
	var l Limits
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l.RegisterFlags(fs, "")
	if l != DefaultLimits {
		t.Errorf("defaults %+v, want %+v", l, DefaultLimits)
	}
	if err := fs.Parse([]string{"--max-actions", "3", "--max-features", "2", "--max-id-length", "4", "--max-feature-bytes", "100"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, _ := modeServer(t, 0)
	srv.cfg.Limits = l
	srv.setConfig(srv.def, srv.LoopConfig()) // as New would have
	req := validRank()
	req.Actions = actions(4)
	_, err := srv.Rank(context.Background(), req)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "between 1 and 3") {
		t.Errorf("4 actions with --max-actions 3: %v", err)
	}
	req = validRank()
	req.ContextFeatures[0].Features = append(req.ContextFeatures[0].Features, num("a", 1), num("b", 2))
	_, err = srv.Rank(context.Background(), req)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "limit of 2 features") {
		t.Errorf("6 features with --max-features 2: %v", err)
	}
	l.MaxFeatures = 0
	if err := l.Validate(); err == nil {
		t.Error("a zero limit validated")
	}
}
