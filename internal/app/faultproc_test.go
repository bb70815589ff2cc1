package app

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// asCommand makes the test binary stand in for bin/personalizer in the
// processes a test starts: with it set, TestMain runs the command line
// instead of the tests.
const asCommand = "PERSONALIZER_TEST_AS_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(asCommand) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "personalizer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// process is a personalizer command running as a child process.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

// line returns the first complete line starting with prefix, or a channel
// closed on the next write.
func (s *syncBuffer) line(prefix string) (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range strings.Lines(s.b.String()) {
		if strings.HasPrefix(l, prefix) && strings.HasSuffix(l, "\n") {
			return strings.TrimSuffix(l, "\n"), nil
		}
	}
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return "", s.changed
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProcess runs `personalizer args...` (the test binary as the
// command) and kills it when the test ends; its output is logged if the
// test fails.
func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(os.Args[0], args...), out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), asCommand+"=1")
	p.cmd.SysProcAttr = childAttr // dies with the test binary, even one killed by -timeout
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// waitLine waits until the process prints a line starting with prefix
// (its announcement: roles print where they listen once they do) and
// returns it. The test fails if the process exits first or ctx ends.
func (p *process) waitLine(ctx context.Context, t *testing.T, prefix string) string {
	t.Helper()
	for {
		l, changed := p.out.line(prefix)
		if changed == nil {
			return l
		}
		select {
		case <-changed:
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited with %v before printing %q:\n%s", p.cmd.Args[1], err, prefix, p.out.String())
		case <-ctx.Done():
			t.Fatalf("%s printed no %q: %v\n%s", p.cmd.Args[1], prefix, ctx.Err(), p.out.String())
		}
	}
}

// kill sends SIGKILL: no shutdown, no flush, no last commit.
func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // for the cleanup
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := <-p.done
	p.done <- err
	if err != nil {
		t.Errorf("%s exited with %v:\n%s", p.cmd.Args[1], err, p.out.String())
	}
}

// joinerArgs are `personalizer joiner` flags with the fault tests' rules.
// With ticks false the joiner writes no ticks (one a day): h.tick writes
// them, stamped by h.clock.
func (h *harness) joinerArgs(ticks bool) []string {
	r := h.rules
	if !ticks {
		r.TickInterval = 24 * time.Hour
	}
	return []string{"joiner", "--kafka-brokers", strings.Join(h.brokers, ","), "--group", faultGroup, "--log-level", "warn",
		"--reward-wait", r.RewardWait.String(), "--backward-window", r.Backward.String(), "--join-slack", r.Slack.String(),
		"--default-reward", fmt.Sprint(r.DefaultReward), "--reward-aggregation", string(r.Aggregation), "--learning-mode", "Online",
		"--tick-interval", r.TickInterval.String(), "--commit-interval", r.CommitInterval.String(),
		"--session-timeout", faultSession.String(), "--rebalance-timeout", faultRebalance.String(), "--heartbeat-interval", faultHeartbeat.String()}
}

// waitSteady waits until at least least events are learned and the
// joiners have caught up with what was produced by then, and then with
// what was produced while they caught up: they have been joining (and
// committing) live for a while.
func (h *harness) waitSteady(least int) {
	h.t.Helper()
	h.waitLearned(int64(least))
	for range 2 {
		n, _ := h.events()
		h.waitLearned(int64(n))
	}
}

// TestJoinerKill9 runs the joiner as a process and kills it with SIGKILL
// three times while events stream in. Each new process resumes from the
// last checkpoint its predecessor committed; whatever the killed one wrote
// after that is written again and dropped by the learner.
func TestJoinerKill9(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 500*time.Millisecond, nil)
	h.tick()
	stop := make(chan struct{})
	produced := h.produce(stop, 200)
	p := startProcess(t, h.joinerArgs(false)...)
	for kill := range 3 {
		h.waitSteady(100)
		select {
		case <-produced:
			t.Fatal("the producer stopped before the kills")
		default:
		}
		p.kill(t)
		t.Logf("kill %d: learner %+v", kill+1, h.learner.Stats())
		p = startProcess(t, h.joinerArgs(false)...)
	}
	h.waitSteady(100)
	close(stop)
	<-produced
	h.waitAllJoined()
	// The lines may all have come from a killed joiner: SIGTERM must not
	// reach the last one before it handles signals (it announces itself
	// after it does).
	p.waitLine(h.ctx, t, "personalizer joiner:")
	p.stop(t)
	r := h.verify()
	t.Logf("%+v", r)
}
