package learner

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// Store holds the latest published model version of a loop and wakes
// whoever waits for a newer one; with a [History] ([Learner] sets its
// own), earlier versions too. It is safe for concurrent use.
type Store struct {
	mu      sync.Mutex
	cur     *eventsv1.GetModelResponse
	changed chan struct{} // closed and replaced on every publish
	history *History      // nil: only the latest version
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{changed: make(chan struct{})} }

// Publish makes v the latest version. v must not be modified afterwards.
func (s *Store) Publish(v *eventsv1.GetModelResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = v
	close(s.changed)
	s.changed = make(chan struct{})
}

// Latest returns the latest version, or nil before the first.
func (s *Store) Latest() *eventsv1.GetModelResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// setHistory makes the store answer [Store.Get] from h too.
func (s *Store) setHistory(h *History) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = h
}

// Get returns version v: the latest version, or one the history keeps.
// A version it does not have is an error wrapping [ErrNotKept].
func (s *Store) Get(v uint64) (*eventsv1.GetModelResponse, error) {
	s.mu.Lock()
	cur, h := s.cur, s.history
	s.mu.Unlock()
	switch {
	case cur != nil && cur.GetInfo().GetVersion() == v:
		return cur, nil
	case h != nil:
		return h.Get(v)
	case cur == nil:
		return nil, notKeptf("model version %d is not kept; no version is", v)
	}
	return nil, notKeptf("model version %d is not kept; only the latest, %d, is", v, cur.GetInfo().GetVersion())
}

// List returns the metadata of the versions the store has, newest
// first: those the history keeps, or the latest alone without one.
func (s *Store) List() ([]*eventsv1.ModelInfo, error) {
	s.mu.Lock()
	cur, h := s.cur, s.history
	s.mu.Unlock()
	if h == nil {
		if cur == nil {
			return nil, nil
		}
		return []*eventsv1.ModelInfo{cur.GetInfo()}, nil
	}
	vs := h.Versions()
	out := make([]*eventsv1.ModelInfo, 0, len(vs))
	for _, v := range slices.Backward(vs) {
		mv, err := h.Get(v)
		if errors.Is(err, ErrNotKept) { // evicted meanwhile
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, mv.GetInfo())
	}
	return out, nil
}

// Next blocks until a version newer than after is published and returns
// the latest one.
func (s *Store) Next(ctx context.Context, after uint64) (*eventsv1.GetModelResponse, error) {
	for {
		s.mu.Lock()
		cur, changed := s.cur, s.changed
		s.mu.Unlock()
		if cur != nil && cur.GetInfo().GetVersion() > after {
			return cur, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// Service serves the versions of each loop's store to servers in other
// processes, and passes model resets and imports on to the loop's learner.
type Service struct {
	eventsv1.UnimplementedModelServiceServer
	mu      sync.Mutex
	loops   map[string]serviceLoop
	servers map[string]map[string]*eventsv1.ServerInfo // loop, server: what its open watch said
	rewards Rewards                                    // nil: GetLiveRewards is Unimplemented
	done    chan struct{}                              // closed by Shutdown to end watches and commands
	once    sync.Once
}

// Rewards answers GetLiveRewards for a loop the [Service] serves: its
// buckets that start at or after since (the zero time: every one); false
// when the loop has no reward over time.
type Rewards func(loop string, since time.Time) (*eventsv1.GetLiveRewardsResponse, bool)

// serviceLoop is what a [Service] serves of one loop.
type serviceLoop struct {
	store *Store
	cmds  Commands
}

// Commands are the model commands a [Service] passes on: [*Learner]
// implements them.
type Commands interface {
	Reset(ctx context.Context) (*eventsv1.ModelInfo, error)
	Import(ctx context.Context, data []byte) (*eventsv1.ModelInfo, error)
	Rollback(ctx context.Context, version uint64) (*eventsv1.ModelInfo, error)
}

// NewService returns the ModelService of loop's store. cmds carries out
// ResetModel and ImportModel; nil answers them Unimplemented.
func NewService(loop string, store *Store, cmds Commands) *Service {
	s := &Service{loops: map[string]serviceLoop{}, servers: map[string]map[string]*eventsv1.ServerInfo{}, done: make(chan struct{})}
	s.Add(loop, store, cmds)
	return s
}

// Add serves loop's store (and commands) too.
func (s *Service) Add(loop string, store *Store, cmds Commands) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loops[loop] = serviceLoop{store, cmds}
}

// ServeRewards makes the service answer GetLiveRewards from r. Call it
// before serving.
func (s *Service) ServeRewards(r Rewards) { s.rewards = r }

// Commands returns what carries out loop's model commands (its
// [*Learner]), nil for a loop the service does not serve.
func (s *Service) Commands(loop string) Commands {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loops[loop].cmds
}

// Loops returns the names of the loops the service serves, sorted.
func (s *Service) Loops() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.loops))
}

