// Package decide is what Rank decides: it validates a request against the
// loop's limits, scores the eligible actions with the loop's model (or
// ranks them uniformly before the first model), samples the action to
// show, applies the learning mode and makes the answer. The server's Rank
// and the Go client's local inference both decide with it, so that the
// same request and event id, under the same settings and model, get the
// same ranking, probabilities and model version from either.
//
// decide performs no I/O (it reads model files from memory) and reads no clock: a decision is a function of
// its inputs.
package decide

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/features"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Settings are what a decision takes of its loop's configuration.
type Settings struct {
	// Mode is the learning mode; unspecified is online.
	Mode eventsv1.LearningMode
	// Epsilon is the exploration of an epsilon-greedy model (the loop's
	// explorationPercentage).
	Epsilon float32
	// Policy is the policy before the first model: its interactions bound
	// a request's features ([Limits.MaxInteractionFeatures]); once there
	// is a model, the model's own policy does.
	Policy *bandit.Policy
	Limits Limits
	// MaxRecordBytes is the largest record the event log takes: a request
	// whose event, or the joined line made of it, would not fit is refused.
	MaxRecordBytes int
	// Explain makes a decision explain itself (the loop's
	// isInferenceExplainabilityEnabled): the event is built with its
	// features' names, and each eligible action's score is broken into
	// its features' parts ([Decision.Explained]). Off, deciding does no
	// more than without it.
	Explain bool
}

// Model is a model version as decisions use it.
type Model struct {
	Model   *bandit.Model
	Version string // as the API reports it: the version number in decimal
}

// LoadModel reads a model version's file, data, after checking it against
// its SHA-256, sum: a version that arrived damaged is refused.
func LoadModel(data, sum []byte, version uint64) (*Model, error) {
	got := sha256.Sum256(data)
	if !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("model version %d: %w", version, ErrChecksum)
	}
	m, err := bandit.ReadModel(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("model version %d: %w", version, err)
	}
	return &Model{Model: m, Version: strconv.FormatUint(version, 10)}, nil
}

// ErrChecksum is a model file whose SHA-256 is not the one published with it.
var ErrChecksum = errors.New("checksum mismatch")

// JoinedLineRoom is what a joined DSJson line may need beyond its rank's
// context, and a rank record beyond its request: the label, the ids, the ranking and probabilities of 50
// actions, the model version and the record's headers, with room to
// spare. (The joiner leaves outcomes out of a line that would not fit.)
const JoinedLineRoom = 8 << 10

// Scratch memory a decision grew past these sizes is not kept for the
// next one: a rare large request must not hold its memory for good.
const (
	keepScratchFeatures     = 1 << 17 // features scored, interactions included
	keepScratchContextBytes = 1 << 16
)

// Decision is one request's decision. It lives in the [Scratch] that made
// it and is valid until the Scratch's next use.
type Decision struct {
	EventID string
	// Eligible are the request's actions that are not excluded, in
	// request order; Logged and Answer index them.
	Eligible []*personalizerv1.Action
	// Logged is the decision the rank record carries, the shown action
	// first, and Answer the one the caller gets. Online both are the
	// model's. Apprentice logs the model's decision and answers with the
	// baseline order (the first eligible action first). LoggingOnly logs
	// and answers the baseline order, with the model's probabilities, as
	// Personalizer's client library reset the ranking before logging there.
	Logged, Answer []bandit.ActionProb
	Mode           eventsv1.LearningMode
	ModelVersion   string // empty before the first model
	// Explained is, with [Settings.Explain], each eligible action's
	// explanation under the model that decided (its top [ExplainTop]
	// features); before the first model they name no features. Nil
	// without Settings.Explain.
	Explained []bandit.Explanation
}

// Scratch is a decision's working memory; pool it (see [Scratch.Keep]) so
// that deciding allocates little. A Scratch is not safe for concurrent use.
type Scratch struct {
	ev       bandit.Event // the request's features, hashed to be scored
	shape    bandit.Shape // their namespaces' sizes, to count them
	pred     bandit.Prediction
	pmf      []bandit.ActionProb
	baseline []bandit.ActionProb // eligible actions in request order
	excluded []bool
	context  []byte // the DSJson context, rendered only to size a request near the record limit
	scored   int    // features scored, interactions included
	d        Decision
	slots    slotScratch // a multi-slot decision's
}

// Keep reports whether sc may be pooled for the next decision.
func (sc *Scratch) Keep() bool {
	clear(sc.d.Eligible) // not to keep the request alive
	sc.d.Explained = nil
	return sc.scored <= keepScratchFeatures && cap(sc.context) <= keepScratchContextBytes
}

