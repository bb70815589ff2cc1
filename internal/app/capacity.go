package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
)

// defaultCapacityInterval is how often a process samples its lag and
// capacity (--capacity-interval).
const defaultCapacityInterval = 10 * time.Second

// capacityIntervalVar registers --capacity-interval.
func capacityIntervalVar(fs *flag.FlagSet, p *time.Duration) {
	fs.DurationVar(p, "capacity-interval", defaultCapacityInterval, "how often to sample lag and capacity (GET /capacity, the *_lag_* and capacity metrics, the growing-lag warning); 0: never")
}

// Growing lag: a lag that grew over lagGrowSamples consecutive samples is
// logged at WARN, at most every lagWarnEvery for each partition.
const (
	lagGrowSamples = 3
	lagWarnEvery   = 5 * time.Minute
)

// capacitySources are what a process's capacity sampler reads; each is nil
// where the process does not have it.
type capacitySources struct {
	// role names the process: dev, server, joiner or learner (see
	// roleEvents).
	role string
	// count counts the role's events so far, what its CPU time is
	// divided by; nil: the examples its learners learned.
	count  func() int64
	joiner *joiner.Joiner
	// learners returns the learners the process runs, by loop.
	learners func() map[string]*learner.Learner
}

// roleEvents says, for each role, what its events are, what it does with
// them, and in what unit.
var roleEvents = map[string]struct{ events, does, unit string }{
	"dev":     {"ranks answered (each also joined and learned)", "serves, joins and learns", "events"},
	"server":  {"ranks answered", "answers", "ranks"},
	"joiner":  {"events joined", "joins", "events"},
	"learner": {"examples learned", "learns", "examples"},
}

// capacity samples, every interval, how far the process's joiner and
// learners are behind their logs and how much CPU its events cost, and
// keeps the latest [capacityReport]: for GET /capacity, the metrics and
// the growing-lag warning. It is the one place these numbers are
// computed. Run owns the sampling state; report may be read from any
// goroutine.
type capacity struct {
	src      capacitySources
	brokers  []string
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time
	cpu      func() (time.Duration, bool) // the process's CPU time, user and system
	cores    int

	latest atomic.Pointer[capacityReport]
	// first is closed when Run's first sample is taken (or failed).
	first chan struct{}

	// Owned by sample's caller.
	insp    *kafkalog.Inspector
	prev    *capacityCounters
	growth  lagGrowth
	failing bool
}

// capacityCounters are the running totals a sample takes; the next sample's
// rates are their differences.
type capacityCounters struct {
	at       time.Time
	cpu      time.Duration
	cpuOK    bool
	events   int64 // counted by count
	input    int64 // records written to personalizer.events: the sum of its end offsets
	consumed joiner.Consumed
	joined   int64
	learned  map[string]int64
}

func newCapacity(src capacitySources, brokers []string, interval time.Duration, log *slog.Logger) *capacity {
	return &capacity{src: src, brokers: brokers, interval: interval, log: log, now: time.Now, cpu: ownCPU, first: make(chan struct{}),
		cores: runtime.GOMAXPROCS(0), growth: lagGrowth{every: lagWarnEvery, samples: lagGrowSamples}}
}

// capacityReport is what GET /capacity answers: the latest sample. Rates
// and costs are over the interval since the sample before; they are null
// in the first sample, and costs per event are null when no event came.
type capacityReport struct {
	Role            string    `json:"role"`
	SampledAt       time.Time `json:"sampled_at"`
	IntervalSeconds float64   `json:"interval_seconds"` // since the sample before; 0 in the first
	Cores           int       `json:"cores"`            // CPUs the process may use (GOMAXPROCS)

	Input    *inputReport    `json:"input,omitempty"`    // processes with a joiner
	Joiner   *joinerReport   `json:"joiner,omitempty"`   // processes with a joiner
	Learners []learnerReport `json:"learners,omitempty"` // processes with learners
	CPU      cpuReport       `json:"cpu"`
	// Headroom says in a sentence what CPU says in numbers.
	Headroom string `json:"headroom"`
}

