package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Config configures a [Server].
type Config struct {
	Loop   string // the learning loop this server answers for; keys are Loop/eventId
	Limits Limits
	// Policy is the loop's learning policy. Until the first model arrives
	// it is the policy whose interactions bound a Rank's features (see
	// [Limits.MaxInteractionFeatures]); then the model's own policy does.
	// Nil means [bandit.DefaultPolicy].
	Policy *bandit.Policy
	// MaxRecordBytes is the largest record the event log takes
	// ([eventlog.DefaultMaxRecordBytes] when 0). Rank refuses a request
	// whose event, or the joined line made of it, would not fit.
	MaxRecordBytes int
	// LearningMode is Personalizer's learningMode; unspecified is
	// online. In apprentice mode Rank answers with the baseline (the
	// first eligible action, the rest in request order) and logs the
	// model's decision, so that the model learns to imitate the baseline;
	// in logging-only mode it answers and logs the baseline order.
	LearningMode eventsv1.LearningMode
	// Configs holds the live configuration of the loops; the server
	// follows its loop's ([Server.WatchConfig]): learning mode,
	// exploration (explorationPercentage overrides an epsilon-greedy
	// policy's --epsilon), the policy before the first model, and the join
	// rules every rank record carries. Until Configs holds the loop, and
	// when Configs is nil, the server runs on a configuration made from
	// the fields above (Policy, LearningMode; the policy's epsilon) whose
	// rank records carry no join rules, so that the joiner applies its own.
	Configs *loop.Registry
}

// ModelSource delivers published model versions.
type ModelSource interface {
	// Next blocks until a version newer than after is published, and
	// returns it.
	Next(ctx context.Context, after uint64) (*eventsv1.GetModelResponse, error)
}

// Server implements the PersonalizerService.
type Server struct {
	personalizerv1.UnimplementedPersonalizerServiceServer

	cfg    Config
	events *Publisher
	log    *slog.Logger
	now    func() time.Time
	def    *loopState                            // cfg.Loop's, always there
	loops  atomic.Pointer[map[string]*loopState] // every loop served, def included; replaced whole by syncLoops
	syncMu sync.Mutex                            // one syncLoops at a time
	seed   *loop.Config                          // the configuration made from cfg
	reg    *loop.Registry                        // cfg.Configs, or one holding seed
	done   chan struct{}                         // closed by Shutdown to end streams
	once   sync.Once
	pool   sync.Pool // *scratch
	audit  *Admin    // answers GetDecision; set by NewAdmin, before serving
}

// servingModel is a model version as Rank uses it.
type servingModel struct {
	decide.Model
	info *eventsv1.ModelInfo
	data []byte // the model file, for exports
}

// liveConfig is the loop's configuration as Rank uses it, computed once
// per configuration version so that Rank reads one pointer and allocates
// nothing for it.
type liveConfig struct {
	cfg   *loop.Config
	rules *eventsv1.JoinRules // nil for the seed: the joiner's own rules apply
	// set is what deciding takes of cfg: the learning mode, epsilon, the
	// policy before the first model, the loop's limits over the server's.
	set decide.Settings
}

// scratch is per-Rank working memory, pooled so Rank allocates little:
// the decision's and its rank record's.
type scratch struct {
	decide.Scratch
	ranking []uint32
	probs   []float32
	record  eventsv1.RankEvent // buildRankRecord's
}

// New returns a server that appends events through events.
func New(cfg Config, events *Publisher, log *slog.Logger, now func() time.Time) *Server {
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if cfg.LearningMode == eventsv1.LearningMode_LEARNING_MODE_UNSPECIFIED {
		cfg.LearningMode = eventsv1.LearningMode_LEARNING_MODE_ONLINE
	}
	if cfg.Policy == nil {
		cfg.Policy, _ = bandit.ParsePolicy(bandit.DefaultPolicy)
	}
	if cfg.MaxRecordBytes == 0 {
		cfg.MaxRecordBytes = eventlog.DefaultMaxRecordBytes
	}
	s := &Server{cfg: cfg, events: events, log: log, now: now, done: make(chan struct{})}
	s.seed = seedConfig(cfg)
	s.reg = cfg.Configs
	if s.reg == nil {
		s.reg = loop.NewRegistry(s.seed)
	}
	s.def = newLoopState(cfg.Loop)
	s.def.live.Store(&liveConfig{cfg: s.seed, set: decide.Settings{Mode: cfg.LearningMode, Epsilon: s.seed.Epsilon(), Policy: cfg.Policy,
		Limits: cfg.Limits, MaxRecordBytes: cfg.MaxRecordBytes}})
	s.loops.Store(&map[string]*loopState{cfg.Loop: s.def})
	s.syncLoops()
	s.pool.New = func() any { return new(scratch) }
	return s
}

