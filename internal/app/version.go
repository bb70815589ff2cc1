package app

import (
	"fmt"
	"io"
	"runtime/debug"
)

// runVersion is `personalizer version` (or --version): one line saying
// which build this is.
func runVersion(stdout io.Writer) error {
	bi, _ := debug.ReadBuildInfo() // nil when there is none
	_, err := fmt.Fprintln(stdout, versionLine(bi))
	return err
}

// versionLine describes a build: its module version ("(devel)" when it
// has none), the VCS revision it was built from (12 hex digits) and
// whether the work tree had changes, and the Go version:
//
//	personalizer v1.2.0, revision 0123456789ab, go1.26.0
//	personalizer (devel), revision 0123456789ab (modified), go1.26.0
//
// bi is nil for a binary built without build information.
func versionLine(bi *debug.BuildInfo) string {
	if bi == nil {
		return "personalizer (devel), revision unknown, Go version unknown"
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	revision, modified := "unknown", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value[:min(len(s.Value), 12)]
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	return fmt.Sprintf("personalizer %s, revision %s%s, %s", version, revision, modified, bi.GoVersion)
}
