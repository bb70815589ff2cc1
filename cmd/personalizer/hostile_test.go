package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
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
// and an event with a flood of 30,000 rewards. Every ordinary event is
// learned exactly once with its reward; the flooded one too, with the sum
// of its rewards; the two records that cannot be written are dead-lettered
// as references, the skewed one is audited.
func TestJoinerHostileRecords(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 500*time.Millisecond, nil)
	h.rules.MaxSkew = time.Minute
	j := h.startJoiner(faultGroup, nil)
	stop := make(chan struct{})
	produced := h.produce(stop, 200)
	h.waitLearned(100)

	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: h.brokers})
	defer w.Close()
	now := time.Now()
	huge := &eventsv1.RankEvent{Loop: faultLoop, EventId: "huge",
		Context: fmt.Appendf(nil, `{"U":{"s":"%s"},"_multi":[{"A":{"x":1}},{"B":{"x":2}}]}`, strings.Repeat("x", eventlog.DefaultMaxRecordBytes-200)), // the record fits, its joined line not
		Ranking: []uint32{0, 1}, Probabilities: []float32{0.75, 0.25}, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
	skewed := &eventsv1.RankEvent{Loop: faultLoop, EventId: "skewed", Context: []byte(`{"_multi":[{"A":{"x":1}}]}`),
		Ranking: []uint32{0}, Probabilities: []float32{1}, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
	flood := &eventsv1.RankEvent{Loop: faultLoop, EventId: "flood", Context: []byte(`{"U":{"f":1},"_multi":[{"A":{"x":1}},{"B":{"x":2}}]}`),
		Ranking: []uint32{1, 0}, Probabilities: []float32{0.75, 0.25}, LearningMode: eventsv1.LearningMode_LEARNING_MODE_ONLINE}
	recs := []eventlog.Record{
		hostileRecord(eventlog.TypeRank, faultLoop+"/huge", huge, now),
		{Topic: eventlog.EventsTopic, Key: []byte(faultLoop + "/undecodable"), Value: make([]byte, eventlog.DefaultMaxRecordBytes-100), Time: now,
			Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}},
		hostileRecord(eventlog.TypeRank, faultLoop+"/skewed", skewed, now.Add(time.Hour)),
		hostileRecord(eventlog.TypeRank, faultLoop+"/flood", flood, now),
	}
	var sum float32
	for i := range 30_000 {
		v := float32(i%3) / 4
		sum += v
		recs = append(recs, hostileRecord(eventlog.TypeReward, faultLoop+"/flood",
			&eventsv1.RewardEvent{Loop: faultLoop, EventId: "flood", Value: v, Id: uint64(1<<40 + i)}, now.Add(time.Millisecond)))
	}
	h.mu.Lock()
	h.bad += 2 // the huge line and the undecodable record, by reference
	h.audits++ // the skewed rank
	h.want[faultLoop+"/flood"] = -sum
	h.mu.Unlock()
	for len(recs) > 0 {
		n := min(len(recs), 2000)
		if err := w.Write(h.ctx, recs[:n]...); err != nil {
			t.Fatal(err)
		}
		recs = recs[n:]
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
	client personalizerv1.PersonalizerServiceClient
	http   string // the REST API's address

	mu      sync.Mutex
	learned map[string][]float32
}

func startHostileDev(t *testing.T, brokerMax int, extra ...string) *hostileDev {
	t.Helper()
	cfg := testConfig(t, t.TempDir(), append([]string{"--reward-wait", "5s"}, extra...)...)
	cfg.Broker.MaxMessageBytes = brokerMax
	h := &hostileDev{learned: map[string][]float32{}}
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

// restRank posts a Personalizer RankRequest and returns the status and body.
func (h *hostileDev) restRank(t *testing.T, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+h.http+"/personalizer/v1.0/rank", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
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
		if i%2 == 0 {
			req := &personalizerv1.RankRequest{EventId: &id, ContextFeatures: []*personalizerv1.Namespace{{Name: "User", Features: []*personalizerv1.Feature{
				{Name: "tier", Value: &personalizerv1.Feature_StringValue{StringValue: "gold"}}}}},
				Actions: []*personalizerv1.Action{{Id: "news"}, {Id: "sport"}}}
			if _, err := h.client.Rank(ctx, req); err != nil {
				t.Fatalf("ordinary Rank %s: %v", id, err)
			}
			if _, err := h.client.Reward(ctx, &personalizerv1.RewardRequest{EventId: id, Value: v}); err != nil {
				t.Fatalf("ordinary Reward %s: %v", id, err)
			}
		} else {
			if code, body := h.restRank(t, fmt.Appendf(nil, `{"eventId":%q,"contextFeatures":[{"User":{"tier":"gold"}}],"actions":[{"id":"news"},{"id":"sport"}]}`, id)); code != http.StatusCreated {
				t.Fatalf("ordinary REST rank %s: %d %s", id, code, body)
			}
			resp, err := http.Post("http://"+h.http+"/personalizer/v1.0/events/"+id+"/reward", "application/json", strings.NewReader(fmt.Sprintf(`{"value":%v}`, v)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("ordinary REST reward %s: %s", id, resp.Status)
			}
		}
		want["default/"+id] = -v
	}
	return want
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
		code, body := h.restRank(t, []byte(`{"contextFeatures":[{"User":{`+tt.json+`}}],"actions":[{"id":"news"},{"id":"sport"}]}`))
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
