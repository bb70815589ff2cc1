package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/telemetry"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
)

// lagBroker starts a broker with the events and joined topics, of
// kafkalog.DefaultEventsPartitions partitions, and returns its addresses and a writer that puts each
// record in its Partition.
func lagBroker(t testing.TB, ctx context.Context) ([]string, *kafkalog.Writer) {
	t.Helper()
	b, err := kafkalog.StartBroker(kafkalog.BrokerConfig{Addr: "127.0.0.1:0", DataDir: t.TempDir(), MinSessionTimeout: time.Second}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	brokers := b.Addrs()
	var specs []kafkalog.TopicSpec
	for _, topic := range []string{eventlog.EventsTopic, eventlog.JoinedTopic, eventlog.AuditTopic, eventlog.DeadLetterTopic} {
		specs = append(specs, kafkalog.TopicSpec{Name: topic, Partitions: kafkalog.DefaultEventsPartitions})
	}
	if err := kafkalog.EnsureTopics(ctx, brokers, specs...); err != nil {
		t.Fatal(err)
	}
	w := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: brokers, ByPartition: true})
	t.Cleanup(func() { w.Close() })
	return brokers, w
}

// storedTimes returns the time the broker stored with each record of
// topic, by partition and offset.
func storedTimes(t *testing.T, ctx context.Context, brokers []string, topic string, n int) map[int]map[int64]time.Time {
	t.Helper()
	r, err := kafkalog.NewTopicReader(ctx, brokers, topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	times := map[int]map[int64]time.Time{}
	for range n {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if times[rec.Partition] == nil {
			times[rec.Partition] = map[int64]time.Time{}
		}
		times[rec.Partition][rec.Offset] = rec.Time
	}
	return times
}

// fakeClock returns times start, start+step, start+2*step... one a call.
func fakeClock(start time.Time, step time.Duration) func() time.Time {
	var n atomic.Int64
	return func() time.Time { return start.Add(time.Duration(n.Add(1)-1) * step) }
}

// TestLearnerLag: a stopped learner is behind by exactly the records
// written since it stopped, in each partition, and by the time between the
// first of them and the newest.
func TestLearnerLag(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	brokers, w := lagBroker(t, ctx)
	lines := bytes.Split(bytes.TrimSpace(gunzip(t, "../../testdata/vw/public_train.dsjson.gz")), []byte("\n"))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	next := 0
	// write writes n lines of loop "lag" to partition p, a second apart.
	write := func(p, n int) {
		t.Helper()
		recs := make([]eventlog.Record, n)
		for i := range recs {
			recs[i] = eventlog.Record{Topic: eventlog.JoinedTopic, Partition: p, Key: fmt.Appendf(nil, "lag/e%d", next),
				Value: lines[next], Time: t0.Add(time.Duration(next) * time.Second),
				Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeJoined)}}}
			next++
		}
		if err := w.Write(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 5)
	write(1, 5)

	l, err := learner.New(learner.Config{Loop: "lag", Policy: bandit.DefaultPolicy, ExportEvery: time.Hour, Dir: t.TempDir(), Remember: 1 << 10},
		testLogger(), learner.NewStore(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- l.Run(lctx, func(ctx context.Context, start map[int]int64) (eventlog.Reader, error) {
			return kafkalog.NewTopicReader(ctx, brokers, eventlog.JoinedTopic, start)
		})
	}()
	if err := l.Wait(ctx, func(s learner.Stats) bool { return s.Offsets[0] == 5 && s.Offsets[1] == 5 }); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Learned != 10 {
		t.Fatalf("learned %d examples, want 10", st.Learned)
	}
	write(0, 3)
	write(1, 4)

	var logged syncBuffer
	learners := func() map[string]*learner.Learner { return map[string]*learner.Learner{"lag": l} }
	c := newCapacity(capacitySources{role: "learner", learners: learners},
		brokers, time.Second, slog.New(slog.NewJSONHandler(&logged, nil)))
	c.now = fakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 10*time.Second)
	c.insp = kafkalog.NewInspector(brokers)
	defer c.insp.Close()
	if err := c.sample(ctx); err != nil {
		t.Fatal(err)
	}
	times := storedTimes(t, ctx, brokers, eventlog.JoinedTopic, next)
	r := c.report()
	if len(r.Learners) != 1 || r.Learners[0].Loop != "lag" || len(r.Learners[0].Partitions) != kafkalog.DefaultEventsPartitions {
		t.Fatalf("learners %+v, want loop lag with %d partitions", r.Learners, kafkalog.DefaultEventsPartitions)
	}
	for p, want := range map[int]struct{ end, lag int64 }{0: {8, 3}, 1: {9, 4}} {
		got := r.Learners[0].Partitions[p]
		seconds := times[p][want.end-1].Sub(times[p][5]).Seconds()
		if got.Partition != p || got.EndOffset != want.end || got.NextOffset != 5 || got.LagRecords != want.lag || got.LagSeconds != seconds {
			t.Errorf("partition %d: %+v, want end %d, next 5, lag %d records, %v s", p, got, want.end, want.lag, seconds)
		}
		if got.CheckpointOffset != nil {
			t.Errorf("partition %d: a learner has no committed checkpoint, got %d", p, *got.CheckpointOffset)
		}
	}
	for _, got := range r.Learners[0].Partitions[2:] { // empty
		if got.EndOffset != 0 || got.NextOffset != 0 || got.LagRecords != 0 || got.LagSeconds != 0 {
			t.Errorf("empty partition %d: %+v", got.Partition, got)
		}
	}
	// The broker keeps the writer's times: the lag is the written records'.
	if s0, s1 := r.Learners[0].Partitions[0].LagSeconds, r.Learners[0].Partitions[1].LagSeconds; s0 != 2 || s1 != 3 {
		t.Errorf("partitions lag %v and %v s, want 2 (lines 10 to 12, a second apart) and 3 (lines 13 to 16)", s0, s1)
	}

	// The metrics say the same.
	reg := prometheus.NewRegistry()
	c.register(reg)
	got := gatherGauges(t, reg)
	for k, want := range map[string]float64{
		`personalizer_learner_lag_records{loop="lag",partition="0"}`: 3,
		`personalizer_learner_lag_records{loop="lag",partition="1"}`: 4,
		`personalizer_learner_lag_seconds{loop="lag",partition="1"}`: 3,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}

	// Partition 0's lag grows over three more samples: one warning.
	for range lagGrowSamples {
		write(0, 1)
		if err := c.sample(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var warning struct {
		Msg, Role, Loop string
		Partition       int
		LagRecords      int64 `json:"lag_records"`
	}
	logLines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	if len(logLines) != 1 || json.Unmarshal([]byte(logLines[0]), &warning) != nil {
		t.Fatalf("log: %q, want one warning", logLines)
	}
	if warning.Msg != "lag keeps growing: input arrives faster than it is handled" || warning.Role != "learner" || warning.Loop != "lag" ||
		warning.Partition != 0 || warning.LagRecords != 3+lagGrowSamples {
		t.Errorf("warning %+v", warning)
	}
}

// gatherGauges returns reg's gauges by name and labels.
func gatherGauges(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()+labelString(m.GetLabel())] = m.GetGauge().GetValue()
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	s := "{"
	for i, l := range ls {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
	}
	return s + "}"
}