// seedConfig is the configuration cfg's fields make, version 0.
func seedConfig(cfg Config) *loop.Config {
	c := loop.Default(cfg.Loop)
	c.Service.LearningMode = loop.ModeName(cfg.LearningMode)
	c.UsePolicy(cfg.Policy)
	return c
}

// setConfig makes c the configuration Rank uses in l.
func (s *Server) setConfig(l *loopState, c *loop.Config) {
	lc := &liveConfig{cfg: c, set: decide.Settings{Mode: c.Service.Mode(), Epsilon: c.Epsilon(), Policy: s.cfg.Policy,
		Limits: s.cfg.Limits.Over(c.Limits), MaxRecordBytes: s.cfg.MaxRecordBytes, Explain: c.Service.IsInferenceExplainabilityEnabled}}
	if c.Version > 0 {
		// Version 0 is made from this process's flags, which need not
		// be the joiners': records made under it carry no rules, and the
		// joiners judge them by their own flags, as before the
		// configuration topic existed.
		lc.rules = c.JoinRules()
	}
	if lc.set.Mode == eventsv1.LearningMode_LEARNING_MODE_UNSPECIFIED {
		lc.set.Mode = eventsv1.LearningMode_LEARNING_MODE_ONLINE
	}
	if c.Policy.Arguments != s.cfg.Policy.String() {
		p, err := bandit.ParsePolicy(c.Policy.Arguments)
		if err != nil { // the configuration was validated before it was written
			s.log.Warn("configured policy does not parse; keeping the previous one", "loop", l.name, "config_version", c.Version, "err", err)
		} else {
			lc.set.Policy = p
		}
	}
	l.live.Store(lc)
	l.changed()
	s.log.Info("configuration applied", "loop", l.name, "config_version", c.Version, "learning_mode", c.Service.LearningMode,
		"exploration", c.Service.ExplorationPercentage)
}

// LoopConfig returns the configuration Rank applies in the server's loop.
func (s *Server) LoopConfig() *loop.Config { return s.def.live.Load().cfg }

// Configs returns the registry the server follows its configuration in:
// [Config.Configs], or one holding the configuration made from the
// [Config] fields when that is nil.
func (s *Server) Configs() *loop.Registry { return s.reg }

// Shutdown ends open RankStream calls so that a graceful stop can finish.
func (s *Server) Shutdown() { s.once.Do(func() { close(s.done) }) }

// ModelVersion returns the version Rank uses in the server's loop, 0
// before the first model.
func (s *Server) ModelVersion() uint64 { return s.def.info().GetVersion() }

// ModelInfo returns the metadata of the version Rank uses in the server's
// loop (its creation time gives the model's age), nil before the first model.
func (s *Server) ModelInfo() *eventsv1.ModelInfo { return s.def.info() }

// LoopModelInfo is [Server.ModelInfo] of loop name, nil if the server
// does not serve it or has no model for it yet.
func (s *Server) LoopModelInfo(name string) *eventsv1.ModelInfo {
	return s.loop(name).info()
}

// WatchModels swaps in every version src publishes for the server's loop
// until ctx ends; see [Server.WatchLoopModels].
func (s *Server) WatchModels(ctx context.Context, src ModelSource) error {
	return s.WatchLoopModels(ctx, s.cfg.Loop, src)
}

