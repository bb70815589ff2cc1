package app

import (
	"bytes"
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	t.Parallel()
	vcs := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"release", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.0"}, Settings: vcs("vcs", "git", "vcs.revision", rev, "vcs.modified", "false")},
			"personalizer v1.2.0, revision 0123456789ab, go1.26.0"},
		{"modified", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.0.0-20260101000000-0123456789ab+dirty"}, Settings: vcs("vcs.revision", rev, "vcs.modified", "true")},
			"personalizer v0.0.0-20260101000000-0123456789ab+dirty, revision 0123456789ab (modified), go1.26.0"},
		{"devel", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("vcs.revision", rev, "vcs.modified", "true")},
			"personalizer (devel), revision 0123456789ab (modified), go1.26.8"},
		{"no vcs", &debug.BuildInfo{GoVersion: "go1.26.8"}, "personalizer (devel), revision unknown, go1.26.8"},
		{"no build information", nil, "personalizer (devel), revision unknown, Go version unknown"},
	}
	for _, tt := range tests {
		if got := versionLine(tt.bi); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestVersionCommand runs `personalizer version` and `--version`: one line
// on stdout, for this binary, and nothing on stderr.
func TestVersionCommand(t *testing.T) {
	t.Parallel()
	bi, _ := debug.ReadBuildInfo()
	want := versionLine(bi) + "\n"
	for _, arg := range []string{"version", "--version", "-version"} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{arg}, &stdout, &stderr, noEnv); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		if got := stdout.String(); got != want || !strings.HasSuffix(got, ", "+runtime.Version()+"\n") || stderr.Len() != 0 {
			t.Errorf("%s: stdout %q, stderr %q; want %q", arg, got, stderr.String(), want)
		}
	}
}
