package kafkalog_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

// followEvent is one call FollowCompacted made: apply(key, value), or
// ready.
type followEvent struct {
	ready bool
	key   string
	value []byte
}

// kv is a record of the configuration topic; a nil value is a tombstone.
type kv struct {
	key   string
	value []byte
}

// following is one FollowCompacted call running in a goroutine.
type following struct {
	events chan followEvent
	cancel context.CancelFunc
	done   chan error
}

func follow(t testing.TB, ctx context.Context, brokers []string, topic string) *following {
	ctx, cancel := context.WithCancel(ctx)
	f := &following{events: make(chan followEvent, 1000), cancel: cancel, done: make(chan error, 1)}
	go func() {
		f.done <- kafkalog.FollowCompacted(ctx, brokers, topic, testLog(),
			func(key, value []byte) { f.events <- followEvent{key: string(key), value: value} },
			func() { f.events <- followEvent{ready: true} })
	}()
	t.Cleanup(func() { f.stop(t) })
	return f
}

// stop cancels the call and returns what it returned, failing the test if
// it does not return within 2 seconds.
func (f *following) stop(t testing.TB) error {
	t.Helper()
	f.cancel()
	select {
	case err := <-f.done:
		f.done <- err // for the next stop
		return err
	case <-time.After(2 * time.Second):
		t.Fatal("FollowCompacted did not return within 2s of its context ending")
		return nil
	}
}

// expect checks that the next calls are applies of want, in order, then
// ready when withReady.
func (f *following) expect(t testing.TB, ctx context.Context, want []kv, withReady bool) {
	t.Helper()
	n := len(want)
	if withReady {
		n++
	}
	for i := range n {
		var ev followEvent
		select {
		case ev = <-f.events:
		case err := <-f.done:
			t.Fatalf("FollowCompacted returned %v after %d of %d calls", err, i, n)
		case <-ctx.Done():
			t.Fatalf("waiting for call %d of %d: %v", i+1, n, ctx.Err())
		}
		if i == len(want) {
			if !ev.ready {
				t.Fatalf("call %d: apply(%q, %q), want ready", i, ev.key, ev.value)
			}
			continue
		}
		switch w := want[i]; {
		case ev.ready:
			t.Fatalf("call %d: ready, want apply(%q, %q)", i, w.key, w.value)
		case ev.key != w.key || !bytes.Equal(ev.value, w.value) || (ev.value == nil) != (w.value == nil):
			t.Errorf("call %d: apply(%q, %q) (nil value %t), want apply(%q, %q) (nil value %t)",
				i, ev.key, ev.value, ev.value == nil, w.key, w.value, w.value == nil)
		}
	}
}

// expectNothing checks that no call comes within a short while.
func (f *following) expectNothing(t testing.TB) {
	t.Helper()
	select {
	case ev := <-f.events:
		t.Errorf("unexpected call %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
}

// put writes each record in its own Write, so each is its own batch (which
// is what kfake compacts by).
func put(t testing.TB, ctx context.Context, w *kafkalog.Writer, recs ...kv) {
	t.Helper()
	for _, r := range recs {
		if err := w.Write(ctx, eventlog.Record{Key: []byte(r.key), Value: r.value}); err != nil {
			t.Fatalf("write %s: %v", r.key, err)
		}
	}
}

// configVersions are three versions of two keys and a tombstone.
var configVersions = []kv{
	{"a", []byte(`{"v":1}`)}, {"b", []byte(`{"v":1}`)},
	{"a", []byte(`{"v":2}`)}, {"b", []byte(`{"v":2}`)},
	{"a", []byte(`{"v":3}`)}, {"b", []byte(`{"v":3}`)},
	{"a", nil},
}

func TestFollowCompacted(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.ConfigTopic)
	put(t, ctx, w, configVersions...)

	f := follow(t, ctx, b.Addrs(), eventlog.ConfigTopic)
	// Ready comes after exactly the records present at start.
	f.expect(t, ctx, configVersions, true)
	f.expectNothing(t)

	// Later records are applied as they come; an empty value is not a
	// tombstone.
	later := []kv{{"c", []byte(`{"v":1}`)}, {"b", []byte{}}, {"b", nil}}
	put(t, ctx, w, later...)
	f.expect(t, ctx, later, false)

	if err := f.stop(t); err != nil {
		t.Errorf("FollowCompacted returned %v, want nil", err)
	}
}

// TestFollowCompactedAfterCompaction checks that a follower skips the
// offsets compaction removed, including those at the start, and still
// becomes ready after the last record present at start.
func TestFollowCompactedAfterCompaction(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.ConfigTopic)
	put(t, ctx, w, configVersions...)
	b.Cluster().Compact()

	f := follow(t, ctx, b.Addrs(), eventlog.ConfigTopic)
	// Compaction keeps the latest record of each key among all but the
	// last batch (the active segment, for Kafka), and the last batch: the
	// tombstone, which would outlive it by delete.retention.ms anyway.
	f.expect(t, ctx, []kv{configVersions[4], configVersions[5], configVersions[6]}, true)
	put(t, ctx, w, kv{"a", []byte(`{"v":4}`)})
	f.expect(t, ctx, []kv{{"a", []byte(`{"v":4}`)}}, false)
}