// WatchLoopModels swaps in every version src publishes for loop name
// until ctx ends. A version whose checksum or format is wrong is logged
// and skipped. Versions of a loop the server does not serve (yet) wait.
func (s *Server) WatchLoopModels(ctx context.Context, name string, src ModelSource) error {
	backoff := 100 * time.Millisecond
	for {
		mv, err := src.Next(ctx, s.loop(name).info().GetVersion())
		if err == nil {
			if mv.GetInfo().GetLoop() == "" { // versions from before loops were named
				mv.Info.Loop = name
			}
			err = s.Load(mv)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.log.Warn("model update failed; serving the previous model", "loop", name, "version", s.loop(name).info().GetVersion(), "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// Load verifies a model version and makes it the one Rank uses in its
// loop (the server's when the version names none).
func (s *Server) Load(mv *eventsv1.GetModelResponse) error {
	info := mv.GetInfo()
	l := s.def
	if name := info.GetLoop(); name != "" {
		if l = s.loop(name); l == nil {
			return fmt.Errorf("model version %d: loop %q is not served here", info.GetVersion(), name)
		}
	}
	m, err := decide.LoadModel(mv.GetData(), info.GetSha256(), info.GetVersion())
	if err != nil {
		return err
	}
	l.model.Store(&servingModel{Model: *m, info: info, data: mv.GetData()})
	l.served.Update(func(v *uint64) { *v = info.GetVersion() })
	l.changed()
	s.log.Info("model swapped", "loop", l.name, "version", info.GetVersion(), "examples", info.GetExamples())
	return nil
}

// WaitModel blocks until Rank uses version or a later one in the
// server's loop, or ctx ends.
func (s *Server) WaitModel(ctx context.Context, version uint64) error {
	return s.WaitLoopModel(ctx, s.cfg.Loop, version)
}

// WaitLoopModel is [Server.WaitModel] for loop name.
func (s *Server) WaitLoopModel(ctx context.Context, name string, version uint64) error {
	l := s.loop(name)
	if l == nil {
		return fmt.Errorf("loop %q is not served here", name)
	}
	return l.served.Wait(ctx, func(v uint64) bool { return v >= version })
}

// Rank implements PersonalizerService.Rank.
func (s *Server) Rank(ctx context.Context, req *personalizerv1.RankRequest) (*personalizerv1.RankResponse, error) {
	return s.rankWire(ctx, req, nil)
}

// rankWire is Rank of req, which was decoded from the bytes after the
// room in buf, a [withRoom] buffer; nil buf means the request has to be
// encoded for its rank record.
func (s *Server) rankWire(ctx context.Context, req *personalizerv1.RankRequest, buf []byte) (*personalizerv1.RankResponse, error) {
	resp, err := s.rank(ctx, req, buf)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return resp, nil
}

// RankStream implements PersonalizerService.RankStream: requests are
// answered one by one, in order.
func (s *Server) RankStream(stream personalizerv1.PersonalizerService_RankStreamServer) error {
	return serveStream(s, stream.Context(), stream.Recv, func(req *personalizerv1.RankStreamRequest) error {
		resp, err := s.rank(stream.Context(), req.GetRequest(), nil)
		if err != nil {
			return s.toStatus(err)
		}
		return stream.Send(&personalizerv1.RankStreamResponse{Response: resp})
	})
}

// serveStream answers a stream's requests one by one, in order, with
// answer, until the client closes its side (nil), the call ends, the
// server shuts down, or answer fails (its error ends the stream).
func serveStream[T any](s *Server, ctx context.Context, recv func() (T, error), answer func(T) error) error {
	type received struct {
		req T
		err error
	}
	ch := make(chan received)
	go func() { // exits when recv fails, which it does once the call ends
		for {
			req, err := recv()
			select {
			case ch <- received{req, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var r received
		select {
		case r = <-ch:
		case <-ctx.Done():
			return s.toStatus(ctx.Err()) // Canceled or DeadlineExceeded, not Unknown
		case <-s.done:
			return s.toStatus(errShuttingDown)
		}
		if errors.Is(r.err, io.EOF) {
			return nil
		}
		if r.err != nil {
			return r.err
		}
		if err := answer(r.req); err != nil {
			return err
		}
	}
}

// rank decides and logs one request, which was decoded from the bytes
// after the room in buf, a [withRoom] buffer (nil: encode it for the
// record).
func (s *Server) rank(ctx context.Context, req *personalizerv1.RankRequest, buf []byte) (*personalizerv1.RankResponse, error) {
	sc := s.pool.Get().(*scratch)
	defer s.putScratch(sc)
	l, err := s.loopFor(ctx)
	if err != nil {
		return nil, err
	}
	lc := l.live.Load()
	if lc.multiSlot() {
		return nil, &problemTypeError{loop: l.name, multiSlot: true}
	}
	eventID := req.GetEventId()
	if req.EventId == nil {
		eventID = rand.Text()
	}
	if buf == nil { // sized once: the encoding is the size Decide checks
		var err error
		if buf, err = requestWithRoom(req); err != nil {
			return nil, err
		}
	}
	d, err := sc.Decide(req, len(buf)-recordRoom, eventID, &lc.set, l.decideModel())
	if err != nil {
		return nil, err
	}
	resp := d.Response(req)
	// The decision stands even if the event cannot be buffered: the caller
	// gets its ranking, the event is not learned from, and the publisher
	// has counted it and logs the overflow (at most every few seconds).
	ev := encodeRankRecord(buildRankRecord(sc, l, lc, d, req.GetDeferActivation()), buf)
	if err := s.publishValue(ctx, eventlog.TypeRank, []byte(l.prefix+eventID), ev); err != nil && !errors.Is(err, errBufferFull) {
		s.log.Error("rank event not logged", "event_id", eventID, "err", err)
	}
	l.ranks.Add(1)
	return resp, nil
}

// putScratch returns sc to the pool, unless a large request grew it.
func (s *Server) putScratch(sc *scratch) {
	sc.record = eventsv1.RankEvent{} // not to keep the configuration alive
	if sc.Keep() {
		s.pool.Put(sc)
	}
}

// Reward implements PersonalizerService.Reward.
func (s *Server) Reward(ctx context.Context, req *personalizerv1.RewardRequest) (*personalizerv1.RewardResponse, error) {
	l, err := s.loopFor(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	lc := l.live.Load()
	if lc.multiSlot() {
		return nil, s.toStatus(&problemTypeError{loop: l.name, multiSlot: true})
	}
	if err := validateReward(lc.set.Limits, req); err != nil {
		return nil, s.toStatus(err)
	}
	ev := &eventsv1.RewardEvent{Loop: l.name, EventId: req.GetEventId(), Value: req.GetValue(), Id: outcomeID()}
	if err := s.publish(ctx, l, eventlog.TypeReward, req.GetEventId(), ev); err != nil {
		return nil, s.toStatus(err)
	}
	l.rewards.Add(1)
	return &personalizerv1.RewardResponse{}, nil
}

// Activate implements PersonalizerService.Activate.
func (s *Server) Activate(ctx context.Context, req *personalizerv1.ActivateRequest) (*personalizerv1.ActivateResponse, error) {
	l, err := s.loopFor(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if err := validateOutcomeEventID(l.live.Load().set.Limits, "event_id", req.GetEventId()); err != nil {
		return nil, s.toStatus(err)
	}
	ev := &eventsv1.ActivateEvent{Loop: l.name, EventId: req.GetEventId(), Id: outcomeID()}
	if err := s.publish(ctx, l, eventlog.TypeActivate, req.GetEventId(), ev); err != nil {
		return nil, s.toStatus(err)
	}
	l.activations.Add(1)
	return &personalizerv1.ActivateResponse{}, nil
}

// outcomeID returns a random non-zero id for a reward or activate record:
// copies a writer retry makes share it, two calls never do (in practice).
func outcomeID() uint64 {
	for {
		if id := mrand.Uint64(); id != 0 {
			return id
		}
	}
}

// event is an event record message; vtprotobuf generated MarshalVT, which
// encodes as proto.Marshal does, faster.
type event interface{ MarshalVT() ([]byte, error) }

// publish queues one event record keyed loop/eventId. When ctx carries a
// span (the call is traced), the record carries its W3C trace context.
func (s *Server) publish(ctx context.Context, l *loopState, typ, eventID string, m event) error {
	value, err := m.MarshalVT()
	if err != nil {
		return fmt.Errorf("encode %s event %s: %w", typ, eventID, err)
	}
	return s.publishValue(ctx, typ, []byte(l.prefix+eventID), value)
}

// publishValue is publish of an encoded record.
func (s *Server) publishValue(ctx context.Context, typ string, key, value []byte) error {
	rec := eventlog.Record{
		Topic:   eventlog.EventsTopic,
		Key:     key,
		Value:   value,
		Headers: typeHeaders[typ],
		Time:    s.now(),
	}
	if trace.SpanContextFromContext(ctx).IsValid() { // else rec would escape to the heap for nothing
		h := eventlog.HeaderCarrier(rec.Headers)
		traceContext.Inject(ctx, &h)
		rec.Headers = h
	}
	return s.events.Publish(rec)
}

// typeHeaders are the headers of a record of each type, shared by the
// records: no one changes them, and appending to one copies it (its
// capacity is its length).
var typeHeaders = map[string][]eventlog.Header{
	eventlog.TypeRank:     {{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}},
	eventlog.TypeReward:   {{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeReward)}},
	eventlog.TypeActivate: {{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeActivate)}},
}

// traceContext writes W3C traceparent headers.
var traceContext propagation.TraceContext
