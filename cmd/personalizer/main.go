// Command personalizer is the self-hosted decision service: one binary with
// a subcommand per role (see internal/app).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/open-personalizer/personalizer/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
