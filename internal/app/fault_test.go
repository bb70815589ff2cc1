package app

// Fault tests of the join: the embedded broker, a producer of known
// events, joiners (in this process, or as processes in faultproc_test.go)
// and the learner, with exact counts at the learner. Every test ends the
// same way (harness.verify): each learnable event learned exactly once
// with its reward, every other one seen once as _skipLearn, every copy of a
// joined line identical, every undecodable record dead-lettered, and the
// joined topic, its repeats removed, byte for byte what a fresh joiner
// writes replaying the same input.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

const (
	faultLoop  = "fault"
	faultGroup = "personalizer-joiner"
)

// faultRules are the join rules of every fault test, as flags for joiner
// processes too. Sum makes a reward counted twice visible; the default
// reward is one no event sends.
func faultRules(slack time.Duration) joiner.Config {
	return joiner.Config{
		Rules: joiner.Rules{RewardWait: time.Second, Backward: 2 * time.Second, Slack: slack, DefaultReward: -0.25,
			Aggregation: joiner.Sum, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE},
		TickInterval: 100 * time.Millisecond, CommitInterval: 200 * time.Millisecond,
	}
}

// Group timing of every fault test: a killed member is noticed in 6s. (With
// 2s, a loaded machine, -race and both cores busy, missed the session
// timeout so often that members were evicted over and over, and a replay
// made no progress in minutes.) The rebalance timeout is above the 5s a
// joiner's claim may take to write what it joined, so that a member that
// finishes its claims rejoins in time and keeps its place.
const (
	faultSession   = 6 * time.Second
	faultRebalance = 10 * time.Second
	faultHeartbeat = 300 * time.Millisecond
)

