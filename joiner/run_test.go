package joiner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// memSource is an eventlog.Mem consumer group as a [Source].
type memSource struct{ m *eventlog.Mem }

func (s memSource) Consume(ctx context.Context, fn eventlog.ClaimFunc) error {
	return s.m.Consume(ctx, "joiner", eventlog.EventsTopic, fn)
}

func newMem() *eventlog.Mem {
	return eventlog.NewMem(map[string]int{eventlog.EventsTopic: 2, eventlog.JoinedTopic: 2, eventlog.AuditTopic: 2, eventlog.DeadLetterTopic: 2})
}

func record(typ, key string, m proto.Message, at time.Time) eventlog.Record {
	v, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(key), Value: v, Time: at,
		Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(typ)}}}
}

// startJoiner runs a joiner over m until the returned stop is called.
// Ticks carry the fixed time tickAt, so that only the test's records move
// time.
func startJoiner(t *testing.T, m *eventlog.Mem, tickAt time.Time) (*Joiner, func()) {
	t.Helper()
	cfg := Config{Rules: testRules(), TickInterval: 10 * time.Millisecond, CommitInterval: 0}
	j := New(cfg, slog.New(slog.DiscardHandler), memSource{m}, m.Direct(), m, func() time.Time { return tickAt })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	return j, stop
}

