package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// hostileRecord is an events record of typ for key, stamped at.
func hostileRecord(typ, key string, m proto.Message, at time.Time) eventlog.Record {
	v, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(key), Value: v, Time: at,
		Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(typ)}}}
}

// TestJoinerHostileRecords writes records into personalizer.events that
// once stopped a partition or misjudged its time, among a stream of
// ordinary events: a rank whose joined line is over the record size limit
// (a partition retried it forever), an undecodable record whose
// dead-letter copy would be over it (the copy adds headers), a rank
// stamped an hour ahead (it moved the watermark an hour on: every later
// reward was counted late and its event learned with the default reward),
// and an event with a flood of 5,000 rewards. The joiner's record limit is
// 200 KB here, so that the records are quick to write. Every ordinary event is
// learned exactly once with its reward; the flooded one too, with the sum
// of its rewards; the two records that cannot be written are dead-lettered
// as references, the skewed one is audited.
func TestJoinerHostileRecords(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 500*time.Millisecond, nil)
	// The flood's rewards take a while to write on a loaded machine: a
	// longer window than the other fault tests' keeps them in it.
	const limit = 200_000
	h.rules.MaxSkew, h.rules.RewardWait, h.rules.MaxRecordBytes = time.Minute, 5*time.Second, limit
	j := h.startJoiner(faultGroup, nil)
	stop := make(chan struct{})
	produced := h.produce(stop, 200)
	h.waitLearned(100)

	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.brokers})
	defer w.Close()
	huge := &eventsv1.RankEvent{Loop: faultLoop, EventId: "huge",
		Context: fmt.Appendf(nil, `{"U":{"s":"%s"},"_multi":[{"A":{"x":1}},{"B":{"x":2}}]}`, strings.Repeat("x", limit-200)), // the record fits, its joined line not
		Ranking: []uint32{0, 1}, Probabilities: []float32{0.75, 0.25}, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
	skewed := &eventsv1.RankEvent{Loop: faultLoop, EventId: "skewed", Context: []byte(`{"_multi":[{"A":{"x":1}}]}`),
		Ranking: []uint32{0}, Probabilities: []float32{1}, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
	flood := &eventsv1.RankEvent{Loop: faultLoop, EventId: "flood", Context: []byte(`{"U":{"f":1},"_multi":[{"A":{"x":1}},{"B":{"x":2}}]}`),
		Ranking: []uint32{1, 0}, Probabilities: []float32{0.75, 0.25}, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
	// Times are stamped just before the write: on a loaded machine
	// building the records takes longer than a reward window.
	recs := []eventlog.Record{
		hostileRecord(eventlog.TypeRank, faultLoop+"/huge", huge, time.Time{}),
		{Topic: eventlog.EventsTopic, Key: []byte(faultLoop + "/undecodable"), Value: make([]byte, limit-100),
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}},
		hostileRecord(eventlog.TypeRank, faultLoop+"/skewed", skewed, time.Time{}),
		hostileRecord(eventlog.TypeRank, faultLoop+"/flood", flood, time.Time{}),
	}
	var sum float32
	for i := range 5_000 {
		v := float32(i%3) / 4
		sum += v
		recs = append(recs, hostileRecord(eventlog.TypeReward, faultLoop+"/flood",
			&eventsv1.RewardEvent{Loop: faultLoop, EventId: "flood", Value: v, Id: uint64(1<<40 + i)}, time.Time{}))
	}
	h.mu.Lock()
	h.bad += 2 // the huge line and the undecodable record, by reference
	h.audits++ // the skewed rank
	h.want[faultLoop+"/flood"] = -sum
	h.mu.Unlock()
	// One write, the producer's held back, its records stamped by the
	// clock, which holds the joiner's ticks until it is stored: however
	// long the write takes, no later time passes the flood's window.
	h.writing.Lock()
	now := h.clock.hold()
	for i := range recs {
		recs[i].Time = now
		switch {
		case i == 2:
			recs[i].Time = now.Add(time.Hour) // the skewed rank
		case i > 3:
			recs[i].Time = now.Add(time.Millisecond) // the flood's rewards
		}
	}
	err := w.Write(h.ctx, recs...)
	h.clock.release()
	h.writing.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	h.waitLearned(h.learner.Stats().Learned + 200)
	close(stop)
	<-produced
	h.waitAllJoined()
	j.stop()
	r := h.verify()
	c := j.j.Counters()
	t.Logf("%+v; joiner %+v", r, c)
	if c.Refused != 2 || c.Truncated != 1 || c.Skewed != 1 || c.Dropped != 0 || c.Late != 0 || c.Dangling != 0 {
		t.Errorf("joiner counters %+v, want 2 refused, 1 truncated, 1 skewed, nothing dropped, late or dangling", c)
	}
}

// hostileDev is a dev loop whose learner reports what it learned, with a
// broker that refuses record batches over brokerMax bytes (0: Kafka's
// default) and a reward wait long enough for a loaded test machine.
type hostileDev struct {
	*dev
	cfg    devConfig
	client personalizerv1.PersonalizerServiceClient
	http   string // the REST API's address

	mu      sync.Mutex
	learned map[string][]float32
}

func startHostileDev(t *testing.T, brokerMax int, extra ...string) *hostileDev {
	t.Helper()
	cfg := testConfig(t, t.TempDir(), append([]string{"--reward-wait", "5s"}, extra...)...)
	cfg.Broker.MaxMessageBytes = brokerMax
	h := &hostileDev{cfg: cfg, learned: map[string][]float32{}}
	cfg.Learner.Learned = func(key []byte, cost float32) {
		h.mu.Lock()
		h.learned[string(key)] = append(h.learned[string(key)], cost)
		h.mu.Unlock()
	}
	h.dev, h.client = startTestDev(t, cfg)
	t.Cleanup(func() {
		if err := h.close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	h.http = h.api.httpLis.Addr().String()
	return h
}

// ordinary sends n ordinary events, each a Rank and a Reward, over gRPC
// (even i) or REST (odd i), and returns each event's key and the cost the
// learner must learn it with.
func (h *hostileDev) ordinary(t *testing.T, ctx context.Context, prefix string, n int) map[string]float32 {
	t.Helper()
	want := map[string]float32{}
	for i := range n {
		id := fmt.Sprintf("%s%d", prefix, i)
		v := float32(i%5) / 4
		if err := h.event(ctx, id, &v, i%2 == 1); err != nil {
			t.Fatal(err)
		}
		want["default/"+id] = -v
	}
	return want
}

// event sends an ordinary Rank with event id id and, if reward is not nil,
// a Reward, over REST or gRPC.
func (h *hostileDev) event(ctx context.Context, id string, reward *float32, rest bool) error {
	if !rest {
		req := &personalizerv1.RankRequest{EventId: &id, ContextFeatures: []*personalizerv1.Namespace{{Name: "User", Features: []*personalizerv1.Feature{
			{Name: "tier", Value: &personalizerv1.Feature_StringValue{StringValue: "gold"}}}}},
			Actions: []*personalizerv1.Action{{Id: "news"}, {Id: "sport"}}}
		if _, err := h.client.Rank(ctx, req); err != nil {
			return fmt.Errorf("ordinary Rank %s: %w", id, err)
		}
		if reward == nil {
			return nil
		}
		if _, err := h.client.Reward(ctx, &personalizerv1.RewardRequest{EventId: id, Value: *reward}); err != nil {
			return fmt.Errorf("ordinary Reward %s: %w", id, err)
		}
		return nil
	}
	if code, body := h.post(ctx, "/personalizer/v1.0/rank", fmt.Appendf(nil, `{"eventId":%q,"contextFeatures":[{"User":{"tier":"gold"}}],"actions":[{"id":"news"},{"id":"sport"}]}`, id)); code != http.StatusCreated {
		return fmt.Errorf("ordinary REST rank %s: %d %s", id, code, body)
	}
	if reward == nil {
		return nil
	}
	if code, body := h.post(ctx, "/personalizer/v1.0/events/"+id+"/reward", fmt.Appendf(nil, `{"value":%v}`, *reward)); code != http.StatusNoContent {
		return fmt.Errorf("ordinary REST reward %s: %d %s", id, code, body)
	}
	return nil
}

// post posts body to the REST API and returns the status and the body
// (0 and the error's text if the call failed).
func (h *hostileDev) post(ctx context.Context, route string, body []byte) (int, string) {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+h.http+route, bytes.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// checkLearned waits until the learner has learned len(want) events more
// than before and checks that each event of want was learned exactly once
// with its cost.
func (h *hostileDev) checkLearned(t *testing.T, ctx context.Context, before int64, want map[string]float32) {
	t.Helper()
	if err := h.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= before+int64(len(want)) }); err != nil {
		t.Fatalf("waiting for %d learned events: %v (learner %+v, joiner %+v, publisher %+v)", len(want), err,
			h.learner.Stats(), h.joiner.Counters(), h.pub.Stats())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for key, cost := range want {
		if got := h.learned[key]; len(got) != 1 || got[0] != cost {
			t.Errorf("%s learned with costs %v, want once with %v", key, got, cost)
		}
	}
}

// TestDevHostileRequests sends what once stopped the event pipeline or
// stalled other callers, over gRPC and REST: Ranks within every feature
// limit whose events would not fit a Kafka record (a string of control
// characters, six times larger escaped; plain text just under the feature
// bytes limit), a Rank whose features make millions of interaction
// features, and a Rank that fits the server's record limit but not the
// broker's. The first three are refused at the door with InvalidArgument
// or 400 naming the limit; the last is answered and dead-lettered by
// reference. Then every one of 100 ordinary events is written, joined and
// learned exactly once.
func TestDevHostileRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := startHostileDev(t, 400_000)
	many := make([]*personalizerv1.Feature, 3000)
	manyJSON := make([]string, 3000)
	for i := range many {
		many[i] = &personalizerv1.Feature{Name: fmt.Sprint("f", i), Value: &personalizerv1.Feature_NumberValue{NumberValue: 1}}
		manyJSON[i] = fmt.Sprintf(`"f%d":1`, i)
	}
	for _, tt := range []struct {
		name  string
		ns    []*personalizerv1.Feature
		json  string // the same context for REST
		limit string
	}{
		{"control characters", []*personalizerv1.Feature{{Name: "s", Value: &personalizerv1.Feature_StringValue{StringValue: strings.Repeat("\x01", 200_000)}}},
			`"s":"` + strings.Repeat(`\u0001`, 200_000) + `"`, "--max-record-bytes"},
		{"just under the feature bytes limit", []*personalizerv1.Feature{{Name: "s", Value: &personalizerv1.Feature_StringValue{StringValue: strings.Repeat("b", server.DefaultLimits.MaxFeatureBytes-100)}}},
			`"s":"` + strings.Repeat("b", server.DefaultLimits.MaxFeatureBytes-100) + `"`, "--max-record-bytes"},
		{"3000 features in one namespace", many, strings.Join(manyJSON, ","), "--max-interaction-features"},
	} {
		req := &personalizerv1.RankRequest{ContextFeatures: []*personalizerv1.Namespace{{Name: "User", Features: tt.ns}},
			Actions: []*personalizerv1.Action{{Id: "news"}, {Id: "sport"}}}
		_, err := h.client.Rank(ctx, req)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.limit) {
			t.Errorf("%s over gRPC: %v, want InvalidArgument naming %s", tt.name, err, tt.limit)
		}
		code, body := h.post(ctx, "/personalizer/v1.0/rank", []byte(`{"contextFeatures":[{"User":{`+tt.json+`}}],"actions":[{"id":"news"},{"id":"sport"}]}`))
		if code != http.StatusBadRequest || !strings.Contains(body, `"code":"InvalidRankRequest"`) || !strings.Contains(body, tt.limit) {
			t.Errorf("%s over REST: %d %.300s, want 400 InvalidRankRequest naming %s", tt.name, code, body, tt.limit)
		}
	}
	// Within the server's limit, over the broker's: answered, then
	// dead-lettered, and nothing behind it waits.
	big := "big"
	if _, err := h.client.Rank(ctx, &personalizerv1.RankRequest{EventId: &big,
		ContextFeatures: []*personalizerv1.Namespace{{Name: "User", Features: []*personalizerv1.Feature{
			{Name: "s", Value: &personalizerv1.Feature_StringValue{StringValue: strings.Repeat("b", 500_000)}}}}},
		Actions: []*personalizerv1.Action{{Id: "news"}, {Id: "sport"}}}); err != nil {
		t.Fatalf("a Rank within the server's record limit: %v", err)
	}
	want := h.ordinary(t, ctx, "ok", 100)
	h.checkLearned(t, ctx, 0, want)
	if st := h.learner.Stats(); st.Learned != 100 {
		t.Errorf("learner %+v, want exactly the 100 ordinary events learned", st)
	}
	if ps := h.pub.Stats(); ps.Written != 200 || ps.DeadLettered != 1 || ps.Dropped != 0 || ps.Refused != 0 || ps.Failing {
		t.Errorf("publisher %+v, want 200 written, 1 dead-lettered", ps)
	}
	letters := readAll(t, ctx, h.broker.Addrs(), eventlog.DeadLetterTopic)
	if len(letters) != 1 || string(letters[0].Key) != "default/big" || len(letters[0].Value) != 0 || letters[0].Header(eventlog.DeadLetterSizeHeader) == nil {
		t.Errorf("dead letters %v, want one reference to default/big", letters)
	}
	if m := scrape(t, h.http); m["personalizer_events_refused_by_log_total"] != 1 || m["personalizer_events_write_failing"] != 0 {
		t.Errorf("metrics: refused by the log %v, write failing %v", m["personalizer_events_refused_by_log_total"], m["personalizer_events_write_failing"])
	}
}

// readAll reads every record of topic.
func readAll(t *testing.T, ctx context.Context, brokers []string, topic string) []eventlog.Record {
	t.Helper()
	ends, err := kafkalog.EndOffsets(ctx, brokers, topic)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ends {
		n += int(e)
	}
	if n == 0 {
		return nil
	}
	r, err := kafkalog.NewTopicReader(ctx, brokers, topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []eventlog.Record
	for range n {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

// mix counts what TestDevHostileMix sent that the loop must account for.
type mix struct {
	mu        sync.Mutex
	want      map[string]float32 // ordinary and flooded events: key -> cost
	refused   int                // hostile Ranks refused at the door
	bigRefs   int                // records too large to join or to copy: dead-lettered by reference
	skewed    int                // records stamped an hour ahead
	otherLoop int                // ranks of another loop
}

func (m *mix) add(f func(*mix)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m)
}

// TestDevHostileMix mixes, for a bounded time, ordinary events with every
// kind of hostile input the loop has met, over both APIs and straight into
// personalizer.events: Ranks over the record and interaction limits,
// undecodable protobuf, malformed REST bodies, rewards for events that
// never were, invalid event ids, reward floods; and in the topic
// undecodable records (small,
// and too large to copy), ranks whose joined lines are over the record
// limit, records stamped an hour ahead, keyless records, records of an
// unknown type and of another loop. Then every ordinary event is learned
// exactly once with its reward, and the process's heap stayed bounded.
// Meanwhile the learner's disk is broken: it checkpoints nothing until the
// end. Not parallel: it measures the heap.
func TestDevHostileMix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h := startHostileDev(t, 0)
	if err := os.MkdirAll(h.cfg.Learner.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	repair := breakDir(t, h.cfg.Learner.Dir)
	m := &mix{want: map[string]float32{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	run := func(f func(rng *rand.Rand) error, seed uint64) {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(rng); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var maxHeap atomic.Uint64
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > maxHeap.Load() {
				maxHeap.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})

	// Ordinary events, half over REST, some without a reward (the default
	// reward, 0, is learned).
	var ordinary atomic.Int64
	for w := range 2 {
		run(func(rng *rand.Rand) error {
			n := ordinary.Add(1)
			id := fmt.Sprintf("ord%d", n)
			v := float32(rng.IntN(5)) / 4
			reward := &v
			if rng.IntN(4) == 0 {
				reward, v = nil, 0
			}
			if err := h.event(ctx, id, reward, rng.IntN(2) == 0); err != nil {
				return err
			}
			m.add(func(m *mix) { m.want["default/"+id] = -v })
			return nil
		}, uint64(w))
	}

	// Hostile callers.
	control := strings.Repeat("\x01", 200_000)
	many := make([]*personalizerv1.Feature, 3000)
	for i := range many {
		many[i] = &personalizerv1.Feature{Name: fmt.Sprint("f", i), Value: &personalizerv1.Feature_NumberValue{NumberValue: 1}}
	}
	raw, err := grpc.NewClient(h.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var floods atomic.Int64
	hostile := func(rng *rand.Rand) error {
		actions := []*personalizerv1.Action{{Id: "news"}, {Id: "sport"}}
		switch rng.IntN(8) {
		case 7: // protobuf that does not decode: an action id that is not UTF-8
			var out []byte
			err := raw.Invoke(ctx, personalizerv1.PersonalizerService_Rank_FullMethodName, []byte{0x12, 0x03, 0x0a, 0x01, 0xff}, &out, grpc.ForceCodecV2(rawCodec{}))
			if status.Code(err) != codes.InvalidArgument {
				return fmt.Errorf("an undecodable Rank: %v", err)
			}
		case 0: // too large for a record, gRPC
			_, err := h.client.Rank(ctx, &personalizerv1.RankRequest{Actions: actions, ContextFeatures: []*personalizerv1.Namespace{{Name: "U",
				Features: []*personalizerv1.Feature{{Name: "s", Value: &personalizerv1.Feature_StringValue{StringValue: control}}}}}})
			if status.Code(err) != codes.InvalidArgument {
				return fmt.Errorf("a Rank too large for a record: %v", err)
			}
		case 1: // too many interactions, gRPC
			_, err := h.client.Rank(ctx, &personalizerv1.RankRequest{Actions: actions, ContextFeatures: []*personalizerv1.Namespace{{Name: "U", Features: many}}})
			if status.Code(err) != codes.InvalidArgument {
				return fmt.Errorf("a Rank with millions of interactions: %v", err)
			}
		case 2: // too large for a record, REST
			if code, body := h.post(ctx, "/personalizer/v1.0/rank", []byte(`{"contextFeatures":[{"U":{"s":"`+strings.Repeat(`\u0001`, 200_000)+`"}}],"actions":[{"id":"a"}]}`)); code != http.StatusBadRequest {
				return fmt.Errorf("a REST rank too large for a record: %d %.200s", code, body)
			}
		case 3: // not JSON
			if code, _ := h.post(ctx, "/personalizer/v1.0/rank", []byte(`{"actions":[`)); code != http.StatusBadRequest {
				return fmt.Errorf("a REST rank that is not JSON: %d", code)
			}
			return nil
		case 4: // rewards for events that never were, over both APIs
			if _, err := h.client.Reward(ctx, &personalizerv1.RewardRequest{EventId: fmt.Sprint("never", rng.Uint64()), Value: 1}); err != nil {
				return err
			}
			if code, body := h.post(ctx, "/personalizer/v1.0/events/never"+fmt.Sprint(rng.Uint64())+"/reward", []byte(`{"value":1}`)); code != http.StatusNoContent {
				return fmt.Errorf("a reward for an unknown event: %d %s", code, body)
			}
			return nil
		case 5: // an invalid event id: refused or dead-lettered, never learned
			h.post(ctx, "/personalizer/v1.0/events/%ff%fe/reward", []byte(`{"value":1}`))
			return nil
		case 6: // a flood of rewards: learned once, with the earliest
			id := fmt.Sprint("flood", floods.Add(1))
			if err := h.event(ctx, id, nil, false); err != nil {
				return err
			}
			for i := range 50 {
				if _, err := h.client.Reward(ctx, &personalizerv1.RewardRequest{EventId: id, Value: float32(i%4) / 4}); err != nil {
					return err
				}
			}
			m.add(func(m *mix) { m.want["default/"+id] = 0 }) // the earliest reward, 0
			return nil
		}
		m.add(func(m *mix) { m.refused++ })
		return nil
	}
	run(hostile, 10)
	run(hostile, 12)

	// A hostile producer, straight into personalizer.events.
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.broker.Addrs(), MaxRecordBytes: 1_040_000})
	defer w.Close()
	var big atomic.Int64
	run(func(rng *rand.Rand) error {
		now := time.Now()
		key := fmt.Sprint("default/hostile", rng.Uint64())
		rank := func(loop, ctx string) *eventsv1.RankEvent {
			return &eventsv1.RankEvent{Loop: loop, EventId: key, Context: []byte(ctx), Ranking: []uint32{0, 1}, Probabilities: []float32{0.5, 0.5},
				LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
		}
		var rec eventlog.Record
		var count func(*mix)
		switch rng.IntN(8) {
		case 0:
			rec = eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(key), Value: []byte{0xff, 0x01}, Time: now,
				Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}}
		case 1: // undecodable, too large to copy to the dead-letter topic
			if big.Add(1) > 10 {
				return nil
			}
			rec = eventlog.Record{Topic: eventlog.EventsTopic, Key: []byte(key), Value: make([]byte, 1_020_000), Time: now,
				Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeReward)}}}
			count = func(m *mix) { m.bigRefs++ }
		case 2: // a rank whose joined line is over the record limit
			if big.Add(1) > 10 {
				return nil
			}
			rec = hostileRecord(eventlog.TypeRank, key, rank("default", `{"U":{"s":"`+strings.Repeat("x", 1_000_000)+`"},"_multi":[{"a":1},{"b":1}]}`), now)
			count = func(m *mix) { m.bigRefs++ }
		case 3: // an hour ahead
			rec = hostileRecord(eventlog.TypeRank, key, rank("default", `{"_multi":[{"a":1},{"b":1}]}`), now.Add(time.Hour))
			count = func(m *mix) { m.skewed++ }
		case 4:
			rec = hostileRecord(eventlog.TypeReward, key, &eventsv1.RewardEvent{Value: 1, Id: rng.Uint64() | 1}, now.Add(time.Hour))
			count = func(m *mix) { m.skewed++ }
		case 5: // keyless
			rec = hostileRecord(eventlog.TypeRank, "", rank("default", `{}`), now)
		case 6:
			rec = hostileRecord("gossip", key, rank("default", `{}`), now)
		case 7: // another loop's rank: joined, not learned by this loop
			rec = hostileRecord(eventlog.TypeRank, "other/"+key, rank("other", `{"_multi":[{"a":1},{"b":1}]}`), now)
			count = func(m *mix) { m.otherLoop++ }
		}
		if rec.Key == nil {
			rec.Partition = rng.IntN(kafkalog.DefaultEventsPartitions)
		}
		if err := w.Write(ctx, rec); err != nil {
			return fmt.Errorf("hostile producer: %w", err)
		}
		if count != nil {
			m.add(count)
		}
		time.Sleep(5 * time.Millisecond) // pacing, not synchronisation
		return nil
	}, 11)

	select {
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(15 * time.Second):
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	repair()

	m.mu.Lock()
	defer m.mu.Unlock()
	t.Logf("%d ordinary and flooded events, %d refused at the door, %d too large, %d skewed, %d of another loop; heap at most %d MB",
		len(m.want), m.refused, m.bigRefs, m.skewed, m.otherLoop, maxHeap.Load()>>20)
	h.checkLearned(t, ctx, 0, m.want)
	if err := h.learner.Wait(ctx, func(s learner.Stats) bool { return s.OtherLoops >= int64(m.otherLoop) }); err != nil {
		t.Fatalf("waiting for %d records of another loop: %v (%+v)", m.otherLoop, err, h.learner.Stats())
	}
	if st := h.learner.Stats(); st.Learned != int64(len(m.want)) || st.Malformed != 0 || st.OtherLoops != int64(m.otherLoop) {
		t.Errorf("learner %+v, want exactly %d learned, %d of another loop", st, len(m.want), m.otherLoop)
	}
	// Skewed records are audited at the next tick; the joiner's other
	// counts are final once everything ordinary is learned.
	if err := h.joiner.Wait(ctx, func(s joiner.Stats) bool { return s.Skewed >= int64(m.skewed) }); err != nil {
		t.Fatalf("waiting for %d skewed records: %v (%+v)", m.skewed, err, h.joiner.Counters())
	}
	if c := h.joiner.Counters(); c.Refused != int64(m.bigRefs) || c.Skewed != int64(m.skewed) || c.Dropped != 0 {
		t.Errorf("joiner %+v, want %d refused, %d skewed, none dropped", c, m.bigRefs, m.skewed)
	}
	if ps := h.pub.Stats(); ps.Refused != 0 || ps.Lost != 0 || ps.Dropped != 0 || ps.DeadLettered != 0 {
		t.Errorf("publisher %+v, want nothing refused, lost or dead-lettered", ps)
	}
	if n := maxHeap.Load(); n > 1<<30 {
		t.Errorf("heap in use reached %d MB", n>>20)
	}
	// The disk is back: the next checkpoint holds everything learned.
	if err := h.learner.Wait(ctx, func(s learner.Stats) bool { return !s.CheckpointFailing && s.Version > 0 }); err != nil {
		t.Fatalf("no checkpoint after the repair: %v (%+v)", err, h.learner.Stats())
	}
	if st := h.learner.Stats(); st.CheckpointFailures == 0 {
		t.Errorf("learner %+v: the broken disk failed no checkpoint", st)
	}
}
