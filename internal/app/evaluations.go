package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/loop"
	"github.com/open-personalizer/personalizer/server"
)

// Evaluations' timing. A running evaluation rewrites its record every
// evalHeartbeat with its progress; one whose record has not changed for
// evalStale and that no goroutine of this process runs is answered as
// failed: the process that ran it stopped.
const (
	evalHeartbeat = 5 * time.Second
	evalStale     = 30 * time.Second
	// evalDedupe is how many recent event keys an evaluation remembers to
	// drop repeated joined events (the learner remembers more; repeats
	// are rare and near each other).
	evalDedupe = 1 << 16
	// evalMaxBuckets bounds the time buckets of an evaluation's
	// summaries, which keeps its record small (see evalBucket).
	evalMaxBuckets = 24
)

// evaluationsTopicSpec is personalizer.evaluations: compacted, one
// partition, kept forever, as personalizer.config.
func evaluationsTopicSpec() kafkalog.TopicSpec {
	spec := kafkalog.ConfigTopicSpec()
	spec.Name = eventlog.EvaluationsTopic
	return spec
}

// evalRecord is an evaluation as personalizer.evaluations stores it: the
// Evaluation, and the custom policies it evaluates (so that its record
// says everything it was asked).
type evalRecord struct {
	server.Evaluation
	Loop     string                    `json:"loop"`
	Contract server.EvaluationContract `json:"contract"`
	// Current is the loop's policy when the evaluation was created, which
	// a search (enableOfflineExperimentation) searches around.
	Current string    `json:"current,omitempty"`
	Updated time.Time `json:"updated"` // when this record was written
	// Period is the scheduled time of an auto-optimization run (see
	// autoSchedule); zero for the others.
	Period time.Time `json:"period,omitzero"`
}

// evaluations is the [server.EvaluationAdmin] of a serving process: it
// follows personalizer.evaluations into memory, writes to it, and runs the
// evaluations created here in the background, over the loop's records of
// personalizer.joined read directly from the broker.
type evaluations struct {
	brokers []string
	w       *kafkalog.Writer
	log     *slog.Logger

	mu      sync.Mutex
	all     map[string]*evalRecord        // by loop/id, as the topic holds them
	running map[string]context.CancelFunc // the evaluations this process runs
	changed chan struct{}                 // closed and replaced on every change of all
	runCtx  context.Context               // the lifetime of the runs; nil until follow starts
	slot    chan struct{}                 // holds the evaluation running in this process
	runs    sync.WaitGroup                // the runs' goroutines, added to under mu while !stopped
	stopped bool                          // follow has returned
	ready   chan struct{}                 // closed once the topic's records at start are read
	kept    evalModels                    // the models the evaluations run here trained

	// hold, when set (by tests), is called by a run once its status is
	// running, before it reads anything, with the run's context.
	hold func(ctx context.Context)
	// applyAuto, set by the process's autoOptimizer, applies an
	// auto-optimization's optimal policy with its model.
	applyAuto func(ctx context.Context, loop string, p loop.Policy, model []byte) error
}

// newEvaluations returns the evaluations of a process that keeps in
// memory up to keptBytes of the model files its evaluations trained, for
// applyFromEvaluation (0: none).
func newEvaluations(brokers []string, w *kafkalog.Writer, keptBytes int64, log *slog.Logger) *evaluations {
	return &evaluations{brokers: brokers, w: w, log: log, all: map[string]*evalRecord{},
		running: map[string]context.CancelFunc{}, changed: make(chan struct{}), ready: make(chan struct{}), slot: make(chan struct{}, 1),
		kept: evalModels{limit: keptBytes, files: map[string]map[string][]byte{}}}
}

// evalModels are the model files of the custom and searched policies of
// the evaluations that completed in this process, newest first kept, up
// to limit bytes in all; guarded by the evaluations' mu.
type evalModels struct {
	limit int64
	size  int64
	order []string                     // evaluation keys, oldest first
	files map[string]map[string][]byte // by evaluation key, then policy name
}