func waitFor(t *testing.T, j *Joiner, what string, cond func(Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := j.Wait(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v (counters %+v)", what, err, j.Counters())
	}
}

// TestJoinerShell runs the joiner's shell over the in-memory log: joined
// lines, audits and dead letters land in the partition of their input,
// checkpoints are committed as metadata, and a second joiner resuming from
// them writes nothing twice.
func TestJoinerShell(t *testing.T) {
	t.Parallel()
	m := newMem()
	ctx := context.Background()
	var recs []eventlog.Record
	const events = 40
	for i := range events {
		key := fmt.Sprintf("l/e%d", i)
		at := t0.Add(time.Duration(i) * time.Millisecond)
		recs = append(recs,
			record(eventlog.TypeRank, key, rankEvent(key, 0, false, online), at),
			record(eventlog.TypeReward, key, &eventsv1.RewardEvent{Loop: "l", EventId: key, Value: float32(i%4) / 4, Id: uint64(i + 1)}, at.Add(time.Second)))
	}
	recs = append(recs,
		record(eventlog.TypeReward, "l/none", &eventsv1.RewardEvent{Value: 1}, t0), // dangling
		eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte("l/bad"), Value: []byte{0xff}, // undecodable
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}, Time: t0},
		eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte("l/odd"), Value: []byte("x"), // unknown type
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte("gossip")}}, Time: t0})
	if err := m.Write(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	// Ticks far past every window close them all.
	j, stop := startJoiner(t, m, t0.Add(time.Hour))
	waitFor(t, j, "every event", func(s Stats) bool { return s.Emitted == events && s.Dangling == 1 && s.Undecodable == 2 })
	// Then a rank that stays pending (stamped after the ticks) and one that
	// closes at once (stamped before them), in the same partition: the
	// checkpoint starts at the pending one, after the closed one.
	pending, closed := partitionOf(m, "l/pending"), ""
	for i := 0; closed == ""; i++ {
		if k := fmt.Sprintf("l/closed%d", i); partitionOf(m, k) == pending {
			closed = k
		}
	}
	if err := m.Write(ctx,
		record(eventlog.TypeRank, "l/pending", rankEvent("l/pending", 0, false, online), t0.Add(2*time.Hour)),
		record(eventlog.TypeRank, closed, rankEvent(closed, 0, false, online), t0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, j, "the closed event", func(s Stats) bool { return s.Emitted == events+1 })
	if n := j.Pending(); n != 1 {
		t.Errorf("Pending = %d with one rank in an open window, want 1", n)
	}
	for p := range 2 {
		last := int64(len(m.Records(eventlog.EventsTopic, p)))
		waitFor(t, j, "commit", func(Stats) bool {
			next, meta := m.Committed("joiner", eventlog.EventsTopic, p)
			cp, err := ParseCheckpoint(meta)
			return err == nil && next == cp.Offset && cp.Next >= last
		})
	}
	next, _ := m.Committed("joiner", eventlog.EventsTopic, pending)
	if r := m.Records(eventlog.EventsTopic, pending)[next]; string(r.Key) != "l/pending" {
		t.Errorf("partition %d committed at %d (%s), want the pending rank", pending, next, r.Key)
	}
	stop()
	if c := j.Counters(); c.Emitted != events+1 || c.Learnable != events+1 || c.DefaultRewards != 1 || c.Late != 0 || c.Suppressed != 0 {
		t.Errorf("counters %+v", c)
	}
	if n := j.Pending(); n != 0 {
		t.Errorf("Pending = %d after the joiner stopped, want 0: it holds no partition", n)
	}

	joined := map[string]int{}
	for p := range 2 {
		in := map[string]bool{}
		for _, r := range m.Records(eventlog.EventsTopic, p) {
			in[string(r.Key)] = true
		}
		for _, r := range m.Records(eventlog.JoinedTopic, p) {
			joined[string(r.Key)]++
			if !in[string(r.Key)] || r.Type() != eventlog.TypeJoined {
				t.Errorf("joined record %s (type %q) in partition %d, its input is elsewhere", r.Key, r.Type(), p)
			}
		}
		for _, r := range m.Records(eventlog.AuditTopic, p) {
			if string(r.Key) != "l/none" || !in["l/none"] {
				t.Errorf("audit %s in partition %d: %s", r.Key, p, r.Value)
			}
		}
		for _, r := range m.Records(eventlog.DeadLetterTopic, p) {
			off, _ := strconv.ParseInt(string(r.Header(eventlog.DeadLetterOffsetHeader)), 10, 64)
			src := m.Records(eventlog.EventsTopic, p)[off]
			if string(r.Header(eventlog.DeadLetterPartitionHeader)) != strconv.Itoa(p) || string(src.Value) != string(r.Value) ||
				r.Type() != src.Type() || len(r.Header(eventlog.DeadLetterErrorHeader)) == 0 {
				t.Errorf("dead letter %s in partition %d, headers %v, does not match input %d", r.Key, p, r.Headers, off)
			}
		}
	}
	if len(joined) != events+1 {
		t.Errorf("%d events joined, want %d", len(joined), events+1)
	}
	for k, n := range joined {
		if n != 1 {
			t.Errorf("%s joined %d times", k, n)
		}
	}

	// A second joiner resumes from the checkpoints: it replays the
	// pending rank and the closed one, suppresses the closed one, which
	// the first joiner wrote, and joins the pending one once its ticks
	// pass its window.
	j2, stop2 := startJoiner(t, m, t0.Add(3*time.Hour))
	waitFor(t, j2, "the pending event", func(s Stats) bool { return s.Emitted == 1 })
	stop2()
	if c := j2.Counters(); c.Emitted != 1 || c.Suppressed != 1 || c.Undecodable != 0 || c.Dangling != 0 {
		t.Errorf("resumed joiner counters %+v, want the pending event and one suppressed", c)
	}
	after := map[string]int{}
	for p := range 2 {
		for _, r := range m.Records(eventlog.JoinedTopic, p) {
			after[string(r.Key)]++
		}
	}
	if len(after) != events+2 || after[closed] != 1 || after["l/pending"] != 1 {
		t.Errorf("after the restart %d events joined (%s %d times, l/pending %d times), want %d, each once",
			len(after), closed, after[closed], after["l/pending"], events+2)
	}
}

// partitionOf returns the partition a key hashes to in m.
func partitionOf(m *eventlog.Mem, key string) int {
	probe := eventlog.NewMem(map[string]int{"probe": m.Partitions(eventlog.EventsTopic)})
	probe.Write(context.Background(), eventlog.Record{Topic: "probe", Key: []byte(key)})
	for p := range probe.Partitions("probe") {
		if len(probe.Records("probe", p)) > 0 {
			return p
		}
	}
	return -1
}

// TestJoinerPoison feeds a partition records whose output cannot be
// written as is, among ordinary ones: a rank whose joined line is over the
// record size limit, an undecodable record whose dead-letter copy would be
// (the copy adds headers), a rank whose line the log refuses although the
// joiner thinks it fits (a broker with a lower limit), and an event with a
// flood of rewards. None holds up the partition: the lines that cannot be
// written go to the dead-letter topic as references to their inputs, the
// flooded line is written with the outcomes that fit, and every ordinary
// event is joined exactly once.
func TestJoinerPoison(t *testing.T) {
	t.Parallel()
	const limit = 20_000
	m := newMem()
	ctx := context.Background()
	key := func(name string) string { // all in partition 0
		for i := 0; ; i++ {
			if k := fmt.Sprintf("l/%s%d", name, i); partitionOf(m, k) == 0 {
				return k
			}
		}
	}
	bigRank := func(k string, contextBytes int) eventlog.Record {
		ev := rankEvent(k, 0, false, online)
		ev.Context = fmt.Appendf(nil, `{"U":{"s":"%s"},"_multi":[{"a":1},{"b":1},{"c":1}]}`, strings.Repeat("x", contextBytes))
		return record(eventlog.TypeRank, k, ev, t0)
	}
	var recs []eventlog.Record
	var ordinary []string
	addOrdinary := func(n int) {
		for range n {
			k := key(fmt.Sprintf("ok%d-", len(ordinary)))
			ordinary = append(ordinary, k)
			recs = append(recs, record(eventlog.TypeRank, k, rankEvent(k, 0, false, online), t0),
				record(eventlog.TypeReward, k, &eventsv1.RewardEvent{Value: 0.5, Id: uint64(len(ordinary))}, t0.Add(time.Millisecond)))
		}
	}
	addOrdinary(5)
	tooBig, refused, flood, bad := key("toobig"), key("refused"), key("flood"), key("bad")
	recs = append(recs, bigRank(tooBig, 30_000), // over the joiner's limit
		bigRank(refused, 15_000), // within it, over the log's (see below)
		eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(bad), Value: make([]byte, limit-100), // undecodable
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}, Time: t0},
		record(eventlog.TypeRank, flood, rankEvent(flood, 0, false, online), t0))
	var sum float32
	for i := range 1000 {
		v := float32(i%4) / 4
		sum += v
		recs = append(recs, record(eventlog.TypeReward, flood, &eventsv1.RewardEvent{Value: v, Id: uint64(10_000 + i)}, t0.Add(time.Millisecond)))
	}
	addOrdinary(5)
	if err := m.Write(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	// The joiner's limit is 20 KB; the log's is 20 KB for everything but
	// the joined topic, where it is 10 KB: a broker configured lower than
	// the joiner.
	m.MaxRecordBytes = limit
	joined := &limited{w: m.Direct(), topic: eventlog.JoinedTopic, max: 10_000, except: flood}
	cfg := Config{Rules: testRules(), TickInterval: 10 * time.Millisecond, MaxRecordBytes: limit}
	cfg.Aggregation = Sum
	j := New(cfg, slog.New(slog.DiscardHandler), memSource{m}, joined, m, func() time.Time { return t0.Add(time.Hour) })
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- j.Run(runCtx) }()
	waitFor(t, j, "every event", func(s Stats) bool { return s.Emitted == int64(len(ordinary))+3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := j.Counters(); c.Emitted != int64(len(ordinary))+3 || c.Undecodable != 1 || c.Refused != 3 || c.Truncated != 1 || c.Dropped != 0 {
		t.Errorf("counters %+v, want %d emitted, 1 undecodable, 3 refused (too big, refused, bad), 1 truncated", c, len(ordinary)+3)
	}
	lines := map[string][]byte{}
	for _, r := range m.Records(eventlog.JoinedTopic, 0) {
		if _, dup := lines[string(r.Key)]; dup {
			t.Errorf("%s joined twice", r.Key)
		}
		lines[string(r.Key)] = r.Value
	}
	for _, k := range append(ordinary, flood) {
		if lines[k] == nil {
			t.Errorf("%s not joined", k)
		}
	}
	if len(lines) != len(ordinary)+1 {
		t.Errorf("%d lines joined, want the %d ordinary events and the flooded one", len(lines), len(ordinary))
	}
	var fl struct {
		Cost     float32           `json:"_label_cost"`
		Outcomes []json.RawMessage `json:"o"`
	}
	if err := json.Unmarshal(lines[flood], &fl); err != nil || fl.Cost != -sum || len(fl.Outcomes) == 0 || len(fl.Outcomes) >= 1000 || len(lines[flood])+len(flood)+len("typejoined") > limit {
		t.Errorf("flooded line: %d bytes, cost %v (want %v), %d outcomes, %v", len(lines[flood]), fl.Cost, -sum, len(fl.Outcomes), err)
	}
	// References to what cannot be written: the too-big line, the line
	// the log refused as too large, the undecodable record.
	letters := map[string]*eventlog.Record{}
	for _, r := range m.Records(eventlog.DeadLetterTopic, 0) {
		letters[string(r.Key)] = &r
		off, _ := strconv.ParseInt(string(r.Header(eventlog.DeadLetterOffsetHeader)), 10, 64)
		if src := m.Records(eventlog.EventsTopic, 0)[off]; string(src.Key) != string(r.Key) {
			t.Errorf("dead letter %s points at offset %d, which holds %s", r.Key, off, src.Key)
		}
	}
	size := func(k string) int {
		n, _ := strconv.Atoi(string(letters[k].Header(eventlog.DeadLetterSizeHeader)))
		return n
	}
	if n := size(tooBig); n <= limit || len(letters[tooBig].Value) != 0 ||
		!strings.Contains(string(letters[tooBig].Header(eventlog.DeadLetterErrorHeader)), fmt.Sprintf("the joined line has %d bytes", n)) {
		t.Errorf("dead letter of %s: %v, want a reference with the line's size", tooBig, letters[tooBig])
	}
	if r := letters[refused]; size(refused) < 15_000 || r.Type() != eventlog.TypeJoined || len(r.Value) != 0 ||
		!strings.Contains(string(r.Header(eventlog.DeadLetterErrorHeader)), "broker limit") {
		t.Errorf("dead letter of %s: %v, want a reference to the line the log refused", refused, r)
	}
	if size(bad) != limit-100 || len(letters[bad].Value) != 0 {
		t.Errorf("dead letter of %s: %v, want a reference with the record's size", bad, letters[bad])
	}
	if len(letters) != 3 {
		t.Errorf("%d dead letters, want 3", len(letters))
	}
}

// limited is a writer whose log refuses records of one topic over max
// bytes, except those keyed except, as a broker with a lower limit for
// that topic would.
type limited struct {
	w      eventlog.Writer
	topic  string
	max    int
	except string
}

func (l *limited) Write(ctx context.Context, recs ...eventlog.Record) error {
	var ok []eventlog.Record
	var index []int
	var rej []eventlog.Rejected
	for i, r := range recs {
		if r.Topic == l.topic && r.Size() > l.max && string(r.Key) != l.except {
			rej = append(rej, eventlog.Rejected{Index: i, Err: fmt.Errorf("%w: broker limit %d", eventlog.ErrTooLarge, l.max)})
			continue
		}
		ok, index = append(ok, r), append(index, i)
	}
	err := l.w.Write(ctx, ok...)
	var inner *eventlog.RejectedError
	if errors.As(err, &inner) {
		for _, r := range inner.Rejected {
			rej = append(rej, eventlog.Rejected{Index: index[r.Index], Err: r.Err})
		}
	} else if err != nil {
		return err
	}
	if rej == nil {
		return nil
	}
	slices.SortFunc(rej, func(a, b eventlog.Rejected) int { return a.Index - b.Index })
	return &eventlog.RejectedError{Rejected: rej}
}

// TestJoinerLogsUnlearned checks that an outcome that is not learned
// shows in the log, not only in metrics: a caller whose rewards come too
// late learns why from the joiner's log, once per interval.
func TestJoinerLogsUnlearned(t *testing.T) {
	t.Parallel()
	m := newMem()
	var logs syncBuffer
	at := t0
	if err := m.Write(context.Background(),
		record(eventlog.TypeRank, "l/a", rankEvent("l/a", 0, false, online), at),
		record(eventlog.TypeReward, "l/a", &eventsv1.RewardEvent{Value: 1, Id: 1}, at.Add(time.Minute)), // after the 10s window
		record(eventlog.TypeReward, "l/never", &eventsv1.RewardEvent{Value: 1, Id: 2}, at)); err != nil {
		t.Fatal(err)
	}
	j := New(Config{Rules: testRules(), TickInterval: 10 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)),
		memSource{m}, m.Direct(), m, func() time.Time { return at.Add(time.Hour) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	waitFor(t, j, "the late and the dangling reward", func(s Stats) bool { return s.Late == 1 && s.Dangling == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), `level=INFO msg="records not learned: see personalizer.audit"`); n != 1 {
		t.Errorf("%d log lines about records not learned, want 1:\n%s", n, logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rereadFrom is a [Source] over m whose claims read records again from
// another log, so that a rank read back is not what was fetched.
type rereadFrom struct {
	m, again *eventlog.Mem
}

func (s rereadFrom) Consume(ctx context.Context, fn eventlog.ClaimFunc) error {
	return s.m.Consume(ctx, "joiner", eventlog.EventsTopic, func(ctx context.Context, c eventlog.Claim) error {
		return fn(ctx, rereadClaim{c, s.again})
	})
}

type rereadClaim struct {
	eventlog.Claim
	again *eventlog.Mem
}

func (c rereadClaim) Reread(_ context.Context, offset int64) (eventlog.Reader, error) {
	return c.again.Reader(eventlog.EventsTopic, map[int]int64{c.Partition(): offset}), nil
}

// TestJoinerRereadLost checks that a rank record that cannot be read back
// when its window closes (deleted by retention, another key at its
// offset, undecodable) costs its event but not the partition: counted,
// dead-lettered as a reference to its offset, and the events after it
// are joined.
func TestJoinerRereadLost(t *testing.T) {
	t.Parallel()
	one := map[string]int{eventlog.EventsTopic: 1, eventlog.JoinedTopic: 1, eventlog.AuditTopic: 1, eventlog.DeadLetterTopic: 1}
	m, again := eventlog.NewMem(one), eventlog.NewMem(one)
	ctx := context.Background()
	rank := func(key string) eventlog.Record {
		return record(eventlog.TypeRank, key, rankEvent(key, 0, false, online), t0)
	}
	reward := record(eventlog.TypeReward, "l/kept", &eventsv1.RewardEvent{Value: 1, Id: 1}, t0.Add(time.Second))
	if err := m.Write(ctx, rank("l/gone"), rank("l/other"), rank("l/garbled"), rank("l/kept"), reward); err != nil {
		t.Fatal(err)
	}
	garbled := rank("l/garbled")
	garbled.Value = []byte{0xff}
	if err := again.Write(ctx, rank("l/gone"), rank("l/impostor"), garbled, rank("l/kept"), reward); err != nil {
		t.Fatal(err)
	}
	again.Truncate(eventlog.EventsTopic, 0, 1) // retention took l/gone
	cfg := Config{Rules: testRules(), TickInterval: 10 * time.Millisecond}
	j := New(cfg, slog.New(slog.DiscardHandler), rereadFrom{m, again}, m.Direct(), m, func() time.Time { return t0.Add(time.Hour) })
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- j.Run(runCtx) }()
	waitFor(t, j, "every window", func(s Stats) bool { return s.Emitted == 4 && s.Unread == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := j.Counters(); c != (Stats{Emitted: 4, Learnable: 4, DefaultRewards: 3, Unread: 3}) {
		t.Errorf("counters %+v", c)
	}
	joined := m.Records(eventlog.JoinedTopic, 0)
	if len(joined) != 1 || string(joined[0].Key) != "l/kept" || !bytes.Contains(joined[0].Value, []byte(`"_label_cost":-1,`)) {
		t.Errorf("joined %v, want l/kept's line alone", joined)
	}
	wantErr := []string{"the log no longer has it: the next record kept is at offset 1", `the record there has another key, "l/impostor"`, "rank record: "}
	letters := m.Records(eventlog.DeadLetterTopic, 0)
	if len(letters) != 3 {
		t.Fatalf("%d dead letters, want 3", len(letters))
	}
	for i, r := range letters {
		why := string(r.Header(eventlog.DeadLetterErrorHeader))
		if off := string(r.Header(eventlog.DeadLetterOffsetHeader)); off != strconv.Itoa(i) || len(r.Value) != 0 || r.Type() != eventlog.TypeRank ||
			!strings.Contains(why, fmt.Sprintf("rank record at offset %d could not be read back", i)) || !strings.Contains(why, wantErr[i]) {
			t.Errorf("dead letter %d: offset %s, %d value bytes, type %q, error %q; want a reference to offset %d, %q", i, off, len(r.Value), r.Type(), why, i, wantErr[i])
		}
	}
}

// TestJoinerRankCache checks that the joined lines are the same, byte for
// byte and in order, whether ranks come from the cache, from reading the
// log again, or some from each (a cache that holds the ranks of 1.5s), with windows
// of several waits closing out of rank order.
func TestJoinerRankCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var recs []eventlog.Record
	for i := range 300 {
		key := fmt.Sprintf("l/e%d", i)
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		in := ruled(Input{Rank: rankEvent(key, uint32(i%3), false, online)}, time.Duration(1+i%4)*time.Second, 0, "sum")
		recs = append(recs, record(eventlog.TypeRank, key, in.Rank, at))
		if i%2 == 0 {
			recs = append(recs, record(eventlog.TypeReward, key, &eventsv1.RewardEvent{Value: float32(i%5) / 4, Id: uint64(i + 1)}, at.Add(500*time.Millisecond)))
		}
	}
	size := len(recs[0].Value) + len(recs[0].Key) + rankCacheOverhead
	var want [][]eventlog.Record
	for _, cache := range []int{0, 15 * size, 1 << 30} {
		m := newMem()
		if err := m.Write(ctx, recs...); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Rules: testRules(), TickInterval: 10 * time.Millisecond, RankCache: cache}
		j := New(cfg, slog.New(slog.DiscardHandler), memSource{m}, m.Direct(), m, func() time.Time { return t0.Add(time.Hour) })
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- j.Run(runCtx) }()
		waitFor(t, j, "every window", func(s Stats) bool { return s.Emitted == 300 })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if c := j.Counters(); c.Unread != 0 || c.Learnable != 300 || c.DefaultRewards != 150 {
			t.Errorf("cache %d: counters %+v", cache, c)
		}
		var got [][]eventlog.Record
		for p := range 2 {
			got = append(got, m.Records(eventlog.JoinedTopic, p))
		}
		if want == nil {
			want = got
			continue
		}
		for p := range got {
			if !slices.EqualFunc(got[p], want[p], func(a, b eventlog.Record) bool {
				return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value)
			}) {
				t.Errorf("cache %d: partition %d's joined lines differ from those read back", cache, p)
			}
		}
	}
}
