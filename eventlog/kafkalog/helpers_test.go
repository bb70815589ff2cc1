package kafkalog_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

// testLog discards logs unless KAFKALOG_TEST_LOG is set: kfake and kafka-go
// keep logging from their own goroutines after a test ends.
func testLog() *slog.Logger {
	if os.Getenv("KAFKALOG_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startBroker starts an embedded broker on a free loopback port with its
// data in dir and closes it when the test ends.
func startBroker(t testing.TB, dir string) *kafkalog.Broker {
	t.Helper()
	b, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: dir}, testLog())
	if err != nil {
		t.Fatalf("StartBroker: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newWriter(t testing.TB, b *kafkalog.Broker, topic string) *kafkalog.Writer {
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: b.Addrs(), Topic: topic})
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("close writer: %v", err)
		}
	})
	return w
}

// writeKeyless writes n records to each of partitions, with values p/i.
func writeKeyless(t testing.TB, ctx context.Context, w *kafkalog.Writer, partitions, n, first int) {
	t.Helper()
	var recs []eventlog.Record
	for p := range partitions {
		for i := first; i < first+n; i++ {
			recs = append(recs, eventlog.Record{Partition: p, Value: fmt.Appendf(nil, "%d/%d", p, i)})
		}
	}
	if err := w.Write(ctx, recs...); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readN fetches exactly n records.
func readN(t testing.TB, ctx context.Context, r eventlog.Reader, n int) []eventlog.Record {
	t.Helper()
	out := make([]eventlog.Record, 0, n)
	for len(out) < n {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatalf("fetch after %d of %d records: %v", len(out), n, err)
		}
		out = append(out, rec)
	}
	return out
}

type partOff struct {
	p   int
	off int64
}

// tracker records what group members see and commit. Members run claims in
// goroutines; the test waits on tracker conditions, never on time.
type tracker struct {
	mu            sync.Mutex
	changed       chan struct{} // closed and replaced on every change
	seen          map[partOff]int
	seenBy        map[string]int // member -> records seen
	committed     map[int]int64
	live          map[int]string // partition -> member holding a claim
	starts        map[string]int // member -> claims started
	failedCommits int
	errs          []error
}

func newTracker() *tracker {
	return &tracker{
		changed:   make(chan struct{}),
		seen:      map[partOff]int{},
		seenBy:    map[string]int{},
		committed: map[int]int64{},
		live:      map[int]string{},
		starts:    map[string]int{},
	}
}

func (tr *tracker) update(fn func()) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	fn()
	close(tr.changed)
	tr.changed = make(chan struct{})
}

// waitFor blocks until cond, evaluated under the lock, holds.
func (tr *tracker) waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for {
		tr.mu.Lock()
		ok, ch := cond(), tr.changed
		tr.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			tr.mu.Lock()
			defer tr.mu.Unlock()
			t.Fatalf("waiting for %s: %v (committed %v, live %v)", what, ctx.Err(), tr.committed, tr.live)
		}
	}
}

// allCommitted reports whether every partition below n committed want.
func (tr *tracker) allCommitted(n int, want int64) func() bool {
	return func() bool {
		for p := range n {
			if tr.committed[p] != want {
				return false
			}
		}
		return true
	}
}

// claimFunc returns a ClaimFunc for member that commits after every record
// and returns nil once it committed stopAt[p] (when present).
func (tr *tracker) claimFunc(member string, stopAt map[int]int64) eventlog.ClaimFunc {
	return func(ctx context.Context, c eventlog.Claim) error {
		p := c.Partition()
		tr.update(func() {
			if other, ok := tr.live[p]; ok {
				tr.errs = append(tr.errs, fmt.Errorf("partition %d claimed by %s while %s holds it", p, member, other))
			}
			tr.live[p] = member
			tr.starts[member]++
		})
		defer tr.update(func() { delete(tr.live, p) })
		if stop, ok := stopAt[p]; ok && stop == 0 {
			return nil
		}
		for {
			rec, err := c.Fetch(ctx)
			if err != nil {
				return err
			}
			if rec.Partition != p {
				return fmt.Errorf("claim of partition %d fetched partition %d", p, rec.Partition)
			}
			tr.update(func() {
				tr.seen[partOff{p, rec.Offset}]++
				tr.seenBy[member]++
			})
			if err := c.Commit(ctx, rec.Offset+1, ""); err != nil {
				tr.update(func() { tr.failedCommits++ })
				return err
			}
			tr.update(func() { tr.committed[p] = rec.Offset + 1 })
			if stop, ok := stopAt[p]; ok && rec.Offset+1 == stop {
				return nil
			}
		}
	}
}

// member runs one group member until stop is called or the test ends; stop
// returns what Consume returned.
func member(t testing.TB, ctx context.Context, b *kafkalog.Broker, group string, fn eventlog.ClaimFunc) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	g := kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: b.Addrs(), GroupID: group, Topic: eventlog.EventsTopic}, testLog())
	done := make(chan error, 1)
	go func() { done <- g.Consume(ctx, fn) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { stop() })
	return stop
}