// keep keeps the model files of evaluation key, dropping the oldest
// evaluations' to make room; an evaluation whose files alone take more
// than the limit is not kept.
func (k *evalModels) keep(key string, files map[string][]byte) {
	var n int64
	for _, f := range files {
		n += int64(len(f))
	}
	k.drop(key)
	if n > k.limit || len(files) == 0 {
		return
	}
	for k.size+n > k.limit {
		k.drop(k.order[0])
	}
	k.files[key], k.size, k.order = files, k.size+n, append(k.order, key)
}

func (k *evalModels) drop(key string) {
	files, ok := k.files[key]
	if !ok {
		return
	}
	for _, f := range files {
		k.size -= int64(len(f))
	}
	delete(k.files, key)
	k.order = slices.DeleteFunc(k.order, func(o string) bool { return o == key })
}

// modelFile is m as a model file (bandit's format, what PUT /model takes).
func modelFile(m *bandit.Model) []byte {
	var b bytes.Buffer
	m.WriteTo(&b) // a bytes.Buffer does not fail
	return b.Bytes()
}

// follow applies the topic (created with the configuration topic, by
// followConfigs) until ctx ends; evaluations created here run until ctx
// ends too.
func (e *evaluations) follow(ctx context.Context) error {
	e.mu.Lock()
	e.runCtx = ctx
	e.mu.Unlock()
	err := kafkalog.FollowCompacted(ctx, e.brokers, eventlog.EvaluationsTopic, e.log, e.apply, func() { close(e.ready) })
	e.mu.Lock()
	e.stopped = true // no run starts now
	e.mu.Unlock()
	e.runs.Wait() // they stop with ctx, leaving their records as they are
	return err
}

func (e *evaluations) apply(key, value []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := string(key)
	defer e.notify()
	if value == nil {
		delete(e.all, k)
		e.kept.drop(k)
		if stop, ok := e.running[k]; ok { // deleted through another process
			stop()
			delete(e.running, k)
		}
		return
	}
	var r evalRecord
	if err := json.Unmarshal(value, &r); err != nil {
		e.log.Warn("evaluation record skipped", "key", k, "err", err)
		return
	}
	e.all[k] = &r
}

func (e *evaluations) notify() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// await waits until done holds for the record of key (nil when absent).
func (e *evaluations) await(ctx context.Context, key string, done func(*evalRecord) bool) error {
	ctx, cancel := context.WithTimeout(ctx, readBack)
	defer cancel()
	for {
		e.mu.Lock()
		ok, ch := done(e.all[key]), e.changed
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("evaluation %s written but not read back yet: %w", key, ctx.Err())
		}
	}
}

// waitReady waits until the topic's records at start are read.
func (e *evaluations) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, configWait)
	defer cancel()
	select {
	case <-e.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("evaluations not read yet: %w", ctx.Err())
	}
}

func evalKey(loop, id string) string { return loop + "/" + id }

// write stores r.
func (e *evaluations) write(ctx context.Context, r *evalRecord) error {
	r.Updated = time.Now().UTC()
	value, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return e.w.Write(ctx, eventlog.Record{Topic: eventlog.EvaluationsTopic, Key: []byte(evalKey(r.Loop, r.ID)), Value: value})
}

// newID is a random UUID (version 4), as Personalizer's evaluation ids.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (e *evaluations) Create(ctx context.Context, loop string, c server.EvaluationContract) (*server.Evaluation, error) {
	e.mu.Lock()
	runCtx := e.runCtx
	e.mu.Unlock()
	if runCtx == nil {
		return nil, status.Error(codes.Unavailable, "evaluations are not read yet")
	}
	start, end, err := joinedOffsets(ctx, e.brokers, c.StartTime)
	if err != nil {
		return nil, err
	}
	current := ""
	if c.EnableOfflineExperimentation || c.EnableFeatureImportance {
		current = c.Current // the loop's policy, set by the Admin
	}
	r, err := newEvalRecord(loop, c, current, server.EvaluationManual, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	if _, err := e.launch(ctx, runCtx, r, start, end); err != nil {
		return nil, err
	}
	out := r.Evaluation
	return &out, nil
}

