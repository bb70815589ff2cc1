package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// ModelHistory reads the model versions a loop's learner keeps (its model
// history) and re-activates them.
type ModelHistory interface {
	// ModelVersion returns version of loop's model. A version the
	// learner does not keep is a NotFound status whose message says
	// which versions it keeps.
	ModelVersion(ctx context.Context, loop string, version uint64) (*eventsv1.GetModelResponse, error)
	// RollbackModel makes a kept version loop's model again, published
	// as the next version; a version not kept is a NotFound status.
	RollbackModel(ctx context.Context, loop string, version uint64) (*eventsv1.ModelInfo, error)
	// ListModels returns the metadata of the versions the learner keeps,
	// newest first.
	ListModels(ctx context.Context, loop string) ([]*eventsv1.ModelInfo, error)
}

// DecisionLog finds an event's records in the event log, for the audit.
type DecisionLog interface {
	// FindDecision returns the records of the event whose key is key
	// (loop/eventId). at, when not zero, is a time at or before its rank,
	// where the search starts. When no rank record is found the error
	// wraps [ErrUnknownEvent] and its message says where it searched.
	FindDecision(ctx context.Context, key string, at time.Time) (*DecisionRecords, error)
}

// DecisionRecords are what the event log holds of one event.
type DecisionRecords struct {
	Rank eventlog.Record // its rank record (personalizer.events)
	// Joined is its joined line (personalizer.joined), nil until its
	// reward window closes.
	Joined *eventlog.Record
	// Audits are the records personalizer.audit holds of its outcomes
	// that were not learned (late, dangling).
	Audits []eventlog.Record
	// Outcomes are, for an event not joined yet, the reward and activate
	// records of it in personalizer.events so far.
	Outcomes []eventlog.Record
}

// ErrUnknownEvent is an event whose rank record is not found: 404.
var ErrUnknownEvent = errors.New("no rank of the event was found")

// DefaultExplainTop is how many features per action the audit's
// breakdown gives when the call does not say.
const DefaultExplainTop = 10

// maxExplainTop bounds the features per action a call may ask for.
const maxExplainTop = 1000

// errNoAudit answers the audit on a server without an event log to read.
var errNoAudit = &apiError{http.StatusServiceUnavailable, codes.Unimplemented, "OperationNotAllowed", "decision audits are not available on this server"}

// GetDecision implements PersonalizerService.GetDecision through the
// [Admin] of s (see [Admin.decision]).
func (s *Server) GetDecision(ctx context.Context, req *personalizerv1.GetDecisionRequest) (*personalizerv1.GetDecisionResponse, error) {
	a := s.audit
	if a == nil {
		return nil, status.Error(codes.Unimplemented, errNoAudit.Error())
	}
	var at time.Time
	if req.GetAt() != nil {
		at = req.GetAt().AsTime()
	}
	d, err := a.decision(ctx, "", req.GetEventId(), at, int(req.GetTop()))
	if err != nil {
		e := a.classify(err, "InternalServerError")
		return nil, status.Error(e.grpc, e.Error())
	}
	return &personalizerv1.GetDecisionResponse{Decision: d}, nil
}

