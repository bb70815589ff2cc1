package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/vtcodec"
	"github.com/open-personalizer/personalizer/loop"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// WatchRankSettings implements PersonalizerService.WatchRankSettings: the
// settings of the caller's loop as Rank applies them, and the model
// version it uses, sent whole at once and after each change, until the
// call ends or the server shuts down.
func (s *Server) WatchRankSettings(_ *personalizerv1.WatchRankSettingsRequest, stream personalizerv1.PersonalizerService_WatchRankSettingsServer) error {
	l, err := s.loopFor(stream.Context())
	if err != nil {
		return s.toStatus(err)
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() { // ends the wait below on shutdown; exits with the call
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var last *personalizerv1.RankSettings
	for {
		// Read the count before the settings: a swap after this read
		// changes the count, so the wait below returns at once.
		n := l.swaps.Get()
		if rs := rankSettings(l); !proto.Equal(rs, last) {
			if err := stream.Send(&personalizerv1.WatchRankSettingsResponse{Settings: rs}); err != nil {
				return err
			}
			last = rs
		}
		if err := l.swaps.Wait(ctx, func(v uint64) bool { return v != n }); err != nil {
			select {
			case <-s.done:
				return s.toStatus(errShuttingDown)
			default:
				return s.toStatus(stream.Context().Err())
			}
		}
	}
}

// rankSettings are what Rank decides with in l.
func rankSettings(l *loopState) *personalizerv1.RankSettings {
	lc := l.live.Load()
	lim := lc.set.Limits
	rs := &personalizerv1.RankSettings{
		ConfigVersion: lc.cfg.Version,
		LearningMode:  loop.ModeName(lc.set.Mode),
		Epsilon:       lc.set.Epsilon,
		Policy:        lc.set.Policy.String(),
		Limits: &personalizerv1.Limits{MaxActions: int64(lim.MaxActions), MaxIdLength: int64(lim.MaxIDLength),
			MaxFeatureBytes: int64(lim.MaxFeatureBytes), MaxFeatures: int64(lim.MaxFeatures), MaxInteractionFeatures: int64(lim.MaxInteractionFeatures)},
		MaxRecordBytes: int64(lc.set.MaxRecordBytes),

		InferenceExplanation: lc.set.Explain,
	}
	if sm := l.model.Load(); sm != nil {
		rs.Model = propertiesToProto(sm.info)
	}
	return rs
}

// LogRanks implements PersonalizerService.LogRanks: each entry, a rank
// decided by local inference, is checked as Rank checks a request (under
// the loop's current settings and model), its decision is checked against
// the request's eligible actions, and its rank record, made as Rank makes
// its own ([buildRankRecord]), is queued. The first invalid entry ends the
// call with InvalidArgument naming it: the entries before it are logged,
// it and those after it are not. A full event buffer ends the call with
// ResourceExhausted; the client sends the batch again, and the joiner
// learns the ranks logged twice once.
//
// The gRPC handler [Register] installs calls this only for a request an
// interceptor replaced: it hands logRanks each entry's request as the
// bytes it came in.
func (s *Server) LogRanks(ctx context.Context, req *personalizerv1.LogRanksRequest) (*personalizerv1.LogRanksResponse, error) {
	entries, err := encodeEntries(req)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return s.logRanks(ctx, entries)
}

// encodeEntries are req's entries as logRanks takes them, each request
// encoded behind room for its record.
func encodeEntries(req *personalizerv1.LogRanksRequest) ([]vtcodec.LoggedRank, error) {
	entries := make([]vtcodec.LoggedRank, len(req.GetEntries()))
	for i, e := range req.GetEntries() {
		buf, err := requestWithRoom(e.GetRequest())
		if err != nil {
			return nil, err
		}
		entries[i] = vtcodec.LoggedRank{Request: buf, Ranking: e.GetRanking(), Probabilities: e.GetProbabilities(),
			ModelVersion: e.GetModelVersion(), LearningMode: e.GetLearningMode()}
	}
	return entries, nil
}

// logRanks is [Server.LogRanks] of entries whose Request fields hold the
// requests' bytes behind recordRoom bytes of room ([withRoom]): each is
// decoded into pooled memory, checked, and its record written in front of
// its bytes ([encodeRankRecord]), so that the record carries the bytes as
// they came.
func (s *Server) logRanks(ctx context.Context, entries []vtcodec.LoggedRank) (*personalizerv1.LogRanksResponse, error) {
	l, err := s.loopFor(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	lc := l.live.Load()
	m := l.decideModel()
	sc := s.pool.Get().(*scratch)
	defer s.putScratch(sc)
	bl := rankBlocks.Get().(*vtcodec.Blocks)
	defer putBlocks(bl)
	var r personalizerv1.RankRequest // r's strings point into the entry's bytes, not into bl
	for i, e := range entries {
		wire := e.Request[recordRoom:]
		if err := bl.Unmarshal(wire, &r); err != nil {
			return nil, s.toStatus(invalid(fmt.Sprintf("entries[%d].request", i), "not a valid personalizer.v1.RankRequest message: %v", err))
		}
		if r.EventId == nil {
			return nil, s.toStatus(invalid(fmt.Sprintf("entries[%d].request.event_id", i), "a logged rank needs its event id"))
		}
		if err := sc.Check(&r, len(wire), &lc.set, m); err != nil {
			return nil, s.toStatus(inEntry(err, i, ".request."))
		}
		mode := (&loop.Service{LearningMode: e.LearningMode}).Mode()
		d, err := sc.Logged(r.GetEventId(), e.Ranking, e.Probabilities, mode, e.ModelVersion)
		if err != nil {
			return nil, s.toStatus(inEntry(err, i, "."))
		}
		ev := encodeRankRecord(buildRankRecord(sc, l, lc, d, r.GetDeferActivation()), e.Request)
		if err := s.publishValue(ctx, eventlog.TypeRank, []byte(l.prefix+r.GetEventId()), ev); err != nil {
			return nil, s.toStatus(err)
		}
		l.ranks.Add(1)
	}
	return &personalizerv1.LogRanksResponse{}, nil
}

// inEntry names entries[i] in err's field: sep joins the entry and the
// field the error names within it.
func inEntry(err error, i int, sep string) error {
	var inv *invalidError
	if !errors.As(err, &inv) {
		return err
	}
	field := fmt.Sprintf("entries[%d]", i)
	if inv.Field != "" {
		field += sep + inv.Field
	}
	return &invalidError{Field: field, Reason: inv.Reason}
}