// testLogger writes warnings and errors to stderr when
// PERSONALIZER_TEST_LOG is set; kafka-go and kfake log from goroutines
// that outlive a test, so t.Log cannot take them.
func testLogger() *slog.Logger {
	if os.Getenv("PERSONALIZER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

// harness is a broker, a producer, the learner and what they expect.
type harness struct {
	t       *testing.T
	ctx     context.Context // ends the test if it hangs
	cfg     kafkalog.BrokerConfig
	brokers []string
	log     *slog.Logger
	rules   joiner.Config

	brokerMu sync.Mutex
	broker   *kafkalog.Broker

	learner *learner.Learner

	clock eventClock // stamps the producer's records and the ticks
	// writing is held for each write the clock stamps: one at a time, so
	// that the clock holds ticks back until that write is stored.
	writing sync.Mutex

	mu      sync.Mutex
	want    map[string]float32   // learnable events: key -> cost
	skip    map[string]bool      // deferred, never activated: _skipLearn
	bad     int                  // records to be dead-lettered: undecodable, or joined lines too large
	garbage int                  // of them, the producer's undecodable records, each dead-lettered once for every copy stored
	audits  int                  // records to be audited
	retried int                  // events whose reward was written twice on purpose
	learned map[string][]float32 // what the learner learned
}

// newHarness starts the broker and the learner. mod adjusts the broker.
func newHarness(t *testing.T, slack time.Duration, mod func(*kafkalog.BrokerConfig)) *harness {
	t.Helper()
	// A bound for failures, not a wait: with -race on a 2-core machine
	// that other processes keep busy, a fault test has taken 7 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	h := &harness{
		t: t, ctx: ctx, log: testLogger(), rules: faultRules(slack),
		want: map[string]float32{}, skip: map[string]bool{}, learned: map[string][]float32{},
		cfg: kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir(), MinSessionTimeout: time.Second},
	}
	if mod != nil {
		mod(&h.cfg)
	}
	b, err := kafkalog.StartBroker(h.cfg, h.log)
	if err != nil {
		t.Fatal(err)
	}
	h.broker, h.brokers = b, b.Addrs()
	t.Cleanup(func() { h.brokerMu.Lock(); h.broker.Close(); h.brokerMu.Unlock() })
	err = kafkalog.EnsureTopics(ctx, h.brokers,
		kafkalog.TopicSpec{Name: "replay.joined", Partitions: kafkalog.DefaultEventsPartitions},
		kafkalog.TopicSpec{Name: "replay.audit", Partitions: kafkalog.DefaultEventsPartitions},
		kafkalog.TopicSpec{Name: "replay.deadletter", Partitions: kafkalog.DefaultEventsPartitions})
	if err != nil {
		t.Fatal(err)
	}

	h.learner, err = learner.New(learner.Config{
		Loop: faultLoop, Policy: bandit.DefaultPolicy, ExportEvery: 200 * time.Millisecond,
		Dir: t.TempDir(), Remember: 1 << 20,
		Learned: func(key []byte, cost float32) {
			h.mu.Lock()
			h.learned[string(key)] = append(h.learned[string(key)], cost)
			h.mu.Unlock()
		},
	}, h.log, learner.NewStore(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- h.learner.Run(lctx, func(ctx context.Context, start map[int]int64) (eventlog.Reader, error) {
			return kafkalog.NewTopicReader(ctx, h.brokers, eventlog.JoinedTopic, start)
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("learner: %v", err)
		}
	})
	return h
}

// restartBroker closes the broker and starts it again on the same address
// and data directory.
func (h *harness) restartBroker() {
	h.t.Helper()
	h.brokerMu.Lock()
	defer h.brokerMu.Unlock()
	h.broker.Close()
	cfg := h.cfg
	cfg.Addr = h.brokers[0]
	b, err := kafkalog.StartBroker(cfg, h.log)
	if err != nil {
		h.t.Fatal(err)
	}
	h.broker = b
}

func (h *harness) cluster() *kfake.Cluster {
	h.brokerMu.Lock()
	defer h.brokerMu.Unlock()
	return h.broker.Cluster()
}

// eventRecords returns the records of event i, all written at once, and
// what the learner must learn from it. Six kinds cycle: no reward (the
// default), one reward, two rewards (summed), a reward written twice by a
// retrying writer (counted once), deferred and activated, deferred and
// never activated (not learned).
func eventRecords(i int, at time.Time) (recs []eventlog.Record, cost float32, learnable bool) {
	key := fmt.Sprintf("%s/e%06d", faultLoop, i)
	id := func(n int) uint64 { return uint64(i)<<4 | uint64(n) + 1 }
	rec := func(typ string, m proto.Message, d time.Duration) eventlog.Record {
		v, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		return eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(key), Value: v, Time: at.Add(d),
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(typ)}}}
	}
	reward := func(v float32, n int) eventlog.Record {
		return rec(eventlog.TypeReward, &eventsv1.RewardEvent{Loop: faultLoop, EventId: key, Value: v, Id: id(n)}, time.Duration(n+1)*time.Millisecond)
	}
	kind := i % 6
	chosen := uint32(i % 2)
	recs = append(recs, rec(eventlog.TypeRank, &eventsv1.RankEvent{
		Loop: faultLoop, EventId: fmt.Sprintf("e%06d", i),
		Context: fmt.Appendf(nil, `{"U":{"i":%d,"k":"k%d"},"_multi":[{"A":{"x":1}},{"B":{"x":2}}]}`, i, kind),
		Ranking: []uint32{chosen, 1 - chosen}, Probabilities: []float32{0.75, 0.25},
		Deferred: kind >= 4, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE,
	}, 0))
	switch kind {
	case 0:
		return recs, 0.25, true
	case 1:
		return append(recs, reward(0.5, 0)), -0.5, true
	case 2:
		return append(recs, reward(0.25, 0), reward(0.5, 1)), -0.75, true
	case 3:
		r := reward(1, 0)
		return append(recs, r, r), -1, true
	case 4:
		return append(recs, rec(eventlog.TypeActivate, &eventsv1.ActivateEvent{Loop: faultLoop, EventId: key, Id: id(9)}, time.Millisecond), reward(0.25, 1)), -0.25, true
	}
	return append(recs, reward(1, 0)), 0, false
}