// gatedSource is a consumer group whose claims stop handing out records
// once paused: the joiner then stands still, as a stopped one would, while
// it keeps its partitions.
type gatedSource struct {
	joiner.Source
	paused atomic.Bool
}

func (g *gatedSource) Consume(ctx context.Context, fn eventlog.ClaimFunc) error {
	return g.Source.Consume(ctx, func(ctx context.Context, c eventlog.Claim) error { return fn(ctx, gatedClaim{c, g}) })
}

type gatedClaim struct {
	eventlog.Claim
	g *gatedSource
}

// Fetch holds a record fetched while paused until the claim ends: it is
// not handed out.
func (c gatedClaim) Fetch(ctx context.Context) (eventlog.Record, error) {
	rec, err := c.Claim.Fetch(ctx)
	if c.g.paused.Load() {
		<-ctx.Done()
		return eventlog.Record{}, ctx.Err()
	}
	return rec, err
}

// TestJoinerLag: a joiner that stopped reading is behind by exactly the
// records written since, in each partition, and by the time between the
// first of them and the newest; its checkpoint is where it committed. The
// input rate and bytes are those of the records it joined.
func TestJoinerLag(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	brokers, w := lagBroker(t, ctx)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	next := 0
	var written, writtenBytes int64
	// write writes the records of n events to partition p, a second apart.
	write := func(p, n int) {
		t.Helper()
		var recs []eventlog.Record
		for range n {
			evs, _, _ := eventRecords(next, t0.Add(time.Duration(next)*time.Second))
			for _, r := range evs {
				r.Partition = p
				recs = append(recs, r)
				written++
				writtenBytes += int64(len(r.Key) + len(r.Value))
			}
			next++
		}
		if err := w.Write(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}

	rules := faultRules(0)
	rules.TickInterval = time.Hour // no ticks: every record is one the test wrote
	src := &gatedSource{Source: kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: brokers, GroupID: "lag", Topic: eventlog.EventsTopic,
		SessionTimeout: faultSession, RebalanceTimeout: faultRebalance, HeartbeatInterval: faultHeartbeat}, testLogger())}
	out := kafkalog.NewWriter(kafkalog.WriterConfig{Brokers: brokers, ByPartition: true})
	defer out.Close()
	j := joiner.New(rules, testLogger(), src, out, out, time.Now)
	c := newCapacity(capacitySources{role: "joiner", count: func() int64 { return j.Counters().Emitted }, joiner: j},
		brokers, 10*time.Second, testLogger())
	c.now = fakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 10*time.Second)
	c.insp = kafkalog.NewInspector(brokers)
	defer c.insp.Close()
	if err := c.sample(ctx); err != nil { // nothing written yet
		t.Fatal(err)
	}

	jctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- j.Run(jctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	write(0, 6)
	write(1, 6)
	ends, err := kafkalog.EndOffsets(ctx, brokers, eventlog.EventsTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Wait(ctx, func(joiner.Stats) bool {
		pos := j.Positions()
		return pos[0].Next == ends[0] && pos[1].Next == ends[1]
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.sample(ctx); err != nil {
		t.Fatal(err)
	}
	r := c.report()
	joined := j.Counters().Emitted
	if r.IntervalSeconds != 10 || r.Input == nil || r.Joiner == nil {
		t.Fatalf("second sample: %+v", r)
	}
	if got := *r.Input.RecordsPerSecond; got != float64(written)/10 {
		t.Errorf("input: %v records/s, want %v", got, float64(written)/10)
	}
	if got := *r.Input.BytesPerRecord; got != float64(writtenBytes)/float64(written) {
		t.Errorf("input: %v bytes/record, want %v", got, float64(writtenBytes)/float64(written))
	}
	if got := *r.Input.BytesPerSecond; got != float64(writtenBytes)/10 {
		t.Errorf("input: %v bytes/s, want %v", got, float64(writtenBytes)/10)
	}
	if joined == 0 || r.Input.BytesPerEvent == nil || *r.Input.BytesPerEvent != float64(writtenBytes)/float64(joined) {
		t.Errorf("input: %v bytes/event, want %v (%d events joined)", r.Input.BytesPerEvent, float64(writtenBytes)/float64(joined), joined)
	}
	for _, l := range r.Joiner.Partitions {
		if l.LagRecords != 0 || l.LagSeconds != 0 {
			t.Errorf("caught up, partition %d lags %+v", l.Partition, l)
		}
	}

	src.paused.Store(true)
	before := written
	write(0, 2) // 1 + 2 records: event 12 (no reward) and 13 (one)
	write(1, 1) // 3 records: event 14, two rewards
	if err := c.sample(ctx); err != nil {
		t.Fatal(err)
	}
	r = c.report()
	pos := j.Positions()
	times := storedTimes(t, ctx, brokers, eventlog.EventsTopic, int(written))
	if len(r.Joiner.Partitions) != kafkalog.DefaultEventsPartitions {
		t.Fatalf("joiner partitions %+v, want %d", r.Joiner.Partitions, kafkalog.DefaultEventsPartitions)
	}
	lags := map[int]int64{0: 3, 1: 3} // 2 and 3 are empty
	if lags[0]+lags[1] != written-before {
		t.Fatalf("test: %d records written while paused", written-before)
	}
	for _, got := range r.Joiner.Partitions {
		p := got.Partition
		end := ends[p] + lags[p]
		seconds := times[p][end-1].Sub(times[p][ends[p]]).Seconds()
		if got.EndOffset != end || got.NextOffset != ends[p] || got.LagRecords != lags[p] || got.LagSeconds != seconds {
			t.Errorf("partition %d: %+v, want end %d, next %d, lag %d records, %v s", p, got, end, ends[p], lags[p], seconds)
		}
		if cp := max(pos[p].Committed, 0); got.CheckpointOffset == nil || *got.CheckpointOffset != cp || *got.CheckpointLagRecords != end-cp {
			t.Errorf("partition %d: checkpoint %v, lag %v; want %d, %d", p, got.CheckpointOffset, got.CheckpointLagRecords, cp, end-cp)
		}
	}
	// Event 13's reward comes 1 s and 1 ms after event 12's rank; event
	// 14's second reward 2 ms after its rank.
	if s0, s1 := r.Joiner.Partitions[0].LagSeconds, r.Joiner.Partitions[1].LagSeconds; s0 != 1.001 || s1 != 0.002 {
		t.Errorf("partitions lag %v and %v s, want 1.001 and 0.002", s0, s1)
	}
	if got := *r.Input.RecordsPerSecond; got != float64(written-before)/10 {
		t.Errorf("input while paused: %v records/s, want %v", got, float64(written-before)/10)
	}
	if r.Input.BytesPerRecord != nil || *r.Joiner.EventsPerSecond != 0 {
		t.Errorf("nothing joined while paused, got %v bytes/record, %v events/s", r.Input.BytesPerRecord, *r.Joiner.EventsPerSecond)
	}
}

// TestCapacityCPU: CPU per event, the most events the cores take and the
// headroom sentence, from the CPU time and events of two samples.
func TestCapacityCPU(t *testing.T) {
	t.Parallel()
	var events int64
	cpu := 3 * time.Second
	c := newCapacity(capacitySources{role: "server", count: func() int64 { return events }}, nil, 10*time.Second, testLogger())
	c.now = fakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 10*time.Second)
	c.cpu = func() (time.Duration, bool) { return cpu, true }
	c.cores = 2
	ctx := context.Background()
	if err := c.sample(ctx); err != nil {
		t.Fatal(err)
	}
	r := c.report()
	if r.CPU.SecondsPerEvent != nil || r.CPU.EventsPerSecond != nil || r.IntervalSeconds != 0 {
		t.Errorf("first sample has rates: %+v", r.CPU)
	}
	events, cpu = 20000, 3*time.Second+5*time.Second // 20,000 ranks in 10 s on 0.5 cores
	if err := c.sample(ctx); err != nil {
		t.Fatal(err)
	}
	r = c.report()
	want := cpuReport{Events: "ranks answered", EventsPerSecond: ptr(2000.0), BusyCores: ptr(0.5), SecondsPerEvent: ptr(250e-6), UsableCores: 2, MaxEventsPerSecond: ptr(8000.0)}
	if got, _ := json.Marshal(r.CPU); string(got) != string(must(json.Marshal(want))) {
		t.Errorf("cpu %s, want %s", got, must(json.Marshal(want)))
	}
	if want := "this server process answers up to 8000 ranks per second on 2 cores (250 µs of CPU each; now 2000.0 per second)"; r.Headroom != want {
		t.Errorf("headroom %q, want %q", r.Headroom, want)
	}
	if r.Input != nil || r.Joiner != nil || r.Learners != nil {
		t.Errorf("a server reports no input, joiner or learners: %+v", r)
	}
	if err := c.sample(ctx); err != nil { // no ranks since
		t.Fatal(err)
	}
	if r := c.report(); r.CPU.SecondsPerEvent != nil || *r.CPU.EventsPerSecond != 0 || *r.CPU.BusyCores != 0 {
		t.Errorf("no events: %+v", r.CPU)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestLagGrowth: a lag that grew over three samples in a row is reported,
// then not again for a while, and not when it held still in between.
func TestLagGrowth(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		lags []int64
		want []bool
	}{
		{"grows", []int64{1, 2, 3, 4, 5, 6}, []bool{false, false, false, true, false, false}},
		{"holds between", []int64{1, 2, 3, 3, 4, 5, 6}, []bool{false, false, false, false, false, false, true}},
		{"caught up", []int64{0, 0, 0, 0, 0}, []bool{false, false, false, false, false}},
		{"shrinks", []int64{9, 8, 7, 6}, []bool{false, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := lagGrowth{every: time.Minute, samples: 3}
			for i, lag := range tt.lags {
				if got := g.observe("k", lag, t0.Add(time.Duration(i)*10*time.Second)); got != tt.want[i] {
					t.Errorf("sample %d (lag %d): warn %v, want %v", i, lag, got, tt.want[i])
				}
			}
		})
	}
	// Rate limit: growing on, it warns again once a minute has passed.
	g := lagGrowth{every: time.Minute, samples: 3}
	var warned []int
	for i := range 20 {
		if g.observe("k", int64(i), t0.Add(time.Duration(i)*10*time.Second)) {
			warned = append(warned, i)
		}
	}
	if fmt.Sprint(warned) != "[3 9 15]" {
		t.Errorf("warned at samples %v, want [3 9 15]", warned)
	}
	g.forget(map[string]bool{})
	if len(g.series) != 0 {
		t.Errorf("forgot nothing: %v", g.series)
	}
}

// TestCapacityEndpoint: dev answers GET /capacity with its sample, and its
// metrics carry it.
func TestCapacityEndpoint(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, t.TempDir(), "--capacity-interval", "1h")
	d, _ := startTestDev(t, cfg)
	defer d.close()
	resp, err := http.Get("http://" + d.api.httpLis.Addr().String() + "/capacity")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /capacity: %d %s", resp.StatusCode, body)
	}
	var r map[string]any
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"role", "sampled_at", "interval_seconds", "cores", "input", "joiner", "learners", "cpu", "headroom"} {
		if _, ok := r[k]; !ok {
			t.Errorf("no %q in %s", k, body)
		}
	}
	if r["role"] != "dev" || r["interval_seconds"] != 0.0 || r["headroom"] != "not measured yet: it takes two samples with events between them" {
		t.Errorf("first sample: %s", body)
	}
	cpu := r["cpu"].(map[string]any)
	if cpu["events"] != "ranks answered (each also joined and learned)" || cpu["seconds_per_event"] != nil {
		t.Errorf("cpu: %v", cpu)
	}
	learners := r["learners"].([]any)
	own := learners[0].(map[string]any)
	if len(learners) != 1 || own["loop"] != cfg.Loop || len(own["partitions"].([]any)) != kafkalog.DefaultEventsPartitions {
		t.Errorf("learners: %v", learners)
	}
	p0 := own["partitions"].([]any)[0].(map[string]any)
	for _, k := range []string{"partition", "end_offset", "next_offset", "lag_records", "lag_seconds"} {
		if _, ok := p0[k]; !ok {
			t.Errorf("no %q in a learner's partition: %v", k, p0)
		}
	}
	for _, k := range []string{"records_per_second", "bytes_per_record", "bytes_per_second", "bytes_per_event"} {
		if v, ok := r["input"].(map[string]any)[k]; !ok || v != nil {
			t.Errorf("input %q: %v, want null in the first sample", k, v)
		}
	}
	got := gatherGauges(t, d.api.metrics)
	if v, ok := got[`personalizer_learner_lag_records{loop="`+cfg.Loop+`",partition="0"}`]; !ok || v != p0["lag_records"] {
		t.Errorf("metric personalizer_learner_lag_records: %v %v, want %v", v, ok, p0["lag_records"])
	}
}

