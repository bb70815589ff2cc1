package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/open-personalizer/personalizer/server"
)

// runKeygen prints a new random API key and the line that lets it in,
// for the file --api-keys names. Only the key's hash is in that line: the
// key itself is shown once, here.
func runKeygen(_ context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loop := fs.String("loop", "default", "the loop the key gives access to")
	name := fs.String("name", "", "a name for the key, shown in logs (no spaces)")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if *loop == "" || strings.ContainsAny(*loop+*name, " \t\n#") {
		return errors.New("keygen: --loop must be non-empty, and --loop and --name must have no spaces or #")
	}
	key, line := server.NewKey(*loop, *name)
	fmt.Fprintf(stdout, "key:  %s\nline: %s\n", key, line)
	return nil
}