// produce writes events at up to rate per second until stop is closed,
// every 200th followed by an undecodable record, in writes of ten events
// retried until they succeed, as a server's publisher does, and never
// more than 500 events ahead of the learner. It returns a channel closed
// when it stopped.
//
// A write is ten events because writes, not events, are what a loaded
// machine runs short of: one event per write made a test wait minutes for
// a few hundred events. The bound keeps what a test waits for, every
// produced event learned, to what a loaded machine does in a while.
func (h *harness) produce(stop <-chan struct{}, rate int) <-chan struct{} {
	const perWrite, ahead = 10, 500
	// As a server in dev would, but with snappy where dev has zstd, so
	// that the joiner reads both. Not lz4: it takes a 4 MB block buffer
	// from a sync.Pool for every batch it writes or reads, and with -race
	// a pool drops some of what is put back: TestJoinerScale took 33
	// CPU-seconds with lz4 and 7 with snappy. TestMultiProcess has a
	// server writing lz4.
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.brokers, Topic: eventlog.EventsTopic, Compression: "snappy"})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.Close()
		pace := time.NewTicker(perWrite * time.Second / time.Duration(rate))
		defer pace.Stop()
		for i := 0; ; {
			select {
			case <-stop:
				return
			case <-h.ctx.Done():
				return
			case <-pace.C:
			}
			if st := h.learner.Stats(); int64(i)-st.Learned-st.NotLearnable >= ahead {
				continue
			}
			h.writing.Lock()
			at := h.clock.hold()
			var recs []eventlog.Record
			// What may be stored is expected before the write.
			h.mu.Lock()
			for range perWrite {
				ev, cost, learnable := eventRecords(i, at)
				recs = append(recs, ev...)
				if learnable {
					h.want[string(ev[0].Key)] = cost
				} else {
					h.skip[string(ev[0].Key)] = true
				}
				if i%200 == 199 {
					recs = append(recs, eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(garbageKey), Value: []byte{0xff, 0xff},
						Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}, Time: at})
					h.bad++
					h.garbage++
				}
				if i%6 == 3 {
					h.retried++
				}
				i++
			}
			h.mu.Unlock()
			for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
				err := w.Write(h.ctx, recs...)
				if err == nil || h.ctx.Err() != nil {
					break
				}
				select {
				case <-h.ctx.Done():
				case <-time.After(backoff):
				}
			}
			h.clock.release()
			h.writing.Unlock()
		}
	}()
	return done
}

// eventClock stamps the records the fault tests write into
// personalizer.events: the producer's events and the ticks (of the
// joiners in this process, and the harness's for joiner processes). It
// reads the wall clock, but never stamps a tick later than a producer
// write that is still in flight.
//
// Without that the tests' expectations depended on timing. The producer
// stamps an event at T and writes it; a tick is stamped with the clock as
// it goes on. On a loaded machine the event's write took up to 4 s (with
// -race and both cores busy) while ticks stamped after T+1.5 s reached the
// partition first. The watermark then passed T + RewardWait + Slack
// before the rank came: the rank closed on arrival with the default
// reward (cost 0.25), and its reward, in the same write, was audited as
// late. That is the join's rule for records that arrive after the
// watermark passed them; the test expected otherwise. With held ticks no
// tick reaches a partition stamped later than an event still on its way
// there, so every event arrives before its window can close, however slow
// its write.
type eventClock struct {
	mu     sync.Mutex
	last   time.Time // the latest time handed out
	inWait bool      // a producer write stamped last is not acknowledged yet
}

// hold returns the time to stamp a producer write with, and holds ticks
// at or before it until release.
func (c *eventClock) hold() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.After(c.last) {
		c.last = now
	}
	c.inWait = true
	return c.last
}

// release lets ticks follow the wall clock again: the write is stored.
func (c *eventClock) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inWait = false
}

// now is the time of a tick, and the joiners' clock.
func (c *eventClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); !c.inWait && now.After(c.last) {
		c.last = now
	}
	return c.last
}

// tick writes a tick into every partition of personalizer.events each
// TickInterval, stamped by h.clock, until the test ends: the ticks of
// joiner processes, which cannot read h.clock and run without their own
// (see joinerArgs).
func (h *harness) tick() {
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.brokers, Topic: eventlog.EventsTopic})
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(h.rules.TickInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			at := h.clock.now()
			recs := make([]eventlog.Record, kafkalog.DefaultEventsPartitions)
			for p := range recs {
				recs[p] = eventlog.Record{Topic: eventlog.EventsTopic, Partition: p, Time: at,
					Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeTick)}}}
			}
			// A tick that fails is as if it never was, as for a joiner.
			w.Write(ctx, recs...)
		}
	}()
	h.t.Cleanup(func() {
		cancel()
		<-done
		w.Close()
	})
}

// events returns how many events were produced.
func (h *harness) events() (learnable, skipped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.want), len(h.skip)
}