// inputReport is the event input: personalizer.events, every loop.
type inputReport struct {
	RecordsPerSecond *float64 `json:"records_per_second"` // records written to the topic per second
	BytesPerRecord   *float64 `json:"bytes_per_record"`   // key and value bytes per record the joiner joined
	BytesPerSecond   *float64 `json:"bytes_per_second"`   // records_per_second × bytes_per_record
	BytesPerEvent    *float64 `json:"bytes_per_event"`    // input bytes the joiner joined per event it joined
}

// joinerReport is the process's joiner: the partitions of
// personalizer.events it holds (every loop's records).
type joinerReport struct {
	EventsPerSecond *float64       `json:"events_per_second"` // events joined (written to personalizer.joined)
	Partitions      []partitionLag `json:"partitions"`
}

// learnerReport is one loop's learner: its position in every partition of
// personalizer.joined, which holds every loop's lines.
type learnerReport struct {
	Loop              string         `json:"loop"`
	ExamplesPerSecond *float64       `json:"examples_per_second"`
	Partitions        []partitionLag `json:"partitions"`
}

// partitionLag is how far a consumer is behind one partition.
type partitionLag struct {
	Partition  int   `json:"partition"`
	EndOffset  int64 `json:"end_offset"`  // where the next record will go
	NextOffset int64 `json:"next_offset"` // the first record the consumer has not handled
	LagRecords int64 `json:"lag_records"` // end_offset - next_offset
	// LagSeconds is the time of the newest record minus the time of the
	// record at next_offset; 0 when caught up.
	LagSeconds float64 `json:"lag_seconds"`
	// The joiner's committed checkpoint, which trails next_offset by the
	// open reward windows: where a restart replays from.
	CheckpointOffset     *int64 `json:"checkpoint_offset,omitempty"`
	CheckpointLagRecords *int64 `json:"checkpoint_lag_records,omitempty"`
}

// cpuReport is the process's CPU time per event of its role.
type cpuReport struct {
	Events          string   `json:"events"` // what an event is here
	EventsPerSecond *float64 `json:"events_per_second"`
	BusyCores       *float64 `json:"busy_cores"` // CPU seconds per second
	SecondsPerEvent *float64 `json:"seconds_per_event"`
	// UsableCores is cores, or for a learner process the loops it
	// learns if fewer: each loop learns on one goroutine.
	UsableCores        int      `json:"usable_cores"`
	MaxEventsPerSecond *float64 `json:"max_events_per_second"` // usable_cores / seconds_per_event
}

// report returns the latest sample, nil before the first.
func (c *capacity) report() *capacityReport { return c.latest.Load() }

// Run samples every interval until ctx ends.
func (c *capacity) Run(ctx context.Context) error {
	c.insp = kafkalog.NewInspector(c.brokers)
	defer c.insp.Close()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	c.sampleAndLog(ctx)
	close(c.first)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.sampleAndLog(ctx)
		}
	}
}

// sampleAndLog samples, saying in the log when sampling starts or stops
// failing (the broker is away: other components say more).
func (c *capacity) sampleAndLog(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, c.interval)
	defer cancel()
	err := c.sample(sctx)
	switch {
	case err != nil && ctx.Err() == nil && !c.failing:
		c.log.Warn("lag and capacity not sampled; retrying every interval", "interval", c.interval.String(), "err", err)
		c.failing = true
	case err == nil && c.failing:
		c.log.Info("lag and capacity sampled again")
		c.failing = false
	}
}

// sample takes one sample and makes it the latest report.
func (c *capacity) sample(ctx context.Context) error {
	now := c.now()
	cur := &capacityCounters{at: now}
	cur.cpu, cur.cpuOK = c.cpu()
	if c.src.count != nil {
		cur.events = c.src.count()
	}
	r := &capacityReport{Role: c.src.role, SampledAt: now, Cores: c.cores, CPU: cpuReport{Events: roleEvents[c.src.role].events, UsableCores: c.cores}}
	d := delta{prev: c.prev}
	if d.prev != nil {
		d.dt = now.Sub(d.prev.at).Seconds()
		r.IntervalSeconds = d.dt
	}
	times := map[string]map[int]time.Time{} // newest record times, by topic and partition
	if c.src.joiner != nil {
		if err := c.sampleJoiner(ctx, r, cur, d, times); err != nil {
			return err
		}
	}
	var learned int64
	if c.src.learners != nil {
		var err error
		if learned, err = c.sampleLearners(ctx, r, cur, d, times); err != nil {
			return err
		}
	}
	if d.prev != nil {
		events := learned
		if c.src.count != nil {
			events = cur.events - d.prev.events
		}
		r.CPU.EventsPerSecond = d.rate(float64(events))
		if cur.cpuOK && d.prev.cpuOK {
			busy := (cur.cpu - d.prev.cpu).Seconds()
			r.CPU.BusyCores = d.rate(busy)
			r.CPU.SecondsPerEvent = d.per(busy, float64(events))
			if s := r.CPU.SecondsPerEvent; s != nil && *s > 0 {
				r.CPU.MaxEventsPerSecond = ptr(float64(r.CPU.UsableCores) / *s)
			}
		}
	}
	r.Headroom = headroom(r)
	c.prev = cur
	c.latest.Store(r)
	c.warnGrowing(r)
	return nil
}

