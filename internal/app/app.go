// Package app is the personalizer binary's application: a subcommand per
// role (dev, server, joiner, learner, broker) and per tool (simulate,
// train, evaluate, bench, health, keygen, version), each wiring the packages that
// do the work (server, joiner, learner, kafkalog) with their flags,
// lifecycle, telemetry and security. cmd/personalizer is its thin main.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	// Every gRPC client and server of the process uses the faster codec.
	_ "github.com/open-personalizer/personalizer/internal/vtcodec"
)

// Main runs the command args name until it ends or ctx does, and returns
// the process's exit status; errors are printed on stderr.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return report(stderr, run(ctx, args, stdout, stderr, getenv))
}

// report prints what run returned, if it failed, and returns the exit
// status: 0 for success and for -h (which printed the usage), else 1.
func report(stderr io.Writer, err error) int {
	var usage *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage): // names the command already
		fmt.Fprintln(stderr, err)
	default:
		fmt.Fprintln(stderr, "personalizer:", err)
	}
	return 1
}

const usage = `usage: personalizer <command> [flags]

commands:
  dev        run everything in one process: gRPC server, joiner, learner and an embedded Kafka broker
  broker     run the embedded Kafka broker alone
  server     the gRPC API alone: writes events to Kafka, pulls models from a learner
  joiner     join rank and reward records from Kafka into DSJson (one member of the joiners' group)
  learner    learn from the joined events in Kafka and serve model versions to servers
  health     check a running process's gRPC health (exit 0 when SERVING), for container health checks
  simulate   drive a running service with simulated users and print the reward it collects
  train      train offline on a DSJson file, like vw --dsjson
  evaluate   estimate offline how Online, Baseline, Random and custom policies do on a DSJson file
  bench      load a running service with Rank requests and report QPS and latency
  keygen     print a new API key and its line for the --api-keys file
  version    print the version, the VCS revision it was built from and the Go version (also --version)

Run personalizer <command> -h for a command's flags. Every flag can also be
set with an environment variable: --reward-wait is PERSONALIZER_REWARD_WAIT.
`

// run is the whole program but for process exit: it parses args and runs
// one command until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer, func(string) string) error{
		"dev":      runDev,
		"broker":   runBroker,
		"server":   runServer,
		"joiner":   runJoiner,
		"learner":  runLearner,
		"health":   runHealth,
		"simulate": runSimulate,
		"train":    runTrain,
		"evaluate": runEvaluate,
		"bench":    runBench,
		"keygen":   runKeygen,
	}
	switch args[0] {
	case "version", "--version", "-version":
		return runVersion(stdout)
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
			fmt.Fprint(stdout, usage)
			return nil
		}
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], stdout, stderr, getenv)
}

// parseFlags applies, in rising order of precedence, the defaults already
// registered, PERSONALIZER_* environment variables and the command line.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		key := "PERSONALIZER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(key); v != "" && err == nil {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", key, serr)
			}
		}
	})
	if err != nil {
		return err
	}
	// The flag package prints the whole usage after any mistake: parse
	// quietly, and print the usage only when asked (-h).
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err = fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		if fs.Usage != nil {
			fs.Usage()
		} else {
			fmt.Fprintf(out, "usage: personalizer %s [flags]\n\nflags:\n", fs.Name())
			fs.PrintDefaults()
		}
		return err
	}
	return &usageError{cmd: fs.Name(), err: err}
}

// usageError is a command line the flags refused: one line, with a hint
// where the flags are, instead of the whole usage.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string {
	return fmt.Sprintf("personalizer %s: %v (run 'personalizer %s -h' for the flags)", e.cmd, e.err, e.cmd)
}

func (e *usageError) Unwrap() error { return e.err }

// setDefault changes a registered flag's default, as shown in -h too.
func setDefault(fs *flag.FlagSet, name, value string) {
	if err := fs.Set(name, value); err != nil {
		panic(fmt.Sprintf("default for -%s: %v", name, err)) // a programming error
	}
	fs.Lookup(name).DefValue = value
}

// newLogger returns a JSON logger at level ("debug", "info", "warn", "error").
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}