func TestFollowCompactedEmptyTopic(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	f := follow(t, ctx, b.Addrs(), eventlog.ConfigTopic)
	f.expect(t, ctx, nil, true)

	// All records deleted: the log is empty again, at a later offset.
	w := newWriter(t, b, eventlog.ConfigTopic)
	put(t, ctx, w, configVersions[:2]...)
	f.expect(t, ctx, configVersions[:2], false)
	if err := kafkalog.DeleteRecords(ctx, b.Addrs(), eventlog.ConfigTopic, nil); err != nil {
		t.Fatal(err)
	}
	g := follow(t, ctx, b.Addrs(), eventlog.ConfigTopic)
	g.expect(t, ctx, nil, true)
	put(t, ctx, w, configVersions[2])
	f.expect(t, ctx, configVersions[2:3], false)
	g.expect(t, ctx, configVersions[2:3], false)
}

func TestFollowCompactedRefusesPartitionedTopic(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	// The events topic has several partitions.
	err := kafkalog.FollowCompacted(ctx, b.Addrs(), eventlog.EventsTopic, testLog(),
		func(key, value []byte) { t.Errorf("apply(%q, %q)", key, value) },
		func() { t.Error("ready") })
	if err == nil {
		t.Fatal("FollowCompacted returned nil, want an error")
	}
}

// TestFollowCompactedBrokerRestart restarts the broker on the same address
// and data dir: a follower that was ready keeps applying records, and one
// started while the broker was down becomes ready once it is back.
func TestFollowCompactedBrokerRestart(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	b1, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: dir}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b1.Close)
	addrs := b1.Addrs()
	w1 := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: addrs, Topic: eventlog.ConfigTopic})
	put(t, ctx, w1, configVersions[:2]...)
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}

	before := follow(t, ctx, addrs, eventlog.ConfigTopic)
	before.expect(t, ctx, configVersions[:2], true)

	b1.Close()
	during := follow(t, ctx, addrs, eventlog.ConfigTopic)
	// Let both fail against the stopped broker for a while.
	time.Sleep(time.Second)
	select {
	case err := <-before.done:
		t.Fatalf("FollowCompacted returned %v while the broker was down", err)
	case err := <-during.done:
		t.Fatalf("FollowCompacted returned %v while the broker was down", err)
	default:
	}

	b2, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: addrs[0], DataDir: dir}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b2.Close)
	during.expect(t, ctx, configVersions[:2], true)
	w2 := newWriter(t, b2, eventlog.ConfigTopic)
	put(t, ctx, w2, configVersions[2])
	before.expect(t, ctx, configVersions[2:3], false)
	during.expect(t, ctx, configVersions[2:3], false)
	for _, f := range []*following{before, during} {
		if err := f.stop(t); err != nil {
			t.Errorf("FollowCompacted returned %v, want nil", err)
		}
	}
}

func TestConfigTopicSpec(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	n, err := kafkalog.PartitionCount(ctx, b.Addrs(), eventlog.ConfigTopic)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%s has %d partitions, want 1", eventlog.ConfigTopic, n)
	}
	cfg := describeTopic(t, ctx, b.Addrs(), eventlog.ConfigTopic, "cleanup.policy", "retention.ms")
	if cfg["cleanup.policy"] != "compact" || cfg["retention.ms"] != "-1" {
		t.Errorf("%s config %v, want cleanup.policy=compact retention.ms=-1", eventlog.ConfigTopic, cfg)
	}
	if spec := kafkalog.ConfigTopicSpec(); spec.Name != eventlog.ConfigTopic || spec.Partitions != 1 {
		t.Errorf("ConfigTopicSpec() = %+v", spec)
	}
	// Callers may change what they get without changing the next one.
	kafkalog.ConfigTopicSpec().Config["cleanup.policy"] = "delete"
	if got := kafkalog.ConfigTopicSpec().Config["cleanup.policy"]; got != "compact" {
		t.Errorf("cleanup.policy %q after a caller changed its copy", got)
	}
}