// delta turns the differences of two samples' counters into rates and
// ratios: none (nil) without a previous sample, for a negative difference
// (a counter that started again) or for nothing to divide by.
type delta struct {
	prev *capacityCounters
	dt   float64 // seconds since prev
}

func (d delta) rate(diff float64) *float64 {
	if d.prev == nil || d.dt <= 0 || diff < 0 {
		return nil
	}
	return ptr(diff / d.dt)
}

func (d delta) per(num, den float64) *float64 {
	if d.prev == nil || den <= 0 || num < 0 {
		return nil
	}
	return ptr(num / den)
}

// sampleJoiner fills in r's input and joiner, from the joiner's positions
// and counters and the bounds of personalizer.events.
func (c *capacity) sampleJoiner(ctx context.Context, r *capacityReport, cur *capacityCounters, d delta, times map[string]map[int]time.Time) error {
	j := c.src.joiner
	// The positions are read before the end offsets, so that a record
	// joined in between cannot make the lag negative.
	pos := j.Positions()
	cur.consumed, cur.joined = j.Consumed(), j.Counters().Emitted
	bounds, err := c.insp.Bounds(ctx, eventlog.EventsTopic)
	if err != nil {
		return err
	}
	for _, b := range bounds {
		cur.input += b.End
	}
	r.Joiner, r.Input = &joinerReport{}, &inputReport{}
	for _, p := range slices.Sorted(maps.Keys(pos)) {
		b, ok := bounds[p]
		if !ok {
			continue
		}
		l, err := c.lag(ctx, eventlog.EventsTopic, p, b, pos[p].Next, times)
		if err != nil {
			return err
		}
		cp := max(pos[p].Committed, b.Start)
		l.CheckpointOffset, l.CheckpointLagRecords = ptr(cp), ptr(max(b.End-cp, 0))
		r.Joiner.Partitions = append(r.Joiner.Partitions, l)
	}
	if prev := d.prev; prev != nil {
		records, bytes := float64(cur.consumed.Records-prev.consumed.Records), float64(cur.consumed.Bytes-prev.consumed.Bytes)
		in := r.Input
		in.RecordsPerSecond = d.rate(float64(cur.input - prev.input))
		in.BytesPerRecord = d.per(bytes, records)
		if in.RecordsPerSecond != nil && in.BytesPerRecord != nil {
			in.BytesPerSecond = ptr(*in.RecordsPerSecond * *in.BytesPerRecord)
		}
		in.BytesPerEvent = d.per(bytes, float64(cur.joined-prev.joined))
		r.Joiner.EventsPerSecond = d.rate(float64(cur.joined - prev.joined))
	}
	return nil
}