// BenchmarkCapacitySample measures one sample of a dev-like process: a
// joiner holding every partition of personalizer.events, caught up, a
// loop's learner, and the ranks counted from the registry. "caught-up":
// the learner has read everything; "lagging": it has read nothing, so
// every partition of personalizer.joined costs two fetches. cpu-ns/sample
// is the process's CPU time (the broker's included, in this process) per
// sample.
func BenchmarkCapacitySample(b *testing.B) {
	ctx := b.Context()
	brokers, w := lagBroker(b, ctx)
	lines := bytes.Split(bytes.TrimSpace(gunzip(b, "../../testdata/vw/public_train.dsjson.gz")), []byte("\n"))
	const n = 4000
	var joined, events []eventlog.Record
	for i := range n {
		p := i % kafkalog.DefaultEventsPartitions
		joined = append(joined, eventlog.Record{Topic: eventlog.JoinedTopic, Partition: p, Key: fmt.Appendf(nil, "bench/e%d", i),
			Value: lines[i%len(lines)], Time: time.Now(), Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeJoined)}}})
		recs, _, _ := eventRecords(i, time.Now().Add(-time.Hour))
		for _, r := range recs {
			r.Partition = p
			events = append(events, r)
		}
	}
	if err := w.Write(ctx, joined...); err != nil {
		b.Fatal(err)
	}
	if err := w.Write(ctx, events...); err != nil {
		b.Fatal(err)
	}
	rules := faultRules(0)
	rules.TickInterval = time.Hour
	j := joiner.New(rules, testLogger(), kafkalog.NewGroup(kafkalog.GroupConfig{Brokers: brokers, GroupID: "bench", Topic: eventlog.EventsTopic}, testLogger()),
		w, w, time.Now)
	jctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- j.Run(jctx) }()
	defer func() { stop(); <-done }()
	ends, err := kafkalog.EndOffsets(ctx, brokers, eventlog.EventsTopic)
	if err != nil {
		b.Fatal(err)
	}
	if err := j.Wait(ctx, func(joiner.Stats) bool {
		pos := j.Positions()
		for p, end := range ends {
			if pos[p].Next != end {
				return false
			}
		}
		return true
	}); err != nil {
		b.Fatal(err)
	}
	newLearner := func() *learner.Learner {
		l, err := learner.New(learner.Config{Loop: "bench", Policy: bandit.DefaultPolicy, ExportEvery: time.Hour, Dir: b.TempDir(), Remember: 1 << 14},
			testLogger(), learner.NewStore(), time.Now)
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	caughtUp := newLearner()
	lctx, lstop := context.WithCancel(ctx)
	ldone := make(chan error, 1)
	go func() {
		ldone <- caughtUp.Run(lctx, func(ctx context.Context, start map[int]int64) (eventlog.Reader, error) {
			return kafkalog.NewTopicReader(ctx, brokers, eventlog.JoinedTopic, start)
		})
	}()
	if err := caughtUp.Wait(ctx, func(s learner.Stats) bool {
		var sum int64
		for _, off := range s.Offsets {
			sum += off
		}
		return sum == n
	}); err != nil {
		b.Fatal(err)
	}
	lstop()
	<-ldone
	for _, bc := range []struct {
		name string
		l    *learner.Learner
	}{{"caught-up", caughtUp}, {"lagging", newLearner()}} {
		b.Run(bc.name, func(b *testing.B) {
			reg := newRegistry()
			telemetry.ServerInterceptors(testLogger(), reg) // registers the Rank histogram
			c := newCapacity(capacitySources{role: "dev", count: ranksAnswered(reg), joiner: j,
				learners: func() map[string]*learner.Learner { return map[string]*learner.Learner{"bench": bc.l} }}, brokers, time.Second, testLogger())
			c.register(reg)
			c.insp = kafkalog.NewInspector(brokers)
			defer c.insp.Close()
			cpu0, _ := ownCPU()
			for b.Loop() {
				if err := c.sample(ctx); err != nil {
					b.Fatal(err)
				}
			}
			cpu1, _ := ownCPU()
			b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/sample")
			r := c.report()
			if lag := r.Learners[0].Partitions[0].LagRecords; (bc.name == "lagging") != (lag > 0) {
				b.Fatalf("%s: learner lags %d records", bc.name, lag)
			}
		})
	}
}

// getCapacity returns what GET /capacity on addr answers.
func getCapacity(t *testing.T, addr string) capacityReport {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/capacity")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r capacityReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /capacity: %d, %v", resp.StatusCode, err)
	}
	return r
}