// waitLearned waits until the learner has learned at least n events.
func (h *harness) waitLearned(n int64) {
	h.t.Helper()
	if err := h.learner.Wait(h.ctx, func(s learner.Stats) bool { return s.Learned >= n }); err != nil {
		h.t.Fatalf("waiting for %d learned events: %v (learner %+v)", n, err, h.learner.Stats())
	}
}

// waitAllJoined waits until the learner has learned every learnable event
// produced and skipped every other one; stop the producer first.
func (h *harness) waitAllJoined() {
	h.t.Helper()
	learnable, skipped := h.events()
	err := h.learner.Wait(h.ctx, func(s learner.Stats) bool {
		return s.Learned >= int64(learnable) && s.NotLearnable >= int64(skipped)
	})
	if err != nil {
		h.t.Fatalf("waiting for %d learned and %d skipped events: %v (learner %+v)", learnable, skipped, err, h.learner.Stats())
	}
}

// joinerHandle is an in-process joiner.
type joinerHandle struct {
	j    *joiner.Joiner
	stop func()
}

// startJoiner runs a joiner in this process in group with output to out
// (nil: the joiner's topics), its ticks stamped by h.clock. stop ends it
// gracefully.
func (h *harness) startJoiner(group string, out eventlog.Writer) *joinerHandle {
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.brokers, ByPartition: true, Compression: "zstd"})
	ticks := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.brokers, Topic: eventlog.EventsTopic, Compression: "zstd"})
	if out == nil {
		out = w
	}
	g := kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: h.brokers, GroupID: group, Topic: eventlog.EventsTopic,
		SessionTimeout: faultSession, RebalanceTimeout: faultRebalance, HeartbeatInterval: faultHeartbeat}, h.log)
	j := joiner.New(h.rules, h.log, g, out, ticks, h.clock.now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("joiner: %v", err)
		}
		w.Close()
		ticks.Close()
	})
	h.t.Cleanup(stop)
	return &joinerHandle{j: j, stop: stop}
}