// sampleLearners fills in r's learners, from their positions and counters
// and the bounds of personalizer.joined, and returns the examples learned
// since the previous sample by the loops learned then too.
func (c *capacity) sampleLearners(ctx context.Context, r *capacityReport, cur *capacityCounters, d delta, times map[string]map[int]time.Time) (learned int64, err error) {
	ls := c.src.learners()
	cur.learned = make(map[string]int64, len(ls))
	if c.src.count == nil {
		// Each loop learns on one goroutine: a core each at most.
		r.CPU.UsableCores = max(min(c.cores, len(ls)), 1)
	}
	var bounds map[int]kafkalog.Bounds
	if len(ls) > 0 {
		if bounds, err = c.insp.Bounds(ctx, eventlog.JoinedTopic); err != nil {
			return 0, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(ls)) {
		st := ls[name].Stats()
		cur.learned[name] = st.Learned
		lr := learnerReport{Loop: name}
		if d.prev != nil {
			if before, ok := d.prev.learned[name]; ok {
				lr.ExamplesPerSecond = d.rate(float64(st.Learned - before))
				learned += st.Learned - before
			}
		}
		for _, p := range slices.Sorted(maps.Keys(bounds)) {
			next, ok := st.Offsets[p]
			if !ok {
				next = bounds[p].Start // read from the log start
			}
			l, err := c.lag(ctx, eventlog.JoinedTopic, p, bounds[p], next, times)
			if err != nil {
				return 0, err
			}
			lr.Partitions = append(lr.Partitions, l)
		}
		r.Learners = append(r.Learners, lr)
	}
	return learned, nil
}

// lag is how far a consumer whose next record is next is behind partition
// p of topic, whose bounds are b. It fetches the times of the newest record
// and of the one at next only when the consumer is behind; times caches
// the newest records' times of this sample.
func (c *capacity) lag(ctx context.Context, topic string, p int, b kafkalog.Bounds, next int64, times map[string]map[int]time.Time) (partitionLag, error) {
	next = min(max(next, b.Start), b.End) // records before the log start are gone: a reader resumes there
	l := partitionLag{Partition: p, EndOffset: b.End, NextOffset: next, LagRecords: b.End - next}
	if l.LagRecords == 0 {
		return l, nil
	}
	if times[topic] == nil {
		times[topic] = map[int]time.Time{}
	}
	newest, ok := times[topic][p]
	if !ok {
		t, found, err := c.insp.RecordTime(ctx, topic, p, b.End-1, b.End)
		if err != nil {
			return l, err
		}
		if !found {
			return l, nil // emptied since its bounds were read
		}
		newest, times[topic][p] = t, t
	}
	at, found, err := c.insp.RecordTime(ctx, topic, p, next, b.End)
	if err != nil || !found {
		return l, err
	}
	l.LagSeconds = max(newest.Sub(at).Seconds(), 0)
	return l, nil
}

// headroom is r's capacity in a sentence.
func headroom(r *capacityReport) string {
	most := r.CPU.MaxEventsPerSecond
	if most == nil {
		return "not measured yet: it takes two samples with events between them"
	}
	re, now := roleEvents[r.Role], 0.0
	if r.CPU.EventsPerSecond != nil {
		now = *r.CPU.EventsPerSecond
	}
	size := ""
	if r.Input != nil && r.Input.BytesPerEvent != nil {
		size = fmt.Sprintf("at %.0f bytes per event, ", *r.Input.BytesPerEvent)
	}
	return fmt.Sprintf("%sthis %s process %s up to %.0f %s per second on %d cores (%.0f µs of CPU each; now %.1f per second)",
		size, r.Role, re.does, *most, re.unit, r.CPU.UsableCores, *r.CPU.SecondsPerEvent*1e6, now)
}

// warnGrowing logs the lags that grew over the last samples.
func (c *capacity) warnGrowing(r *capacityReport) {
	seen := map[string]bool{}
	check := func(key string, args []any, l partitionLag) {
		seen[key] = true
		if c.growth.observe(key, l.LagRecords, r.SampledAt) {
			c.log.Warn("lag keeps growing: input arrives faster than it is handled", append(args, "partition", l.Partition,
				"lag_records", l.LagRecords, "lag_seconds", l.LagSeconds, "samples", c.growth.samples+1, "headroom", r.Headroom)...)
		}
	}
	if r.Joiner != nil {
		for _, l := range r.Joiner.Partitions {
			check("joiner/"+strconv.Itoa(l.Partition), []any{"role", "joiner"}, l)
		}
	}
	for _, lr := range r.Learners {
		for _, l := range lr.Partitions {
			check("learner/"+lr.Loop+"/"+strconv.Itoa(l.Partition), []any{"role", "learner", "loop", lr.Loop}, l)
		}
	}
	c.growth.forget(seen)
}

// lagGrowth tells, for each series of lag samples, when it has grown
// samples times in a row, at most every every.
type lagGrowth struct {
	every   time.Duration
	samples int
	series  map[string]*lagSeries
}

type lagSeries struct {
	last   int64
	grew   int // consecutive samples that grew
	warned time.Time
}

// observe records lag sampled at now for key, and reports whether to warn.
func (g *lagGrowth) observe(key string, lag int64, now time.Time) bool {
	if g.series == nil {
		g.series = map[string]*lagSeries{}
	}
	s, ok := g.series[key]
	if !ok {
		g.series[key] = &lagSeries{last: lag}
		return false
	}
	if lag > s.last {
		s.grew++
	} else {
		s.grew = 0
	}
	s.last = lag
	if s.grew < g.samples || (!s.warned.IsZero() && now.Sub(s.warned) < g.every) {
		return false
	}
	s.warned = now
	return true
}

// forget drops the series not in seen: partitions the process no longer
// holds, loops deleted.
func (g *lagGrowth) forget(seen map[string]bool) {
	for k := range g.series {
		if !seen[k] {
			delete(g.series, k)
		}
	}
}

// serve answers GET /capacity on mux with the latest report. A request
// that comes before the first sample waits for it (it is taken as the
// process starts), so that the first scrape after a start has numbers.
func (c *capacity) serve(mux *http.ServeMux) {
	mux.HandleFunc("GET /capacity", func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-c.first:
		case <-req.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		r := c.report()
		if r == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]string{"error": "no sample yet"})
			return
		}
		json.NewEncoder(w).Encode(r)
	})
}