// Remove stops serving loop: new calls get NotFound (open watches stay
// until their callers end them).
func (s *Service) Remove(loop string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.loops, loop)
}

// Shutdown ends open WatchModel calls (they never end on their own) so
// that a graceful stop can finish; watchers get Unavailable and retry.
func (s *Service) Shutdown() { s.once.Do(func() { close(s.done) }) }

// WatchModel implements ModelService.WatchModel: the latest version's
// metadata now, then every newer one.
func (s *Service) WatchModel(req *eventsv1.WatchModelRequest, stream eventsv1.ModelService_WatchModelServer) error {
	l, err := s.checkLoop(req.GetLoop())
	if err != nil {
		return err
	}
	if s.stopping() {
		return errStopping
	}
	if req.GetServer() != "" {
		info := &eventsv1.ServerInfo{Server: req.GetServer(), Version: req.GetServingVersion(), Created: req.GetServingCreated()}
		s.watching(req.GetLoop(), info)
		defer s.unwatching(req.GetLoop(), info)
	}
	// Headers now tell the watcher it is connected (and listed), model or not.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var after uint64
	for {
		v, err := l.store.Next(ctx, after)
		if s.stopping() {
			return errStopping
		}
		if err != nil {
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(&eventsv1.WatchModelResponse{Info: v.GetInfo()}); err != nil {
			return err
		}
		after = v.GetInfo().GetVersion()
	}
}

// watching lists info's server as serving its version of loop, until
// unwatching(info).
func (s *Service) watching(loop string, info *eventsv1.ServerInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.servers[loop] == nil {
		s.servers[loop] = map[string]*eventsv1.ServerInfo{}
	}
	s.servers[loop][info.GetServer()] = info
}

// unwatching ends what watching(info) listed, unless a newer watch of
// the same server replaced it.
func (s *Service) unwatching(loop string, info *eventsv1.ServerInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.servers[loop][info.GetServer()] == info {
		delete(s.servers[loop], info.GetServer())
	}
	if len(s.servers[loop]) == 0 {
		delete(s.servers, loop)
	}
}

// Servers returns the servers watching loop's versions, sorted.
func (s *Service) Servers(loop string) []*eventsv1.ServerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Collect(maps.Values(s.servers[loop]))
	slices.SortFunc(out, func(a, b *eventsv1.ServerInfo) int { return strings.Compare(a.GetServer(), b.GetServer()) })
	return out
}

// ListServers implements ModelService.ListServers: the servers watching
// the loop's versions.
func (s *Service) ListServers(_ context.Context, req *eventsv1.ListServersRequest) (*eventsv1.ListServersResponse, error) {
	if _, err := s.checkLoop(req.GetLoop()); err != nil {
		return nil, err
	}
	return &eventsv1.ListServersResponse{Servers: s.Servers(req.GetLoop())}, nil
}

// GetLiveRewards implements ModelService.GetLiveRewards: the loop's
// reward over time, from [Service.ServeRewards]'s source.
func (s *Service) GetLiveRewards(_ context.Context, req *eventsv1.GetLiveRewardsRequest) (*eventsv1.GetLiveRewardsResponse, error) {
	if _, err := s.checkLoop(req.GetLoop()); err != nil {
		return nil, err
	}
	if s.rewards == nil {
		return nil, status.Error(codes.Unimplemented, "this learner keeps no reward over time")
	}
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	r, ok := s.rewards(req.GetLoop(), since)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "loop %q has no reward over time", req.GetLoop())
	}
	return r, nil
}

// errStopping ends the watches of a learner that shuts down; the watchers
// retry until it, or another, is back.
var errStopping = status.Error(codes.Unavailable, "the learner is shutting down")

