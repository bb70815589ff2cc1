package server

import (
	"context"
	"maps"
	"slices"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/internal/watch"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// LoopHeader names the loop a call is for, as a REST header or gRPC
// metadata (in lower case). A loop key's calls are for its loop, whatever
// the header says (another loop is refused); without it, calls are for
// the server's own loop ([Config.Loop]).
const LoopHeader = "X-Personalizer-Loop"

var loopMetadata = []string{"x-personalizer-loop"}

// loopState is what Rank uses of one loop: its model and configuration,
// each swapped whole.
type loopState struct {
	name   string
	prefix string // name + "/": the records' key prefix
	model  atomic.Pointer[servingModel]
	served watch.Value[uint64] // the version in model, for callers waiting for one
	live   atomic.Pointer[liveConfig]
	// swaps counts the swaps of model and live, for the watchers of what
	// Rank decides with (WatchRankSettings).
	swaps watch.Value[uint64]
	// counts are the calls answered for the loop, for [Server.LoopCounts].
	ranks, rewards, activations atomic.Int64
}

// LoopCounts are the calls a server answered for a loop since it started.
type LoopCounts struct {
	Ranks       int64 `json:"ranks"` // Rank and RankStream decisions, and logged ranks (LogRanks)
	Rewards     int64 `json:"rewards"`
	Activations int64 `json:"activations"`
}

// LoopCounts returns the calls the server answered for loop name; false
// if it does not serve it.
func (s *Server) LoopCounts(name string) (LoopCounts, bool) {
	l := s.loop(name)
	if l == nil {
		return LoopCounts{}, false
	}
	return LoopCounts{Ranks: l.ranks.Load(), Rewards: l.rewards.Load(), Activations: l.activations.Load()}, true
}

// changed tells the watchers of l's settings that model or live changed.
func (l *loopState) changed() { l.swaps.Update(func(n *uint64) { *n++ }) }

// decideModel returns l's model as decisions use it, nil before the first.
func (l *loopState) decideModel() *decide.Model {
	if m := l.model.Load(); m != nil {
		return &m.Model
	}
	return nil
}

func newLoopState(name string) *loopState { return &loopState{name: name, prefix: name + "/"} }

// info returns the metadata of l's model, nil for none (or a nil l).
func (l *loopState) info() *eventsv1.ModelInfo {
	if l == nil {
		return nil
	}
	if m := l.model.Load(); m != nil {
		return m.info
	}
	return nil
}

// loop returns the state of loop name, nil if the server does not serve it.
func (s *Server) loop(name string) *loopState { return (*s.loops.Load())[name] }

// Serves reports whether the server serves loop name: its own, and every
// loop the registry holds.
func (s *Server) Serves(name string) bool { return s.loop(name) != nil }

// Loops returns the names of the loops the server serves, sorted.
func (s *Server) Loops() []string { return slices.Sorted(maps.Keys(*s.loops.Load())) }

// requestedLoop is the context key of the loop a REST call names in
// [LoopHeader].
type requestedLoop struct{}

// withRequestedLoop returns ctx carrying the loop a call names.
func withRequestedLoop(ctx context.Context, name string) context.Context {
	if name == "" {
		return ctx
	}
	return context.WithValue(ctx, requestedLoop{}, name)
}

// requested returns the loop a call names: in [LoopHeader] (REST) or its
// metadata (gRPC); empty when it names none.
func requested(ctx context.Context) string {
	if name, ok := ctx.Value(requestedLoop{}).(string); ok {
		return name
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, k := range loopMetadata {
			if vs := md.Get(k); len(vs) > 0 {
				return vs[0]
			}
		}
	}
	return ""
}

// callerLoop returns the loop a call is for: a loop key's own (naming
// another is refused); for an admin key or without keys, name if given,
// else the loop the call requests, else def.
func callerLoop(ctx context.Context, name, def string) (string, error) {
	if name == "" {
		name = requested(ctx)
	}
	if k, ok := ctx.Value(callerKey{}).(*apiKey); ok && !k.admin {
		if name != "" && name != k.loop {
			return "", errForeignLoop(k.loop, name)
		}
		return k.loop, nil
	}
	if name == "" {
		return def, nil
	}
	return name, nil
}

// loopFor returns the state of the loop a data-plane call is for.
func (s *Server) loopFor(ctx context.Context) (*loopState, error) {
	if requested(ctx) == "" && ctx.Value(callerKey{}) == nil {
		return s.def, nil // the common case, without a lookup
	}
	name, err := callerLoop(ctx, "", s.cfg.Loop)
	if err != nil {
		return nil, err
	}
	if l := s.loop(name); l != nil {
		return l, nil
	}
	return nil, status.Errorf(codes.NotFound, "loop %q is not served here", name)
}

// syncLoops makes the loops served those of the registry (and the
// server's own), each with its current configuration.
func (s *Server) syncLoops() {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	old := *s.loops.Load()
	next := make(map[string]*loopState, len(old))
	next[s.cfg.Loop] = s.def
	for _, c := range s.reg.Loops() {
		l := old[c.Loop]
		if l == nil {
			l = newLoopState(c.Loop)
			s.log.Info("loop served", "loop", c.Loop)
		}
		next[c.Loop] = l
		if cur := l.live.Load(); cur == nil || cur.cfg != c && c != s.seed {
			s.setConfig(l, c)
		}
	}
	for name := range old {
		if _, ok := next[name]; !ok {
			s.log.Info("loop deleted: no longer served", "loop", name)
		}
	}
	if c := s.reg.Get(s.cfg.Loop); c == nil && s.def.live.Load().cfg != s.seed {
		s.log.Warn("loop deleted; serving its last configuration", "loop", s.cfg.Loop)
	}
	s.loops.Store(&next)
}

// WatchConfig applies every configuration change the registry gets until
// ctx ends: a loop's new configuration, a new loop (served from then on),
// a deleted one (no longer served; the server's own loop keeps its last
// configuration). It runs beside [Server.WatchModels].
func (s *Server) WatchConfig(ctx context.Context) error {
	for {
		ch := s.reg.Changed()
		s.syncLoops()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}