// register exports the latest report as metrics with reg.
func (c *capacity) register(reg prometheus.Registerer) {
	reg.MustRegister(capacityCollector{c})
}

// capacityCollector exports a [capacity]'s latest report; its partitions
// and loops come and go, so it is an unchecked collector.
type capacityCollector struct{ c *capacity }

func (capacityCollector) Describe(chan<- *prometheus.Desc) {}

var (
	descJoinerLag = prometheus.NewDesc("personalizer_joiner_lag_records",
		"Records of personalizer.events (every loop's) in a partition this joiner holds that it has not joined yet: the end offset minus the first record whose output is not written.", []string{"partition"}, nil)
	descJoinerLagSeconds = prometheus.NewDesc("personalizer_joiner_lag_seconds",
		"Time of the newest record of the partition minus time of the first record the joiner has not joined; 0 when caught up.", []string{"partition"}, nil)
	descJoinerCheckpointLag = prometheus.NewDesc("personalizer_joiner_checkpoint_lag_records",
		"Records after the joiner's committed checkpoint in the partition: what a restart replays. It trails by design: events are kept for their reward wait plus the backward window.", []string{"partition"}, nil)
	descLearnerLag = prometheus.NewDesc("personalizer_learner_lag_records",
		"Records of personalizer.joined (every loop's lines) in the partition that the loop's learner has not read yet.", []string{"loop", "partition"}, nil)
	descLearnerLagSeconds = prometheus.NewDesc("personalizer_learner_lag_seconds",
		"Time of the newest record of the partition minus time of the first record the loop's learner has not read; 0 when caught up.", []string{"loop", "partition"}, nil)
	descLearnerRate = prometheus.NewDesc("personalizer_learner_examples_per_second",
		"Examples the loop's learner learned per second over the last sampling interval.", []string{"loop"}, nil)
	descInputRecords = prometheus.NewDesc("personalizer_input_records_per_second",
		"Records written to personalizer.events per second over the last sampling interval (every loop's).", nil, nil)
	descInputBytes = prometheus.NewDesc("personalizer_input_bytes_per_second",
		"Input bytes per second: personalizer_input_records_per_second times personalizer_input_bytes_per_record.", nil, nil)
	descInputBytesPerRecord = prometheus.NewDesc("personalizer_input_bytes_per_record",
		"Key and value bytes per input record the joiner joined over the last sampling interval.", nil, nil)
	descInputBytesPerEvent = prometheus.NewDesc("personalizer_input_bytes_per_event",
		"Input bytes (ranks, rewards, activations, ticks) the joiner joined per event it joined over the last sampling interval.", nil, nil)
	descJoinerRate = prometheus.NewDesc("personalizer_joiner_events_per_second",
		"Events the joiner joined (wrote to personalizer.joined) per second over the last sampling interval.", nil, nil)
	descCPUBusy = prometheus.NewDesc("personalizer_capacity_busy_cores",
		"CPU seconds per second the process used over the last sampling interval.", []string{"role"}, nil)
	descCPURate = prometheus.NewDesc("personalizer_capacity_events_per_second",
		"Events of the process's role per second over the last sampling interval (server and dev: ranks answered; joiner: events joined; learner: examples learned).", []string{"role"}, nil)
	descCPUPerEvent = prometheus.NewDesc("personalizer_capacity_cpu_seconds_per_event",
		"CPU seconds the process used per event of its role over the last sampling interval.", []string{"role"}, nil)
	descCPUMax = prometheus.NewDesc("personalizer_capacity_max_events_per_second",
		"Events per second the process could handle at the measured CPU per event: its usable cores (GOMAXPROCS; a learner process: at most one per loop) / personalizer_capacity_cpu_seconds_per_event.", []string{"role"}, nil)
)