// readTopic returns every record of topic, by partition, in offset order.
func (h *harness) readTopic(topic string) map[int][]eventlog.Record {
	h.t.Helper()
	ends, err := kafkalog.EndOffsets(h.ctx, h.brokers, topic)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[int][]eventlog.Record{}
	left := 0
	for _, n := range ends {
		left += int(n)
	}
	if left == 0 {
		return out
	}
	r, err := kafkalog.NewTopicReader(h.ctx, h.brokers, topic, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	defer r.Close()
	for ; left > 0; left-- {
		rec, err := r.Fetch(h.ctx)
		if err != nil {
			h.t.Fatalf("reading %s, %d records left: %v", topic, left, err)
		}
		out[rec.Partition] = append(out[rec.Partition], rec)
	}
	return out
}

// faultReport is what verify found besides what it checks.
type faultReport struct {
	events, joined, repeated int // events produced, joined lines written, of them repeats
	retried                  int // events whose reward was written twice on purpose
}

// verify checks the end state exactly. Every joiner must be stopped and
// the producer too.
func (h *harness) verify() faultReport {
	h.t.Helper()
	t := h.t
	h.waitAllJoined()
	joined := h.readTopic(eventlog.JoinedTopic)
	total := 0
	for _, recs := range joined {
		total += len(recs)
	}
	// The learner has read everything there is.
	err := h.learner.Wait(h.ctx, func(s learner.Stats) bool {
		return s.Learned+s.NotLearnable+s.Duplicates+s.Malformed+s.OtherLoops >= int64(total)
	})
	if err != nil {
		t.Fatalf("waiting for the learner to read %d joined records: %v (%+v)", total, err, h.learner.Stats())
	}
	r := h.checkCounts(joined, total, h.learner.Stats())
	h.checkReplay(joined, r.events)
	return r
}

// checkCounts checks what the learner learned and what the topics hold.
func (h *harness) checkCounts(joined map[int][]eventlog.Record, total int, st learner.Stats) faultReport {
	t := h.t
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if st.Learned != int64(len(h.want)) || st.NotLearnable != int64(len(h.skip)) || st.Malformed != 0 || st.OtherLoops != 0 ||
		st.Learned+st.NotLearnable+st.Duplicates != int64(total) {
		t.Errorf("learner %+v; want %d learned, %d not learnable, %d records read", st, len(h.want), len(h.skip), total)
	}
	for key, cost := range h.want {
		if got := h.learned[key]; len(got) != 1 || got[0] != cost {
			t.Errorf("%s learned with costs %v, want once with %v", key, got, cost)
		}
	}
	for key := range h.learned {
		if _, ok := h.want[key]; !ok {
			t.Errorf("%s learned, but it must not be", key)
		}
	}
	// Every copy of a line is the same line; every event has one.
	lines := map[string][]byte{}
	for _, recs := range joined {
		for _, r := range recs {
			if prev, ok := lines[string(r.Key)]; ok && !bytes.Equal(prev, r.Value) {
				t.Errorf("%s joined twice, differently:\n%s\n%s", r.Key, prev, r.Value)
			}
			lines[string(r.Key)] = r.Value
		}
	}
	if len(lines) != len(h.want)+len(h.skip) {
		t.Errorf("%d events in %s, want %d", len(lines), eventlog.JoinedTopic, len(h.want)+len(h.skip))
	}
	// Nothing late or dangling, every audit expected; every undecodable
	// record dead-lettered.
	audits := 0
	for p, recs := range h.readTopic(eventlog.AuditTopic) {
		audits += len(recs)
		t.Logf("partition %d: %d audit records; first: %s", p, len(recs), recs[0].Value)
	}
	if audits != h.audits {
		t.Errorf("%d audit records, want %d", audits, h.audits)
	}
	dead := map[string]bool{}
	for _, recs := range h.readTopic(eventlog.DeadLetterTopic) {
		for _, r := range recs {
			dead[string(r.Header(eventlog.DeadLetterPartitionHeader))+"/"+string(r.Header(eventlog.DeadLetterOffsetHeader))] = true
		}
	}
	// A write retried after a lost answer stores its undecodable record
	// twice, at two offsets: each stored copy is dead-lettered once.
	stored := 0
	for _, recs := range h.readTopic(eventlog.EventsTopic) {
		for _, r := range recs {
			if string(r.Key) == garbageKey {
				stored++
			}
		}
	}
	if stored < h.garbage {
		t.Errorf("%d undecodable records stored, want at least the %d written", stored, h.garbage)
	}
	if want := h.bad - h.garbage + stored; len(dead) != want {
		t.Errorf("%d records dead-lettered, want %d", len(dead), want)
	}
	return faultReport{events: len(h.want) + len(h.skip), joined: total, repeated: int(st.Duplicates), retried: h.retried}
}

// garbageKey is the key of the undecodable records produce writes.
const garbageKey = "garbage"

// remap writes the joiner's topics under other names.
type remap struct {
	w      eventlog.Writer
	topics map[string]string
}

func (r remap) Write(ctx context.Context, recs ...eventlog.Record) error {
	out := make([]eventlog.Record, len(recs))
	for i, rec := range recs {
		rec.Topic = r.topics[rec.Topic]
		out[i] = rec
	}
	return r.w.Write(ctx, out...)
}

// checkReplay runs a fresh joiner over the same events and checks that
// each joined partition, repeats removed, is what it writes, repeats
// removed, byte for byte.
func (h *harness) checkReplay(joined map[int][]eventlog.Record, events int) {
	t := h.t
	t.Helper()
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.brokers, ByPartition: true, Compression: "zstd"})
	defer w.Close()
	r := h.startJoiner("replay", remap{w, map[string]string{
		eventlog.JoinedTopic: "replay.joined", eventlog.AuditTopic: "replay.audit", eventlog.DeadLetterTopic: "replay.deadletter"}})
	// The replay is done when it wrote a line for every event. Its
	// Emitted counter can get there first: the replay's own group can
	// rebalance too (a loaded machine misses the session timeout), and a
	// claim that ends before its last commit has written lines that the
	// next claim writes, and counts, again.
	var replay map[int][]eventlog.Record
	for least, distinct := int64(events), 0; distinct < events; {
		if err := r.j.Wait(h.ctx, func(s joiner.Stats) bool { return s.Emitted >= least }); err != nil {
			t.Fatalf("replay: %v; %d distinct lines of %d events (%+v)", err, distinct, events, r.j.Counters())
		}
		least = r.j.Counters().Emitted + 1 // at least what the topic holds now
		replay = h.readTopic("replay.joined")
		distinct = 0
		for _, recs := range replay {
			distinct += len(firstLines(recs))
		}
	}
	r.stop()
	for p := range kafkalog.DefaultEventsPartitions {
		want, got := firstLines(joined[p]), firstLines(replay[p])
		if len(want) != len(got) {
			t.Errorf("partition %d: %d distinct joined lines, the replay wrote %d", p, len(want), len(got))
			continue
		}
		for i := range want {
			if !bytes.Equal(want[i].Key, got[i].Key) || !bytes.Equal(want[i].Value, got[i].Value) {
				t.Errorf("partition %d line %d differs from the replay:\n%s\n%s", p, i, want[i].Value, got[i].Value)
				break
			}
		}
	}
}