// newEvalRecord is a pending evaluation of c on loop, with a search
// around current if it is not "".
func newEvalRecord(loop string, c server.EvaluationContract, current, typ string, created time.Time) (*evalRecord, error) {
	id := newID()
	r := &evalRecord{Loop: loop, Contract: c, Current: current, Evaluation: server.Evaluation{ID: id, JobID: id, Name: c.Name,
		StartTime: c.StartTime, EndTime: c.EndTime, Status: server.EvaluationPending, FeatureImportance: [][]string{},
		EvaluationType: typ, CreationTime: created}}
	pols, err := evalPolicies(c, current)
	if err != nil {
		return nil, fmt.Errorf("search around the loop's policy: %w", err)
	}
	for _, p := range pols {
		r.PolicyResults = append(r.PolicyResults, evaluate.PolicyResult{Policy: p, Summary: []evaluate.Summary{}})
	}
	return r, nil
}

// launch stores r and runs it in the background, in runCtx, over the
// joined records between the offsets start and end; the returned channel
// is closed when the run ends.
func (e *evaluations) launch(ctx, runCtx context.Context, r *evalRecord, start, end map[int]int64) (<-chan struct{}, error) {
	key := evalKey(r.Loop, r.ID)
	run, stop := context.WithCancel(runCtx)
	e.mu.Lock()
	e.running[key] = stop
	e.mu.Unlock()
	if err := e.write(ctx, r); err != nil {
		e.forget(key)
		return nil, fmt.Errorf("store evaluation: %w", err)
	}
	if err := e.await(ctx, key, func(cur *evalRecord) bool { return cur != nil }); err != nil {
		e.forget(key)
		return nil, err
	}
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		e.forget(key)
		return nil, errors.New("evaluations stopped: the process is shutting down")
	}
	e.runs.Add(1)
	e.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer e.runs.Done()
		defer close(done)
		e.run(run, key, *r, start, end)
	}()
	return done, nil
}

// joinedOffsets returns the offsets of personalizer.joined from which its
// records are written at from or later (the events from then on are in
// them: a joined record is written after its event), and its end
// offsets; an error wrapping server.ErrNoLogsInRange if there are none.
func joinedOffsets(ctx context.Context, brokers []string, from time.Time) (start, end map[int]int64, err error) {
	start, err = kafkalog.OffsetsAt(ctx, brokers, eventlog.JoinedTopic, from)
	if err != nil {
		return nil, nil, fmt.Errorf("find the joined events since %v: %w", from, err)
	}
	end, err = kafkalog.EndOffsets(ctx, brokers, eventlog.JoinedTopic)
	if err != nil {
		return nil, nil, fmt.Errorf("find the end of the joined events: %w", err)
	}
	some := false
	for p, off := range start {
		some = some || off < end[p]
	}
	if !some {
		return nil, nil, server.ErrNoLogsInRange
	}
	return start, end, nil
}

// joinedRange opens loop's records of personalizer.joined between the
// offsets start and end, passing on those whose "Timestamp" is in
// [from, to); done releases them.
func joinedRange(ctx context.Context, brokers []string, loop string, start, end map[int]int64, from, to time.Time) (in *inRange, done func(), err error) {
	open := func(ctx context.Context, start map[int]int64) (eventlog.Reader, error) {
		return kafkalog.NewTopicReader(ctx, brokers, eventlog.JoinedTopic, start)
	}
	src, err := learner.OpenJoined(ctx, open, loop, start, end, evalDedupe)
	if err != nil {
		return nil, nil, err
	}
	return &inRange{src: src, from: from, to: to}, func() { src.Close() }, nil
}

