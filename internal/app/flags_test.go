package app

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// commands are every command that parses flags.
var commands = []string{"dev", "broker", "server", "joiner", "learner", "health", "simulate", "train", "evaluate", "bench", "keygen"}

// TestFlagMistakes gives every command a flag it does not have, and one a
// bad value: each fails with one line naming the command and the mistake
// and saying where the flags are, not the whole usage, and exits 1.
func TestFlagMistakes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"dev", "--reward-wait", "soon"}, `personalizer dev: invalid value "soon" for flag -reward-wait: parse error (run 'personalizer dev -h' for the flags)`},
		{[]string{"simulate", "--addr"}, `personalizer simulate: flag needs an argument: -addr (run 'personalizer simulate -h' for the flags)`},
	}
	for _, cmd := range commands {
		tests = append(tests, struct {
			args []string
			want string
		}{[]string{cmd, "--nope"}, "personalizer " + cmd + ": flag provided but not defined: -nope (run 'personalizer " + cmd + " -h' for the flags)"})
	}
	for _, tt := range tests {
		var stdout, stderr, reported bytes.Buffer
		err := run(context.Background(), tt.args, &stdout, &stderr, noEnv)
		code := report(&reported, err)
		if code != 1 || reported.String() != tt.want+"\n" || stdout.Len() != 0 || stderr.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q, then %q, stdout %q; want exit 1 and stderr %q", tt.args, code, stderr.String(), reported.String(), stdout.String(), tt.want+"\n")
		}
	}
}

// TestFlagHelp checks that -h still prints every flag of the command, and
// exits 0.
func TestFlagHelp(t *testing.T) {
	t.Parallel()
	someFlag := map[string]string{"dev": "-reward-wait", "broker": "-broker-addr", "server": "-learner-addr", "joiner": "-group",
		"learner": "-model-export-frequency", "health": "-service", "simulate": "-events", "train": "-dsjson", "evaluate": "-dsjson", "bench": "-concurrency", "keygen": "-loop"}
	for _, cmd := range commands {
		var stdout, stderr, reported bytes.Buffer
		err := run(context.Background(), []string{cmd, "-h"}, &stdout, &stderr, noEnv)
		if !errors.Is(err, flag.ErrHelp) || report(&reported, err) != 0 || reported.Len() != 0 {
			t.Errorf("%s -h: %v, reported %q; want flag.ErrHelp, exit 0, nothing more", cmd, err, reported.String())
		}
		if out := stderr.String(); !strings.Contains(out, "  "+someFlag[cmd]+" ") || strings.Count(out, "\n  -") < 2 {
			t.Errorf("%s -h printed %q, want the flags, %s among them", cmd, out, someFlag[cmd])
		}
	}
}