// firstLines returns the first record of each key in recs, in order.
// Where writers repeat lines (a retried write, a claim that lost its
// generation), each writes them in the same order, so the first copies
// are in the order of a run without repeats.
func firstLines(recs []eventlog.Record) []eventlog.Record {
	var first []eventlog.Record
	seen := map[string]bool{}
	for _, rec := range recs {
		if !seen[string(rec.Key)] {
			seen[string(rec.Key)] = true
			first = append(first, rec)
		}
	}
	return first
}

// TestJoinerScale runs one joiner, then three, then one again, while
// events stream in: rebalances lose nothing and learn nothing twice.
//
// Whether they write lines twice depends on timing, so it is logged, not
// checked: a claim that ends commits what it wrote (TestJoinerShell in
// joiner/ checks that a joiner taking over then writes nothing twice), but
// on a loaded machine a member can miss its session timeout, or a claim
// its 5 s to write what it joined, and then the next owner writes again,
// as after a crash, lines that the learner drops.
func TestJoinerScale(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 500*time.Millisecond, nil)
	a := h.startJoiner(faultGroup, nil)
	stop := make(chan struct{})
	produced := h.produce(stop, 200)
	h.waitLearned(150)

	b, c := h.startJoiner(faultGroup, nil), h.startJoiner(faultGroup, nil)
	for _, j := range []*joinerHandle{b, c} {
		if err := j.j.Wait(h.ctx, func(s joiner.Stats) bool { return s.Emitted > 0 }); err != nil {
			t.Fatalf("a new joiner never joined anything: %v", err)
		}
	}
	n := h.learner.Stats().Learned
	h.waitLearned(n + 150)
	b.stop()
	c.stop()
	before := a.j.Counters().Emitted
	h.waitLearned(h.learner.Stats().Learned + 150)
	close(stop)
	<-produced
	h.waitAllJoined()
	if a.j.Counters().Emitted == before {
		t.Error("the remaining joiner took over nothing")
	}
	a.stop()
	r := h.verify()
	t.Logf("%+v; joiner a %+v, b %+v, c %+v", r, a.j.Counters(), b.j.Counters(), c.j.Counters())
	if r.repeated != 0 {
		t.Logf("%d of %d joined lines were repeats, each learned once", r.repeated, r.joined)
	}
	if sum := a.j.Counters().Suppressed + b.j.Counters().Suppressed + c.j.Counters().Suppressed; sum == 0 {
		t.Error("no claim resumed from a checkpoint with something to suppress")
	}
}

// TestJoinerLostAcks drops the connection right after the broker appended
// a produce request and before its answer, for the producer's writes and
// the joiner's: the writers retry and store records twice. Ranks and
// rewards stored twice count once, joined lines stored twice are learned
// once.
func TestJoinerLostAcks(t *testing.T) {
	t.Parallel()
	d := &ackDropper{}
	h := newHarness(t, 500*time.Millisecond, func(c *kafkalog.BrokerConfig) { c.WrapConn = d.wrap })
	j := h.startJoiner(faultGroup, nil)
	stop := make(chan struct{})
	produced := h.produce(stop, 200)
	h.waitLearned(60)
	const drops = 4
	for i := range drops {
		for _, topic := range []string{eventlog.EventsTopic, eventlog.JoinedTopic} {
			d.arm(topic)
			if err := d.waitDropped(h.ctx, topic, i+1); err != nil {
				t.Fatalf("waiting for a dropped %s answer: %v", topic, err)
			}
		}
		h.waitLearned(h.learner.Stats().Learned + 60)
	}
	close(stop)
	<-produced
	h.waitAllJoined()
	j.stop()
	r := h.verify()
	c := j.j.Counters()
	t.Logf("%+v; joiner %+v", r, c)
	if r.repeated == 0 {
		t.Error("no joined line was stored twice: the dropped answers did not make the joiner's writer retry")
	}
	if c.DuplicateOutcomes+c.DuplicateRanks < int64(r.retried) {
		t.Errorf("%d duplicate ranks and rewards, want at least the %d rewards written twice on purpose", c.DuplicateOutcomes+c.DuplicateRanks, r.retried)
	}
}