// decision audits the rank of eventID in the loop the call addresses:
// what its record logged (the request, the ranking Rank returned, the
// model version), what the joiner made of it, and each eligible action's
// score broken down by its top features under the model version that
// decided, rebuilt from the request's bytes and scored with that version
// from the learner's history.
func (a *Admin) decision(ctx context.Context, name, eventID string, at time.Time, top int) (*personalizerv1.Decision, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := validateOutcomeEventID(a.s.cfg.Limits, "event_id", eventID); err != nil {
		return nil, err
	}
	switch {
	case top < 0 || top > maxExplainTop:
		return nil, invalid("top", "want 0 (the default, %d) to %d features per action, got %d", DefaultExplainTop, maxExplainTop, top)
	case top == 0:
		top = DefaultExplainTop
	}
	if a.cfg.Decisions == nil {
		return nil, errNoAudit
	}
	recs, err := a.cfg.Decisions.FindDecision(ctx, l+"/"+eventID, at)
	if err != nil {
		return nil, err
	}
	ev := &eventsv1.RankEvent{}
	if err := proto.Unmarshal(recs.Rank.Value, ev); err != nil {
		return nil, fmt.Errorf("rank record of %s/%s at %d/%d: %w", l, eventID, recs.Rank.Partition, recs.Rank.Offset, err)
	}
	if len(ev.GetMultiSlotRequest()) > 0 {
		return nil, &apiError{http.StatusBadRequest, codes.FailedPrecondition, "BadRequest", fmt.Sprintf("event %s is a multi-slot rank: multi-slot decisions are not audited yet", eventID)}
	}
	mode := ev.GetLearningMode()
	if mode == eventsv1.LearningMode_LEARNING_MODE_UNSPECIFIED {
		mode = eventsv1.LearningMode_LEARNING_MODE_ONLINE
	}
	d := &personalizerv1.Decision{
		EventId:      eventID,
		Timestamp:    timestamppb.New(recs.Rank.Time),
		ModelVersion: ev.GetModelVersion(),
		LearningMode: loop.ModeName(mode),
		Deferred:     ev.GetDeferred(),
	}
	if d.Outcome, err = outcomeOf(recs); err != nil {
		return nil, fmt.Errorf("join outcome of %s/%s: %w", l, eventID, err)
	}
	if len(ev.GetRequest()) == 0 {
		d.BreakdownUnavailable = "the rank record is from before the request was logged with it"
		return d, nil
	}
	req := &personalizerv1.RankRequest{}
	if err := proto.Unmarshal(ev.GetRequest(), req); err != nil {
		return nil, fmt.Errorf("request of %s/%s: %w", l, eventID, err)
	}
	excluded, n, unknown := features.Excluded(nil, req.GetActions(), req.GetExcludedActions())
	if unknown >= 0 || n != len(ev.GetRanking()) || len(ev.GetProbabilities()) != n {
		return nil, fmt.Errorf("rank record of %s/%s: the request's %d eligible actions do not match its ranking", l, eventID, n)
	}
	eligible := features.Eligible(nil, req.GetActions(), excluded)
	rec := decide.Recorded(eventID, eligible, ev.GetRanking(), ev.GetProbabilities(), mode, ev.GetModelVersion())
	resp := rec.Response(req)
	d.Request, d.Ranking, d.RewardActionId = req, resp.GetRanking(), resp.GetRewardActionId()
	d.ChosenActionId = eligible[rec.Logged[0].Action].GetId()
	if err := a.breakdown(ctx, l, req, rec, top, d); err != nil {
		return nil, err
	}
	return d, nil
}

// breakdown fills d's scores, explanations, best action and exploratory
// flag from the model version that made rec, or says why it cannot.
func (a *Admin) breakdown(ctx context.Context, l string, req *personalizerv1.RankRequest, rec *decide.Decision, top int, d *personalizerv1.Decision) error {
	if rec.ModelVersion == "" {
		d.BreakdownUnavailable = "no model had been published yet: every action was equally likely"
		return nil
	}
	version, err := strconv.ParseUint(rec.ModelVersion, 10, 64)
	if err != nil {
		d.BreakdownUnavailable = fmt.Sprintf("the rank record's model version %q is not a version number", rec.ModelVersion)
		return nil
	}
	m, err := a.historicModel(ctx, l, version)
	if msg, ok := notFound(err); ok {
		d.BreakdownUnavailable = msg
		return nil
	}
	if err != nil {
		return err
	}
	var ev bandit.Event
	ev.SetKeepNames(true)
	features.Build(&ev, req.GetContextFeatures(), rec.Eligible)
	var p bandit.Prediction
	ex := m.Model.Explain(&ev, &p, top)
	m.Model.PredictEpsilon(&ev, &p, 0) // best first, as Rank ranked
	best := p.PMF()[0].Action
	ids := make([]string, len(rec.Eligible))
	for i, act := range rec.Eligible {
		ids[i] = act.GetId()
	}
	ranking := make([]int, len(rec.Answer)) // in the order Rank answered
	for i, ap := range rec.Answer {
		ranking[i] = ap.Action
		d.Scores = append(d.Scores, &personalizerv1.ActionScore{Id: ids[ap.Action], Score: 0 - ex[ap.Action].Score})
	}
	d.Explanations = decide.Explanations(ex, ids, ranking)
	d.BestActionId = ids[best]
	// Tied with the best, the sampled action was as good a choice: only
	// one scored worse explored.
	d.Exploratory = ex[rec.Logged[0].Action].Score > ex[best].Score
	return nil
}

// auditModels is how many model versions an [Admin] keeps loaded for
// audits: audits of one period ask for the same few versions.
const auditModels = 4

// modelCache holds the last model versions loaded for audits.
type modelCache struct {
	mu     sync.Mutex
	models []cachedModel // most recently used last
}

type cachedModel struct {
	key string // loop/version
	m   *decide.Model
}