// Check validates req under s and m (nil before the first model): the
// limits, the size of the event it makes, the features the policy's
// interactions make of it. size is the request's encoded size, which its
// rank record carries. Check leaves the request's eligible actions in sc;
// it hashes no feature.
func (sc *Scratch) Check(req *personalizerv1.RankRequest, size int, s *Settings, m *Model) error {
	excluded, err := s.Limits.ValidateRank(req, sc.excluded)
	if err != nil {
		return err
	}
	sc.excluded = excluded
	d := &sc.d
	d.Eligible = features.Eligible(d.Eligible[:0], req.GetActions(), excluded)
	// What the event becomes must fit the log: the rank record carries
	// the request, the joined line made of it later the request's context.
	need := max(size, features.ContextBound(req.GetContextFeatures(), d.Eligible))
	if need+JoinedLineRoom > s.MaxRecordBytes { // rare: render the context to know
		sc.context = features.AppendContext(sc.context[:0], req.GetContextFeatures(), d.Eligible)
		need = max(size, len(sc.context))
	}
	if n := need + JoinedLineRoom; n > s.MaxRecordBytes {
		return invalid("request", "the event this Rank logs would take about %d bytes, over the limit of %d bytes a record may have (--max-record-bytes); send fewer or shorter features", n, s.MaxRecordBytes)
	}
	pol := s.Policy
	if m != nil {
		pol = m.Model.Policy()
	}
	// The policy's interactions multiply features: bound what scoring
	// (and later learning) this event costs before doing any of it,
	// counting from the namespaces' sizes (no feature is hashed).
	features.Shape(&sc.shape, req.GetContextFeatures(), d.Eligible)
	sc.scored = pol.CountShape(&sc.shape, &sc.pred)
	if limit := s.Limits.MaxInteractionFeatures; sc.scored > limit {
		return invalid("request", "the policy's interactions make %s features to score these actions, over the limit of %d (--max-interaction-features); send fewer features per namespace or fewer actions", countString(sc.scored), limit)
	}
	return nil
}

// Decide checks req, of encoded size size (see [Scratch.Check]), and
// decides it as event eventID: the same request, event id, settings and
// model give the same decision.
func (sc *Scratch) Decide(req *personalizerv1.RankRequest, size int, eventID string, s *Settings, m *Model) (*Decision, error) {
	if err := sc.Check(req, size, s, m); err != nil {
		return nil, err
	}
	d := &sc.d
	sc.pmf = sc.pmf[:0]
	d.Explained = nil
	if m == nil {
		// Before the first model every action is equally likely
		// (Personalizer's initial epsilon is 1), which is also what an
		// empty model's all-tied scores give: a reset model (fresh,
		// every weight 0) ranks uniformly too until it has learned, as
		// Personalizer did after a reset.
		p := 1 / float32(len(d.Eligible))
		for i := range d.Eligible {
			sc.pmf = append(sc.pmf, bandit.ActionProb{Action: i, Prob: p})
		}
		d.ModelVersion = ""
		if s.Explain {
			d.Explained = make([]bandit.Explanation, len(d.Eligible))
		}
	} else {
		sc.ev.Reset()
		sc.ev.SetKeepNames(s.Explain) // names cost allocations: only to explain
		features.Build(&sc.ev, req.GetContextFeatures(), d.Eligible)
		m.Model.PredictEpsilon(&sc.ev, &sc.pred, s.Epsilon)
		sc.pmf = append(sc.pmf, sc.pred.PMF()...)
		d.ModelVersion = m.Version
		if s.Explain { // the same model and event that scored the actions
			d.Explained = m.Model.Explain(&sc.ev, &sc.pred, ExplainTop)
		}
	}
	// Sample, then put the sampled action first as VW's clients do.
	k := bandit.SampleIndex(eventID, sc.pmf)
	sc.pmf[0], sc.pmf[k] = sc.pmf[k], sc.pmf[0]
	d.EventID = eventID
	d.Mode = s.Mode
	if d.Mode == eventsv1.LearningMode_LEARNING_MODE_UNSPECIFIED {
		d.Mode = eventsv1.LearningMode_LEARNING_MODE_ONLINE
	}
	d.Logged, d.Answer = sc.pmf, sc.pmf
	if d.Mode != eventsv1.LearningMode_LEARNING_MODE_ONLINE {
		sc.baseline = baseline(sc.baseline[:0], sc.pmf)
		d.Answer = sc.baseline
		if d.Mode == eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY {
			d.Logged = sc.baseline
		}
	}
	return d, nil
}

// baseline appends to dst the baseline order (the eligible actions in
// request order) with the probabilities pmf gives them.
func baseline(dst, pmf []bandit.ActionProb) []bandit.ActionProb {
	n := len(dst)
	for i := range pmf {
		dst = append(dst, bandit.ActionProb{Action: i})
	}
	for _, ap := range pmf {
		dst[n+ap.Action].Prob = ap.Prob
	}
	return dst
}