func (s *Service) stopping() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// GetModel implements ModelService.GetModel: version 0 asks for the
// latest version, another for that version if the store keeps it
// (NotFound if not).
func (s *Service) GetModel(_ context.Context, req *eventsv1.GetModelRequest) (*eventsv1.GetModelResponse, error) {
	l, err := s.checkLoop(req.GetLoop())
	if err != nil {
		return nil, err
	}
	if req.GetVersion() == 0 {
		v := l.store.Latest()
		if v == nil {
			return nil, status.Error(codes.NotFound, "no model published yet")
		}
		return v, nil
	}
	v, err := l.store.Get(req.GetVersion())
	if st := notKeptStatus(err); st != nil {
		return nil, st
	}
	if err != nil {
		return nil, status.Error(codes.Internal, "internal error")
	}
	return v, nil
}

// ListModels implements ModelService.ListModels: the kept versions'
// metadata, newest first.
func (s *Service) ListModels(_ context.Context, req *eventsv1.ListModelsRequest) (*eventsv1.ListModelsResponse, error) {
	l, err := s.checkLoop(req.GetLoop())
	if err != nil {
		return nil, err
	}
	infos, err := l.store.List()
	if err != nil {
		return nil, status.Error(codes.Internal, "internal error")
	}
	return &eventsv1.ListModelsResponse{Models: infos}, nil
}

func (s *Service) checkLoop(loop string) (serviceLoop, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.loops[loop]
	if !ok {
		return l, status.Errorf(codes.NotFound, "unknown loop %q", loop)
	}
	return l, nil
}

// ResetModel implements ModelService.ResetModel: a new model of the
// current policy, published as the next version.
func (s *Service) ResetModel(ctx context.Context, req *eventsv1.ResetModelRequest) (*eventsv1.ResetModelResponse, error) {
	l, err := s.checkCommand(req.GetLoop())
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.commandContext(ctx)
	defer cancel()
	info, err := l.cmds.Reset(ctx)
	if err != nil {
		return nil, s.commandStatus(err)
	}
	return &eventsv1.ResetModelResponse{Info: info}, nil
}

// ImportModel implements ModelService.ImportModel: the model file in the
// request, published as the next version. A file that is not a model the
// learner can load is InvalidArgument.
func (s *Service) ImportModel(ctx context.Context, req *eventsv1.ImportModelRequest) (*eventsv1.ImportModelResponse, error) {
	l, err := s.checkCommand(req.GetLoop())
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.commandContext(ctx)
	defer cancel()
	info, err := l.cmds.Import(ctx, req.GetData())
	if err != nil {
		return nil, s.commandStatus(err)
	}
	return &eventsv1.ImportModelResponse{Info: info}, nil
}

// RollbackModel implements ModelService.RollbackModel: a kept version's
// model, published as the next version. A version not kept is NotFound.
func (s *Service) RollbackModel(ctx context.Context, req *eventsv1.RollbackModelRequest) (*eventsv1.RollbackModelResponse, error) {
	l, err := s.checkCommand(req.GetLoop())
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.commandContext(ctx)
	defer cancel()
	info, err := l.cmds.Rollback(ctx, req.GetVersion())
	if err != nil {
		return nil, s.commandStatus(err)
	}
	return &eventsv1.RollbackModelResponse{Info: info}, nil
}

func (s *Service) checkCommand(loop string) (serviceLoop, error) {
	l, err := s.checkLoop(loop)
	switch {
	case err != nil:
		return l, err
	case l.cmds == nil:
		return l, status.Error(codes.Unimplemented, "this learner takes no model commands")
	case s.stopping():
		return l, errStopping
	}
	return l, nil
}

// commandContext is ctx, ended by Shutdown too: a learner that stops
// answers no more commands.
func (s *Service) commandContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() { // ends with ctx, which the caller cancels
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// commandStatus translates a command's error to a gRPC status.
func (s *Service) commandStatus(err error) error {
	switch {
	case errors.Is(err, ErrNotKept):
		// The message names the versions kept, nothing internal.
		return notKeptStatus(err)
	case errors.Is(err, ErrBadModel):
		// The message describes the caller's file, nothing internal.
		return status.Error(codes.InvalidArgument, err.Error())
	case s.stopping():
		return errStopping
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, errNotPublished):
		return status.Error(codes.Unavailable, "the learner cannot write its checkpoint; the model is unchanged")
	}
	return status.Error(codes.Internal, "internal error")
}
