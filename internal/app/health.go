package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// runHealth is `personalizer health`: a gRPC health check that fails
// unless the service is SERVING, for container health checks in an image
// without a shell.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:50051", "gRPC address to check")
	service := fs.String("service", "", `service to check: "" is the whole process, `+modelSourceService+" a server's learner connection")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	var caller callerConfig
	caller.registerFlags(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("--addr is empty")
	}
	dial, err := caller.dialOptions()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, dial...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		return fmt.Errorf("health of %s at %s: %w", *service, *addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health of %q at %s: %s", *service, *addr, resp.GetStatus())
	}
	fmt.Fprintln(stdout, resp.GetStatus())
	return nil
}
