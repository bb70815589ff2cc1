package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// spawnEnv is added to the environment of the processes bench --spawn
// starts (tests make the test binary stand in for personalizer with it).
var spawnEnv []string

// spawnJoin are the join settings of a spawned loop, dev's defaults in
// both topologies, so that their numbers compare.
const (
	spawnJoinSlack    = "250ms"
	spawnTickInterval = "500ms"
)

// spawnedLoop is a loop bench --spawn started, each role a process of this
// binary on loopback ports, with its data in a temporary directory.
type spawnedLoop struct {
	addr      string // gRPC API
	httpAddr  string // the server's (dev's) HTTP address
	modelAddr string // the learner's ModelService
	brokers   string
	pids      []rolePID
	procs     []*spawnedProc // in start order
	dir       string
}

type spawnedProc struct {
	role string
	cmd  *exec.Cmd
	done chan error
	out  strings.Builder // stderr, for errors
}

// spawnLoop starts topology "dev" (one process) or "multi" (broker,
// learner, joiner and server, each its own process) with the given reward
// wait and model export frequency, and returns once every role serves.
func spawnLoop(ctx context.Context, topology string, rewardWait, export time.Duration) (_ *spawnedLoop, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("--spawn: %w", err)
	}
	dir, err := os.MkdirTemp("", "personalizer-bench-")
	if err != nil {
		return nil, fmt.Errorf("--spawn: %w", err)
	}
	s := &spawnedLoop{dir: dir}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	// start runs a role and returns the fields of the line it announces
	// itself with ("personalizer role: gRPC A, HTTP B, ...").
	start := func(role string, args ...string) (map[string]string, error) {
		p := &spawnedProc{role: role, done: make(chan error, 1)}
		args = append([]string{role, "--log-level", "error"}, args...)
		p.cmd = exec.Command(exe, args...)
		p.cmd.Env = append(os.Environ(), spawnEnv...)
		p.cmd.Stderr = &p.out
		stdout, err := p.cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := p.cmd.Start(); err != nil {
			return nil, fmt.Errorf("--spawn: start %s: %w", role, err)
		}
		s.procs = append(s.procs, p)
		s.pids = append(s.pids, rolePID{role, p.cmd.Process.Pid})
		lines := make(chan string, 1)
		go func() { // ends when the process closes its output
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				default:
				}
			}
			io.Copy(io.Discard, stdout)
			p.done <- p.cmd.Wait()
		}()
		select {
		case l := <-lines:
			fields := map[string]string{}
			_, rest, _ := strings.Cut(l, ": ")
			for f := range strings.SplitSeq(rest, ", ") {
				if k, v, ok := strings.Cut(f, " "); ok {
					fields[k] = v
				}
			}
			return fields, nil
		case err := <-p.done:
			p.done <- err
			return nil, fmt.Errorf("--spawn: %s exited (%v): %s", role, err, strings.TrimSpace(p.out.String()))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	wait, every := rewardWait.String(), export.String()
	switch topology {
	case "dev":
		f, err := start("dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--broker-addr", "127.0.0.1:0",
			"--data-dir", dir, "--reward-wait", wait, "--join-slack", spawnJoinSlack, "--tick-interval", spawnTickInterval,
			"--model-export-frequency", every)
		if err != nil {
			return nil, err
		}
		s.addr, s.httpAddr, s.modelAddr, s.brokers = f["gRPC"], f["HTTP"], f["gRPC"], f["Kafka"]
	case "multi":
		f, err := start("broker", "--broker-addr", "127.0.0.1:0", "--data-dir", dir)
		if err != nil {
			return nil, err
		}
		s.brokers = f["Kafka"]
		if f, err = start("learner", "--kafka-brokers", s.brokers, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--data-dir", dir, "--model-export-frequency", every); err != nil {
			return nil, err
		}
		s.modelAddr = f["gRPC"]
		if _, err = start("joiner", "--kafka-brokers", s.brokers, "--reward-wait", wait, "--join-slack", spawnJoinSlack,
			"--tick-interval", spawnTickInterval); err != nil {
			return nil, err
		}
		if f, err = start("server", "--kafka-brokers", s.brokers, "--learner-addr", s.modelAddr,
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		s.addr, s.httpAddr = f["gRPC"], f["HTTP"]
	default:
		return nil, fmt.Errorf("--spawn %q: want dev or multi", topology)
	}
	return s, nil
}

// close stops the processes, the last started first, with SIGTERM (after
// 10 s, SIGKILL), and removes the data.
func (s *spawnedLoop) close() error {
	var errs []error
	for _, p := range slices.Backward(s.procs) {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w: %s", p.role, err, strings.TrimSpace(p.out.String())))
			}
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("%s did not stop within 10s of SIGTERM", p.role))
		}
	}
	errs = append(errs, os.RemoveAll(s.dir))
	return errors.Join(errs...)
}