// Recorded is the decision a rank record logged for the request whose
// eligible actions are eligible: ranking and probabilities (indices into
// eligible, the shown action first), learning mode and model version, as
// [Decision.Logged] and the record carry them. Its Answer is the one Rank
// gave, so that [Decision.Response] answers what Rank answered.
func Recorded(eventID string, eligible []*personalizerv1.Action, ranking []uint32, probs []float32, mode eventsv1.LearningMode, version string) *Decision {
	d := &Decision{EventID: eventID, Eligible: eligible, Mode: mode, ModelVersion: version}
	for i, a := range ranking {
		d.Logged = append(d.Logged, bandit.ActionProb{Action: int(a), Prob: probs[i]})
	}
	d.Answer = d.Logged
	if mode == eventsv1.LearningMode_LEARNING_MODE_APPRENTICE {
		d.Answer = baseline(nil, d.Logged)
	}
	return d
}

// Response is the answer to req, which d decided: every action, the
// excluded ones last with probability 0; and, if d was explained, each
// eligible action's explanation in the order of the ranking.
func (d *Decision) Response(req *personalizerv1.RankRequest) *personalizerv1.RankResponse {
	actions := req.GetActions()
	resp := &personalizerv1.RankResponse{
		Ranking:        make([]*personalizerv1.RankedAction, 0, len(actions)),
		EventId:        d.EventID,
		RewardActionId: d.Eligible[d.Answer[0].Action].GetId(),
		ModelVersion:   d.ModelVersion,
	}
	ranked := make([]personalizerv1.RankedAction, len(actions)) // one allocation for all
	for i, ap := range d.Answer {
		ranked[i].Id, ranked[i].Probability = d.Eligible[ap.Action].GetId(), ap.Prob
		resp.Ranking = append(resp.Ranking, &ranked[i])
	}
	eligible := 0
	for _, a := range actions {
		if eligible < len(d.Eligible) && d.Eligible[eligible] == a {
			eligible++
			continue
		}
		r := &ranked[len(resp.Ranking)]
		r.Id = a.GetId()
		resp.Ranking = append(resp.Ranking, r)
	}
	if d.Explained != nil {
		ids := make([]string, len(d.Eligible))
		for i, a := range d.Eligible {
			ids[i] = a.GetId()
		}
		ranking := make([]int, len(d.Answer))
		for i, ap := range d.Answer {
			ranking[i] = ap.Action
		}
		resp.InferenceExplanation = Explanations(d.Explained, ids, ranking)
	}
	return resp
}

// probSumTolerance is how far a logged decision's probabilities may sum
// from 1: float32 sums of up to 50 probabilities drift by far less.
const probSumTolerance = 1e-3

// Logged checks a decision made elsewhere (by local inference) for a
// request that [Scratch.Check] has just passed in sc, and returns it:
// ranking and probabilities as the rank record carries them (indices into
// the eligible actions, the shown one first), the learning mode and model
// version it was made with. Errors name the fields as [LoggedRank] does.
//
// [LoggedRank]: https://pkg.go.dev/github.com/open-personalizer/personalizer/proto/personalizer/v1#LoggedRank
func (sc *Scratch) Logged(eventID string, ranking []uint32, probs []float32, mode eventsv1.LearningMode, version string) (*Decision, error) {
	d := &sc.d
	n := len(d.Eligible)
	if len(ranking) != n || len(probs) != n {
		return nil, invalid("ranking", "want the %d eligible actions ranked, each with its probability; got %d ranked and %d probabilities", n, len(ranking), len(probs))
	}
	sc.pmf = sc.pmf[:0]
	seen := sc.excluded[:0] // free again: Check's work is done
	seen = append(seen, make([]bool, n)...)
	sum := 0.0
	for i, a := range ranking {
		if int(a) >= n || seen[a] {
			return nil, invalid(fmt.Sprintf("ranking[%d]", i), "want each eligible action's index (0 to %d) once, got %d", n-1, a)
		}
		seen[a] = true
		p := probs[i]
		if !(p >= 0 && p <= 1) {
			return nil, invalid(fmt.Sprintf("probabilities[%d]", i), "want a probability in [0, 1], got %v", p)
		}
		sum += float64(p)
		sc.pmf = append(sc.pmf, bandit.ActionProb{Action: int(a), Prob: p})
	}
	sc.excluded = seen
	if math.Abs(sum-1) > probSumTolerance {
		return nil, invalid("probabilities", "want probabilities that sum to 1, got %v", sum)
	}
	switch mode {
	case eventsv1.LearningMode_LEARNING_MODE_ONLINE, eventsv1.LearningMode_LEARNING_MODE_APPRENTICE, eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY:
	default:
		return nil, invalid("learning_mode", "want Online, Apprentice or LoggingOnly")
	}
	if version != "" {
		if _, err := strconv.ParseUint(version, 10, 64); err != nil {
			return nil, invalid("model_version", "want a model version number or none, got %q", version)
		}
	}
	d.EventID, d.Logged, d.Answer, d.Mode, d.ModelVersion, d.Explained = eventID, sc.pmf, nil, mode, version, nil
	return d, nil
}

// countString writes a feature count, saturated at math.MaxInt when the
// true count does not fit.
func countString(n int) string {
	if n == math.MaxInt {
		return "more than " + strconv.Itoa(math.MaxInt)
	}
	return strconv.Itoa(n)
}