func (cc capacityCollector) Collect(ch chan<- prometheus.Metric) {
	r := cc.c.report()
	if r == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v *float64, labels ...string) {
		if v != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, *v, labels...)
		}
	}
	if r.Joiner != nil {
		for _, l := range r.Joiner.Partitions {
			p := strconv.Itoa(l.Partition)
			gauge(descJoinerLag, ptr(float64(l.LagRecords)), p)
			gauge(descJoinerLagSeconds, &l.LagSeconds, p)
			if l.CheckpointLagRecords != nil {
				gauge(descJoinerCheckpointLag, ptr(float64(*l.CheckpointLagRecords)), p)
			}
		}
		gauge(descJoinerRate, r.Joiner.EventsPerSecond)
	}
	if in := r.Input; in != nil {
		gauge(descInputRecords, in.RecordsPerSecond)
		gauge(descInputBytes, in.BytesPerSecond)
		gauge(descInputBytesPerRecord, in.BytesPerRecord)
		gauge(descInputBytesPerEvent, in.BytesPerEvent)
	}
	for _, lr := range r.Learners {
		for _, l := range lr.Partitions {
			p := strconv.Itoa(l.Partition)
			gauge(descLearnerLag, ptr(float64(l.LagRecords)), lr.Loop, p)
			gauge(descLearnerLagSeconds, &l.LagSeconds, lr.Loop, p)
		}
		gauge(descLearnerRate, lr.ExamplesPerSecond, lr.Loop)
	}
	gauge(descCPUBusy, r.CPU.BusyCores, r.Role)
	gauge(descCPURate, r.CPU.EventsPerSecond, r.Role)
	gauge(descCPUPerEvent, r.CPU.SecondsPerEvent, r.Role)
	gauge(descCPUMax, r.CPU.MaxEventsPerSecond, r.Role)
}

// ownCPU is the process's CPU time (Linux: /proc/self/stat, in 10 ms
// ticks); false where it cannot be read.
func ownCPU() (time.Duration, bool) {
	d, err := processCPU(os.Getpid())
	return d, err == nil
}

func ptr[T any](v T) *T { return &v }

// startCapacity makes the process's capacity sampler unless interval is 0
// (then it returns nil): it answers GET /capacity on mux (nil: the process
// serves no HTTP) and exports its metrics with reg (nil: none). It samples
// once its Run runs, in the stage of the roles it samples.
func startCapacity(src capacitySources, brokers []string, interval time.Duration, mux *http.ServeMux, reg *prometheus.Registry, log *slog.Logger) *capacity {
	if interval <= 0 {
		return nil
	}
	c := newCapacity(src, brokers, interval, log)
	if mux != nil {
		c.serve(mux)
	}
	if reg != nil {
		c.register(reg)
	}
	return c
}

// learnersOf returns the learners svc serves, by loop.
func learnersOf(svc *learner.Service) func() map[string]*learner.Learner {
	return func() map[string]*learner.Learner {
		ls := map[string]*learner.Learner{}
		for _, name := range svc.Loops() {
			if l, ok := svc.Commands(name).(*learner.Learner); ok {
				ls[name] = l
			}
		}
		return ls
	}
}

// ranksAnswered counts the Rank calls a server answered: the count of its
// latency histogram, personalizer_rank_duration_seconds, in g.
func ranksAnswered(g prometheus.Gatherer) func() int64 {
	return func() int64 {
		mfs, _ := g.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "personalizer_rank_duration_seconds" && len(mf.GetMetric()) > 0 {
				return int64(mf.GetMetric()[0].GetHistogram().GetSampleCount())
			}
		}
		return 0
	}
}