// historicModel returns version of loop l's model, from the cache or the
// learner's history (a NotFound status when it is not kept).
func (a *Admin) historicModel(ctx context.Context, l string, version uint64) (*decide.Model, error) {
	key := l + "/" + strconv.FormatUint(version, 10)
	c := &a.models
	c.mu.Lock()
	for i, cm := range c.models {
		if cm.key == key {
			c.models = append(append(c.models[:i:i], c.models[i+1:]...), cm)
			c.mu.Unlock()
			return cm.m, nil
		}
	}
	c.mu.Unlock()
	if st := a.s.loop(l); st != nil {
		if sm := st.model.Load(); sm != nil && sm.info.GetVersion() == version {
			return &sm.Model, nil // the version Rank uses: no need to ask
		}
	}
	if a.cfg.History == nil {
		return nil, status.Errorf(codes.NotFound, "model version %d is not the one this server ranks with, and it has no model history to ask", version)
	}
	mv, err := a.cfg.History.ModelVersion(ctx, l, version)
	if err != nil {
		return nil, fmt.Errorf("model version %d of loop %q: %w", version, l, err)
	}
	m, err := decide.LoadModel(mv.GetData(), mv.GetInfo().GetSha256(), version)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.models = append(c.models, cachedModel{key, m})
	if len(c.models) > auditModels {
		c.models = c.models[1:]
	}
	return m, nil
}

// joinedLine is what the audit reads of a joined DSJson line.
type joinedLine struct {
	Cost     float32  `json:"_label_cost"`
	Original *float32 `json:"_original_label_cost"`
	Outcomes []struct {
		Value       *float32 `json:"v"`
		ActionTaken bool     `json:"ActionTaken"`
	} `json:"o"`
	SkipLearn bool `json:"_skipLearn"`
}

// auditLine is what the audit reads of a personalizer.audit record.
type auditLine struct {
	Reason    string    `json:"Reason"`
	Value     *float32  `json:"v"`
	Timestamp time.Time `json:"Timestamp"`
}

// outcomeOf is the join outcome recs show: the joined line's, or for an
// event not joined yet the outcomes received so far.
func outcomeOf(recs *DecisionRecords) (*personalizerv1.DecisionOutcome, error) {
	o := &personalizerv1.DecisionOutcome{Status: "pending"}
	if recs.Joined != nil {
		var j joinedLine
		if err := json.Unmarshal(recs.Joined.Value, &j); err != nil {
			return nil, fmt.Errorf("joined line at %d/%d: %w", recs.Joined.Partition, recs.Joined.Offset, err)
		}
		// 0 - x, not -x: a cost of 0 is a reward of 0, not -0.
		o.Status, o.Cost, o.Reward, o.Learnable = "joined", 0-(0-j.Cost), 0-j.Cost, !j.SkipLearn
		o.OriginalReward = o.Reward
		if j.Original != nil {
			o.OriginalReward = 0 - *j.Original
		}
		for _, out := range j.Outcomes {
			if out.ActionTaken {
				o.Activated = true
			} else if out.Value != nil {
				o.Rewards = append(o.Rewards, *out.Value)
			}
		}
		o.DefaultReward = len(o.Rewards) == 0
	} else {
		seen := map[uint64]bool{} // copies of one record count once, as the joiner counts them
		for _, r := range recs.Outcomes {
			switch r.Type() {
			case eventlog.TypeReward:
				var rw eventsv1.RewardEvent
				if err := proto.Unmarshal(r.Value, &rw); err != nil || rw.GetId() != 0 && seen[rw.GetId()] {
					continue
				}
				seen[rw.GetId()] = true
				o.Rewards = append(o.Rewards, rw.GetValue())
			case eventlog.TypeActivate:
				o.Activated = true
			}
		}
	}
	for _, r := range recs.Audits {
		var al auditLine
		if err := json.Unmarshal(r.Value, &al); err != nil {
			return nil, fmt.Errorf("audit record at %d/%d: %w", r.Partition, r.Offset, err)
		}
		o.Unjoined = append(o.Unjoined, &personalizerv1.UnjoinedOutcome{Reason: al.Reason, Value: al.Value, Timestamp: timestamppb.New(al.Timestamp)})
	}
	return o, nil
}

// rollbackModel re-activates a kept model version of the loop the call
// addresses and returns once this server ranks with the new version.
func (a *Admin) rollbackModel(ctx context.Context, name string, version uint64) (*eventsv1.ModelInfo, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		return nil, invalid("version", "want a model version number (1 or more)")
	}
	if a.cfg.History == nil {
		return nil, errUnsupported
	}
	info, err := a.cfg.History.RollbackModel(ctx, l, version)
	if err != nil {
		return nil, fmt.Errorf("roll loop %q back to model version %d: %w", l, version, err)
	}
	return info, a.served(ctx, l, info)
}

// listModels returns the model versions the learner keeps of the loop
// the call addresses, newest first.
func (a *Admin) listModels(ctx context.Context, name string) ([]*eventsv1.ModelInfo, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, err
	}
	if a.cfg.History == nil {
		return nil, errUnsupported
	}
	infos, err := a.cfg.History.ListModels(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("list the model versions of loop %q: %w", l, err)
	}
	return infos, nil
}

// notFound returns the message of the NotFound status err is or wraps.
func notFound(err error) (string, bool) {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus().Code() == codes.NotFound {
		return se.GRPCStatus().Message(), true
	}
	return "", false
}