// TestJoinerBrokerErrors injects broker errors while events stream in:
// not leader on produce and fetch, a produce that times out after the
// append, rebalance in progress on heartbeats, and coordinator errors on
// finding the coordinator, committing and reading offsets. Each must fire,
// and the join must go on after each.
func TestJoinerBrokerErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 500*time.Millisecond, nil)
	j := h.startJoiner(faultGroup, nil)
	stop := make(chan struct{})
	produced := h.produce(stop, 200)
	h.waitLearned(60)
	c := h.cluster()
	steps := []struct {
		name   string
		faults []kfake.Fault
	}{
		{"not leader on produce", []kfake.Fault{
			{Keys: []kmsg.Key{kmsg.Produce}, Topic: eventlog.JoinedTopic, Err: kerr.NotLeaderForPartition, Count: 3},
			{Keys: []kmsg.Key{kmsg.Produce}, Topic: eventlog.EventsTopic, Err: kerr.NotLeaderForPartition, Count: 3}}},
		{"not leader on fetch", []kfake.Fault{
			{Keys: []kmsg.Key{kmsg.Fetch}, Topic: eventlog.EventsTopic, Err: kerr.NotLeaderForPartition, Count: 3},
			{Keys: []kmsg.Key{kmsg.Fetch}, Topic: eventlog.JoinedTopic, Err: kerr.NotLeaderForPartition, Count: 2}}},
		{"produce timed out after the append", []kfake.Fault{
			{Keys: []kmsg.Key{kmsg.Produce}, Topic: eventlog.JoinedTopic, Err: kerr.RequestTimedOut, Count: 2},
			{Keys: []kmsg.Key{kmsg.Produce}, Topic: eventlog.EventsTopic, Err: kerr.RequestTimedOut, Count: 2}}},
		{"not coordinator on commit", []kfake.Fault{
			{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: faultGroup, Err: kerr.NotCoordinator, Count: 3}}},
	}
	for _, s := range steps {
		fh := c.Fault(s.faults...)
		want := 0
		for _, f := range s.faults {
			want += f.Count
		}
		if err := fh.Wait(h.ctx, want); err != nil {
			t.Fatalf("%s: fired %d of %d: %v", s.name, fh.Hits(), want, err)
		}
		h.waitLearned(h.learner.Stats().Learned + 60)
	}
	// Rebalance in progress on heartbeats, through a control hook: the
	// member rejoins, and the rejoin meets coordinator errors.
	coord := c.Fault(
		kfake.Fault{Keys: []kmsg.Key{kmsg.FindCoordinator}, Group: faultGroup, Err: kerr.CoordinatorNotAvailable, Count: 2},
		kfake.Fault{Keys: []kmsg.Key{kmsg.JoinGroup}, Group: faultGroup, Err: kerr.NotCoordinator, Count: 1},
		kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetFetch}, Group: faultGroup, Err: kerr.CoordinatorLoadInProgress, Count: 2},
	)
	var heartbeats atomic.Int32
	c.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		hb := req.(*kmsg.HeartbeatRequest)
		if hb.Group != faultGroup || heartbeats.Load() == 2 {
			return nil, nil, false
		}
		c.KeepControl()
		if heartbeats.Add(1) == 2 {
			c.DropControl()
		}
		resp := hb.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.SetVersion(hb.GetVersion())
		resp.ErrorCode = kerr.RebalanceInProgress.Code
		return resp, nil, true
	})
	if err := coord.Wait(h.ctx, 5); err != nil {
		t.Fatalf("coordinator errors fired %d of 5, %d rebalance answers: %v", coord.Hits(), heartbeats.Load(), err)
	}
	h.waitLearned(h.learner.Stats().Learned + 60)
	close(stop)
	<-produced
	h.waitAllJoined()
	j.stop()
	r := h.verify()
	t.Logf("%+v; joiner %+v", r, j.j.Counters())
}