// forget stops running key here.
func (e *evaluations) forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if stop, ok := e.running[key]; ok {
		stop()
		delete(e.running, key)
	}
}

// evalPolicies are the policies of an evaluation of c, in the order of
// its results: with a search around current (not ""), its candidates
// last; with feature importance, current (named Current) last.
func evalPolicies(c server.EvaluationContract, current string) ([]evaluate.Policy, error) {
	ps := []evaluate.Policy{{Name: evaluate.Online, Source: evaluate.Online}, {Name: evaluate.Baseline, Source: evaluate.Baseline},
		{Name: evaluate.Random, Source: evaluate.Random}}
	for _, p := range c.Policies {
		ps = append(ps, evaluate.Policy{Name: p.Name, Arguments: p.Arguments, Source: evaluate.Custom})
	}
	if c.EnableFeatureImportance {
		return append(ps, evaluate.Policy{Name: evaluate.CurrentName, Arguments: current, Source: evaluate.Custom}), nil
	}
	if current == "" {
		return ps, nil
	}
	cands, err := evaluate.Candidates(current, evaluate.DefaultBudget)
	return append(ps, cands...), err
}

// evalBucket is the time bucket of an evaluation's summaries over span:
// the shortest of Personalizer's aggregation windows (5 minutes to a day,
// then a week) giving at most evalMaxBuckets buckets, or span divided in
// evalMaxBuckets, rounded up to a day.
func evalBucket(span time.Duration) time.Duration {
	for _, b := range []time.Duration{5 * time.Minute, time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour} {
		if span <= evalMaxBuckets*b {
			return b
		}
	}
	day := 24 * time.Hour
	return (span/evalMaxBuckets + day - 1) / day * day
}

// store writes r unless the evaluation was deleted (it no longer runs
// here): under the lock, so that a Delete's tombstone is written after it.
func (e *evaluations) store(ctx context.Context, key string, r *evalRecord) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.running[key]; !ok {
		return context.Canceled
	}
	return e.write(ctx, r)
}

// run evaluates r over the joined records of its loop between the
// offsets start and end, keeping its record up to date.
func (e *evaluations) run(ctx context.Context, key string, r evalRecord, start, end map[int]int64) {
	defer e.forget(key)
	log := e.log.With("loop", r.Loop, "evaluation", r.ID)
	var mu sync.Mutex // guards r's progress, updated by the evaluation's goroutine
	snapshot := func() *evalRecord {
		mu.Lock()
		defer mu.Unlock()
		c := r
		return &c
	}
	beat := time.NewTicker(evalHeartbeat)
	defer beat.Stop()
	done, beaten := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(beaten)
		for {
			select {
			case <-beat.C:
				if err := e.store(ctx, key, snapshot()); err != nil && ctx.Err() == nil {
					log.Warn("evaluation progress not stored", "err", err)
				}
			case <-done:
				return
			}
		}
	}()
	// stopBeat returns once no progress write can follow.
	stopBeat := sync.OnceFunc(func() {
		close(done)
		<-beaten
	})
	defer stopBeat()
	// One evaluation at a time in a process: the others stay pending.
	select {
	case e.slot <- struct{}{}:
		defer func() { <-e.slot }()
	case <-ctx.Done():
		return
	}
	mu.Lock()
	r.Status = server.EvaluationRunning
	mu.Unlock()
	if err := e.store(ctx, key, snapshot()); err != nil {
		return
	}
	if e.hold != nil {
		e.hold(ctx)
	}
	res, err := e.evaluate(ctx, &r.Contract, r.Loop, r.Current, start, end, func(p server.EvaluationProgress) {
		mu.Lock()
		r.Progress = p
		mu.Unlock()
	})
	stopBeat()            // no progress write after the final one
	if ctx.Err() != nil { // deleted, or the process stops: its record stays as it is
		log.Info("evaluation stopped", "err", ctx.Err())
		return
	}
	final := snapshot()
	if err != nil {
		final.Status, final.Error = server.EvaluationFailed, err.Error()
		log.Warn("evaluation failed", "err", err)
	} else {
		res.complete(&final.Evaluation)
		e.keep(key, res.SearchResult)
		log.Info("evaluation completed", "evaluated", res.Evaluated, "lines", res.Lines)
		if final.EvaluationType == server.EvaluationAuto {
			e.finishAuto(ctx, final, res.SearchResult)
			log.Info("auto-optimization "+final.Status, "optimal_policy", res.OptimalPolicy, "err", final.Error)
		}
	}
	if err := e.store(context.WithoutCancel(ctx), key, final); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("evaluation result not stored", "err", err)
	}
}

