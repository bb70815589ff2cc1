package server

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// restRollback is the answer to POST /model/rollback: the new version.
type restRollback struct {
	Version          string    `json:"version"`
	RollbackOf       string    `json:"rollbackOf"`
	CreationTime     time.Time `json:"creationTime"`
	LastModifiedTime time.Time `json:"lastModifiedTime"`
}

// rollbackModel serves POST /model/rollback, {"version": "12"} (a
// number is taken too).
func (h *REST) rollbackModel(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Version json.RawMessage `json:"version"`
	}
	if err := h.decode(r, &in); err != nil {
		h.adminFail(w, "", err)
		return
	}
	text := strings.Trim(string(in.Version), `"`)
	v, err := strconv.ParseUint(text, 10, 64)
	if err != nil || v == 0 {
		h.adminFail(w, "", invalid("version", "want a model version number, as GET /model/properties or Rank's modelVersion give it, got %s", orNone(string(in.Version))))
		return
	}
	info, err := h.admin.rollbackModel(r.Context(), "", v)
	if err != nil {
		h.adminFail(w, "ModelPublishFailed", err)
		return
	}
	p := propertiesOf(info)
	writeJSON(w, http.StatusOK, restRollback{Version: strconv.FormatUint(p.version, 10), RollbackOf: strconv.FormatUint(info.GetRollbackOf(), 10),
		CreationTime: p.created, LastModifiedTime: p.modified})
}

// restModelVersion is a kept model version in GET /model/history.
type restModelVersion struct {
	Version          string    `json:"version"`
	CreationTime     time.Time `json:"creationTime"`
	LastModifiedTime time.Time `json:"lastModifiedTime"`
	Examples         uint64    `json:"examples"`
	RollbackOf       string    `json:"rollbackOf,omitempty"`
}

// modelHistory serves GET /model/history: the model versions the learner
// keeps, newest first, {"versions": [...]}.
func (h *REST) modelHistory(w http.ResponseWriter, r *http.Request) {
	infos, err := h.admin.listModels(r.Context(), "")
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	out := struct {
		Versions []restModelVersion `json:"versions"`
	}{Versions: make([]restModelVersion, len(infos))}
	for i, info := range infos {
		p := propertiesOf(info)
		out.Versions[i] = restModelVersion{Version: strconv.FormatUint(p.version, 10), CreationTime: p.created, LastModifiedTime: p.modified,
			Examples: p.examples}
		if info.GetRollbackOf() != 0 {
			out.Versions[i].RollbackOf = strconv.FormatUint(info.GetRollbackOf(), 10)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// restDecision is the audit of a Rank in JSON: [personalizerv1.Decision]
// with Personalizer's spelling of rankings and explanations, and the
// request in the typed API's JSON (protojson).
type restDecision struct {
	EventID              string             `json:"eventId"`
	Timestamp            time.Time          `json:"timestamp"`
	Request              json.RawMessage    `json:"request,omitempty"`
	ModelVersion         string             `json:"modelVersion"`
	Ranking              []restRankedAction `json:"ranking"`
	RewardActionID       string             `json:"rewardActionId"`
	LearningMode         string             `json:"learningMode"`
	Deferred             bool               `json:"deferred"`
	ChosenActionID       string             `json:"chosenActionId"`
	BestActionID         string             `json:"bestActionId,omitempty"`
	Exploratory          bool               `json:"exploratory"`
	Outcome              restOutcome        `json:"outcome"`
	Scores               []restActionScore  `json:"scores"`
	Explanations         []restExplanation  `json:"explanations"`
	BreakdownUnavailable string             `json:"breakdownUnavailable,omitempty"`
}

type restActionScore struct {
	ID    string  `json:"id"`
	Score float32 `json:"score"`
}

type restOutcome struct {
	Status         string         `json:"status"`
	Rewards        []float32      `json:"rewards"`
	Activated      bool           `json:"activated"`
	Reward         float32        `json:"reward"`
	OriginalReward float32        `json:"originalReward"`
	Cost           float32        `json:"cost"`
	DefaultReward  bool           `json:"defaultReward"`
	Learnable      bool           `json:"learnable"`
	Unjoined       []restUnjoined `json:"unjoined"`
}

type restUnjoined struct {
	Reason    string    `json:"reason"`
	Value     *float32  `json:"value,omitempty"`
	Timestamp time.Time `json:"timestamp"`
}

// getDecision serves GET /events/{eventId}[?at=RFC3339 time][&top=N].
func (h *REST) getDecision(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var at time.Time
	if s := q.Get("at"); s != "" {
		var err error
		if at, err = time.Parse(time.RFC3339Nano, s); err != nil {
			h.adminFail(w, "", invalid("at", "want a time as 2006-01-02T15:04:05Z, got %q", s))
			return
		}
	}
	top := 0
	if s := q.Get("top"); s != "" {
		var err error
		if top, err = strconv.Atoi(s); err != nil {
			h.adminFail(w, "", invalid("top", "want a number of features, got %q", s))
			return
		}
	}
	d, err := h.admin.decision(r.Context(), "", r.PathValue("eventId"), at, top)
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	writeJSON(w, http.StatusOK, restDecisionOf(d))
}

// restDecisionOf is d in JSON.
func restDecisionOf(d *personalizerv1.Decision) restDecision {
	out := restDecision{
		EventID: d.GetEventId(), Timestamp: d.GetTimestamp().AsTime(), ModelVersion: d.GetModelVersion(),
		Ranking: make([]restRankedAction, len(d.GetRanking())), RewardActionID: d.GetRewardActionId(),
		LearningMode: d.GetLearningMode(), Deferred: d.GetDeferred(), ChosenActionID: d.GetChosenActionId(),
		BestActionID: d.GetBestActionId(), Exploratory: d.GetExploratory(),
		Scores: make([]restActionScore, len(d.GetScores())), Explanations: restExplanations(d.GetExplanations()),
		BreakdownUnavailable: d.GetBreakdownUnavailable(),
	}
	if d.GetRequest() != nil {
		out.Request, _ = protojson.Marshal(d.GetRequest()) // a decoded message always encodes
	}
	for i, a := range d.GetRanking() {
		out.Ranking[i] = restRankedAction{ID: a.GetId(), Probability: a.GetProbability()}
	}
	for i, s := range d.GetScores() {
		out.Scores[i] = restActionScore{ID: s.GetId(), Score: s.GetScore()}
	}
	o := d.GetOutcome()
	out.Outcome = restOutcome{Status: o.GetStatus(), Rewards: o.GetRewards(), Activated: o.GetActivated(), Reward: o.GetReward(),
		OriginalReward: o.GetOriginalReward(), Cost: o.GetCost(), DefaultReward: o.GetDefaultReward(), Learnable: o.GetLearnable(),
		Unjoined: make([]restUnjoined, len(o.GetUnjoined()))}
	if out.Outcome.Rewards == nil {
		out.Outcome.Rewards = []float32{}
	}
	for i, u := range o.GetUnjoined() {
		out.Outcome.Unjoined[i] = restUnjoined{Reason: u.GetReason(), Value: u.Value, Timestamp: u.GetTimestamp().AsTime()}
	}
	return out
}
