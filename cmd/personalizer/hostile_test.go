package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
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