// keep keeps the model files of the custom and searched policies of
// res, the result of evaluation key.
func (e *evaluations) keep(key string, res *evaluate.SearchResult) {
	files := map[string][]byte{}
	for i, m := range res.Models {
		files[res.Policies[3+i].Name] = modelFile(m)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.running[key]; ok { // not deleted meanwhile
		e.kept.keep(key, files)
	}
}

// evalResult is what an evaluation found: its results with the optimal
// policy ("" without a search or if none beats Online), and with feature
// importance the featureImportance groups and featureScores.
type evalResult struct {
	*evaluate.SearchResult
	groups [][]string
	scores []evaluate.FeatureScore
}

// complete makes e a completed evaluation with r's results.
func (r *evalResult) complete(e *server.Evaluation) {
	e.Status, e.PolicyResults, e.Counts = server.EvaluationCompleted, r.Policies, &r.Counts
	e.OptimalPolicy, e.FeatureImportance, e.FeatureScores = r.OptimalPolicy, r.groups, r.scores
	if e.FeatureImportance == nil {
		e.FeatureImportance = [][]string{}
	}
	e.Progress.Evaluated = r.Evaluated
}

// evaluate runs the evaluation of c on loop's joined records between
// start and end whose Timestamp is in [c.StartTime, c.EndTime), with a
// search around current or its feature importance if c asks.
func (e *evaluations) evaluate(ctx context.Context, c *server.EvaluationContract, loop, current string, start, end map[int]int64,
	progress func(server.EvaluationProgress)) (*evalResult, error) {
	var in *inRange
	open := func(ctx context.Context) (learner.Examples, func(), error) {
		r, done, err := joinedRange(ctx, e.brokers, loop, start, end, c.StartTime, c.EndTime)
		in = r
		return r, done, err
	}
	cfg := evaluate.Config{Bucket: evalBucket(c.EndTime.Sub(c.StartTime)), Workers: 1,
		Progress: func(p evaluate.Progress) {
			progress(server.EvaluationProgress{Lines: in.lines.Load(), Evaluated: p.Evaluated, OutOfRange: in.outside.Load()})
		}}
	for _, p := range c.Policies {
		cfg.Custom = append(cfg.Custom, evaluate.Policy{Name: p.Name, Arguments: p.Arguments})
	}
	if c.EnableFeatureImportance {
		imp, err := evaluate.ImportanceOpen(ctx, cfg, current, evaluate.DefaultFeatures, open)
		if err != nil {
			return nil, err
		}
		return importanceResult(imp), nil
	}
	src, done, err := open(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	if current == "" {
		res, err := evaluate.Run(ctx, cfg, src)
		if err != nil {
			return nil, err
		}
		return &evalResult{SearchResult: &evaluate.SearchResult{Result: res, Best: -1}}, nil
	}
	found, err := evaluate.Search(ctx, cfg, current, evaluate.DefaultBudget, src)
	if err != nil {
		return nil, err
	}
	return &evalResult{SearchResult: found}, nil
}

// importanceResult is an evaluation's result of a feature importance
// run: its policies up to Current (the copies without a namespace or a
// feature are summed up by the feature scores), featureImportance and
// featureScores.
func importanceResult(imp *evaluate.ImportanceResult) *evalResult {
	res := *imp.Result
	for k, p := range res.Policies {
		if p.Name == evaluate.CurrentName && p.Arguments == imp.Current {
			res.Policies = res.Policies[:k+1]
			break
		}
	}
	res.Models = res.Models[:min(len(res.Models), len(res.Policies)-3)] // the custom policies' and Current's
	return &evalResult{SearchResult: &evaluate.SearchResult{Result: &res, Best: -1}, groups: imp.FeatureImportance, scores: imp.FeatureScores}
}

// inRange passes on the lines of src whose "Timestamp" is in [from, to).
// Its counts are read by the evaluation's progress, on another goroutine.
type inRange struct {
	src            learner.Examples
	from, to       time.Time
	lines, outside atomic.Int64
}

var timestampField = []byte(`"Timestamp":"`)

func (r *inRange) Next(ctx context.Context) (learner.Example, error) {
	for {
		ex, err := r.src.Next(ctx)
		if err != nil {
			return ex, err
		}
		r.lines.Add(1)
		if t, ok := lineTime(ex.Data); ok && !t.Before(r.from) && t.Before(r.to) {
			return ex, nil
		}
		r.outside.Add(1)
	}
}

// lineTime reads a joined line's "Timestamp" (the joiner writes it before
// the context, so the first match is the event's).
func lineTime(line []byte) (time.Time, bool) {
	i := bytes.Index(line, timestampField)
	if i < 0 {
		return time.Time{}, false
	}
	rest := line[i+len(timestampField):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return t, err == nil
}

// view is r as answered: one that no process runs any more (its record
// unchanged for evalStale) is failed.
func (e *evaluations) view(key string, r *evalRecord) *server.Evaluation {
	out := r.Evaluation
	_, here := e.running[key]
	if (out.Status == server.EvaluationPending || out.Status == server.EvaluationRunning) && !here && time.Since(r.Updated) > evalStale {
		out.Status, out.Error = server.EvaluationFailed, "the process running the evaluation stopped before it completed"
	}
	return &out
}

func (e *evaluations) Get(ctx context.Context, loop, id string) (*server.Evaluation, error) {
	if err := e.waitReady(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	key := evalKey(loop, id)
	r, ok := e.all[key]
	if !ok {
		return nil, fmt.Errorf("evaluation %q: %w", id, server.ErrEvaluationNotFound)
	}
	return e.view(key, r), nil
}

func (e *evaluations) List(ctx context.Context, loop string) ([]*server.Evaluation, error) {
	if err := e.waitReady(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*server.Evaluation
	for key, r := range e.all {
		if strings.HasPrefix(key, loop+"/") {
			out = append(out, e.view(key, r))
		}
	}
	slices.SortFunc(out, func(a, b *server.Evaluation) int {
		if c := a.CreationTime.Compare(b.CreationTime); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (e *evaluations) Delete(ctx context.Context, loop, id string) error {
	if err := e.waitReady(ctx); err != nil {
		return err
	}
	key := evalKey(loop, id)
	e.mu.Lock()
	_, ok := e.all[key]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("evaluation %q: %w", id, server.ErrEvaluationNotFound)
	}
	e.forget(key) // before the tombstone: a run writes nothing after it
	e.mu.Lock()
	e.kept.drop(key)
	e.mu.Unlock()
	if err := e.w.Write(ctx, eventlog.Record{Topic: eventlog.EvaluationsTopic, Key: []byte(key)}); err != nil {
		return fmt.Errorf("delete evaluation: %w", err)
	}
	return e.await(ctx, key, func(cur *evalRecord) bool { return cur == nil })
}

func (e *evaluations) Model(ctx context.Context, loop, id, policy string) ([]byte, error) {
	if err := e.waitReady(ctx); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	f, ok := e.kept.files[evalKey(loop, id)][policy]
	if !ok {
		return nil, fmt.Errorf("evaluation %q, policy %q: %w", id, policy, server.ErrEvaluationModelNotFound)
	}
	return f, nil
}