// TestJoinerBrokerRestart stops the broker mid-stream and starts it again
// on its data directory; producer, joiner and learner reconnect.
func TestJoinerBrokerRestart(t *testing.T) {
	t.Parallel()
	// The broker is away for a while: records stamped before it left
	// arrive after records stamped since, so the slack is wide.
	h := newHarness(t, 5*time.Second, nil)
	j := h.startJoiner(faultGroup, nil)
	stop := make(chan struct{})
	produced := h.produce(stop, 200)
	h.waitLearned(150)
	h.restartBroker()
	h.waitLearned(h.learner.Stats().Learned + 150)
	close(stop)
	<-produced
	h.waitAllJoined()
	j.stop()
	r := h.verify()
	t.Logf("%+v; joiner %+v", r, j.j.Counters())
}

// ackDropper wraps broker connections and, when armed for a topic, closes
// the connection instead of answering the next produce request for it:
// the broker has appended the records, the client never hears so.
type ackDropper struct {
	mu      sync.Mutex
	armed   map[string]int // topic -> answers to drop
	dropped map[string]int
	changed chan struct{}
}

func (d *ackDropper) arm(topic string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.armed == nil {
		d.armed, d.dropped = map[string]int{}, map[string]int{}
	}
	d.armed[topic]++
}

func (d *ackDropper) waitDropped(ctx context.Context, topic string, n int) error {
	for {
		d.mu.Lock()
		if d.changed == nil {
			d.changed = make(chan struct{})
		}
		done, changed := d.dropped[topic] >= n, d.changed
		d.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// take reports whether an answer for topic is to be dropped, and counts it.
func (d *ackDropper) take(topic string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.armed[topic] == 0 {
		return false
	}
	d.armed[topic]--
	d.dropped[topic]++
	if d.changed != nil {
		close(d.changed)
	}
	d.changed = make(chan struct{})
	return true
}

func (d *ackDropper) wrap(c net.Conn) net.Conn {
	return &dropConn{Conn: c, d: d, produce: map[int32]string{}}
}

// dropConn reads the Kafka requests that pass (size, api key, version,
// correlation id, client id, then for produce v3-v8 transactional id,
// acks, timeout and the first topic's name) to know which answers belong
// to produce requests and for which topic. kfake writes each answer
// (size, correlation id, body) with one Write.
type dropConn struct {
	net.Conn
	d       *ackDropper
	mu      sync.Mutex
	in      []byte           // request bytes not parsed yet
	produce map[int32]string // correlation id -> topic, for produce requests
}

func (c *dropConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.in = append(c.in, b[:n]...)
	for len(c.in) >= 4 {
		size := int(binary.BigEndian.Uint32(c.in))
		if len(c.in) < 4+size {
			break
		}
		req := c.in[4 : 4+size]
		if key, version := int16(binary.BigEndian.Uint16(req)), int16(binary.BigEndian.Uint16(req[2:])); key == 0 && version >= 3 && version <= 8 {
			if topic, ok := produceTopic(req[8:]); ok {
				c.produce[int32(binary.BigEndian.Uint32(req[4:]))] = topic
			}
		}
		c.in = c.in[4+size:]
	}
	c.mu.Unlock()
	return n, err
}

// produceTopic parses client id, transactional id, acks, timeout and the
// first topic name of a produce request body.
func produceTopic(b []byte) (string, bool) {
	str := func() (string, bool) {
		if len(b) < 2 {
			return "", false
		}
		n := int(int16(binary.BigEndian.Uint16(b)))
		b = b[2:]
		if n < 0 {
			return "", true
		}
		if len(b) < n {
			return "", false
		}
		s := string(b[:n])
		b = b[n:]
		return s, true
	}
	if _, ok := str(); !ok { // client id
		return "", false
	}
	if _, ok := str(); !ok { // transactional id
		return "", false
	}
	if len(b) < 2+4+4 { // acks, timeout, topic count
		return "", false
	}
	b = b[10:]
	return str()
}

func (c *dropConn) Write(b []byte) (int, error) {
	if len(b) >= 8 {
		corr := int32(binary.BigEndian.Uint32(b[4:]))
		c.mu.Lock()
		topic, ok := c.produce[corr]
		delete(c.produce, corr)
		c.mu.Unlock()
		if ok && c.d.take(topic) {
			c.Conn.Close()
			return 0, io.ErrClosedPipe
		}
	}
	return c.Conn.Write(b)
}
