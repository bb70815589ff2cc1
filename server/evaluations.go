package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/loop"
)

// EvaluationContract is Personalizer's EvaluationContract: an offline
// evaluation of a loop's joined events whose timestamps are in
// [StartTime, EndTime), of the Online, Baseline and Random policies and
// Policies (custom).
type EvaluationContract struct {
	// Also search around the loop's current policy (evaluate.Search):
	// the candidates' results follow the custom ones, with policySource
	// OfflineExperimentation, and OptimalPolicy names the pick.
	EnableOfflineExperimentation bool          `json:"enableOfflineExperimentation"`
	Name                         string        `json:"name"`
	StartTime                    time.Time     `json:"startTime"`
	EndTime                      time.Time     `json:"endTime"`
	Policies                     []loop.Policy `json:"policies"`
	// Ours: also evaluate the loop's current policy (named Current) and,
	// in the same pass, leave out each namespace and each of the
	// evaluate.DefaultFeatures features most frequent in the first
	// evaluate.ImportanceLines events (evaluate.Importance): the result
	// has Current's PolicyResult, FeatureImportance and FeatureScores.
	// Not with EnableOfflineExperimentation.
	EnableFeatureImportance bool `json:"enableFeatureImportance,omitempty"`
	// Current is set by the Admin when EnableOfflineExperimentation or
	// EnableFeatureImportance: the loop's policy arguments, which the
	// search searches around or the importance evaluates.
	Current string `json:"-"`
}

// Evaluation statuses. Personalizer's enum (modelAsString: clients take
// any) has no "running"; it is ours, between pending and completed.
const (
	EvaluationPending   = "pending"
	EvaluationRunning   = "running"
	EvaluationCompleted = "completed"
	EvaluationFailed    = "failed"
	// An auto-optimization run ends in one of these instead of
	// completed: it applied its optimal policy, or kept the loop's.
	EvaluationOptimalPolicyApplied = "optimalPolicyApplied"
	EvaluationOnlinePolicyRetained = "onlinePolicyRetained"
)

// Evaluation types: created through the API, or by auto-optimization.
const (
	EvaluationManual = "Manual"
	EvaluationAuto   = "Auto"
)

// EvaluationFinished reports whether status is that of an evaluation
// that ran to its end: completed, or an auto-optimization's outcome.
func EvaluationFinished(status string) bool {
	return status == EvaluationCompleted || status == EvaluationOptimalPolicyApplied || status == EvaluationOnlinePolicyRetained
}

// Evaluation is Personalizer's Evaluation, with its progress and the
// reason of a failure.
type Evaluation struct {
	ID                string                  `json:"id"`
	Name              string                  `json:"name"`
	StartTime         time.Time               `json:"startTime"`
	EndTime           time.Time               `json:"endTime"`
	JobID             string                  `json:"jobId"`
	Status            string                  `json:"status"`
	PolicyResults     []evaluate.PolicyResult `json:"policyResults"`
	FeatureImportance [][]string              `json:"featureImportance"` // with enableFeatureImportance, the features by score tiers (evaluate.Tiers), most important first; else empty
	EvaluationType    string                  `json:"evaluationType"`    // Manual or Auto
	OptimalPolicy     string                  `json:"optimalPolicy"`     // the arguments a search picked; "" without a search or if none beats Online
	CreationTime      time.Time               `json:"creationTime"`
	// Beyond Personalizer.
	Progress EvaluationProgress `json:"progress"`
	Counts   *evaluate.Counts   `json:"counts,omitempty"` // the lines read, once completed
	Error    string             `json:"error,omitempty"`  // why it failed

	// FeatureScores, with enableFeatureImportance: a row per namespace
	// left out, then per feature, as the featureScores of Personalizer's
	// FeatureImportance with the change of the IPS estimate and its 95%
	// interval (evaluate.ImportanceResult's).
	FeatureScores []evaluate.FeatureScore `json:"featureScores,omitempty"`
}

// EvaluationProgress counts what an evaluation has read.
type EvaluationProgress struct {
	Lines      int64 `json:"lines"`      // the loop's joined lines read
	Evaluated  int64 `json:"evaluated"`  // events evaluated
	OutOfRange int64 `json:"outOfRange"` // lines whose Timestamp is outside the range (or missing)
}

// EvaluationAdmin runs and stores a loop's evaluations, for [Admin].
type EvaluationAdmin interface {
	// Create stores a pending evaluation of c, already checked, and
	// starts it; it returns an error wrapping [ErrNoLogsInRange] when the
	// loop has no joined events from c.StartTime on.
	Create(ctx context.Context, loop string, c EvaluationContract) (*Evaluation, error)
	// Get returns an evaluation, or an error wrapping
	// [ErrEvaluationNotFound].
	Get(ctx context.Context, loop, id string) (*Evaluation, error)
	// List returns the loop's evaluations, oldest first.
	List(ctx context.Context, loop string) ([]*Evaluation, error)
	// Delete stops and deletes an evaluation, or returns an error
	// wrapping [ErrEvaluationNotFound].
	Delete(ctx context.Context, loop, id string) error
	// Model returns the model file (bandit's format) of policy, a custom
	// or searched policy of a finished evaluation, as the evaluation
	// trained it, or an error wrapping [ErrEvaluationModelNotFound] when
	// it is not kept.
	Model(ctx context.Context, loop, id, policy string) ([]byte, error)
}

var (
	// ErrEvaluationNotFound is Personalizer's EvaluationNotFound.
	ErrEvaluationNotFound = errors.New("the evaluation does not exist")
	// ErrNoLogsInRange is Personalizer's NoLogsExistInDateRange.
	ErrNoLogsInRange = errors.New("no events are stored for the loop in the evaluation's date range")
	// ErrEvaluationModelNotFound is Personalizer's EvaluationModelNotFound:
	// the model an evaluation trained for a policy is not kept (by this
	// process: models are kept in the memory of the process that ran
	// the evaluation).
	ErrEvaluationModelNotFound = errors.New("the model the evaluation trained for the policy is not kept by this server")
)

// MaxEvaluationNameLength and MaxPolicyArgumentsLength are Personalizer's
// limits on an evaluation's name (and a policy's) and a policy's arguments.
const (
	MaxEvaluationNameLength  = 256
	MaxPolicyArgumentsLength = 1024
)

// checkEvaluation refuses a contract Personalizer refuses, and custom
// policies whose models would take, together, more than the largest model
// this server takes: they are all in memory here while it runs.
func (a *Admin) checkEvaluation(c *EvaluationContract) error {
	bad := func(code, format string, args ...any) error {
		return &loop.Error{Code: code, Message: fmt.Sprintf(format, args...)}
	}
	switch {
	case strings.TrimSpace(c.Name) == "" || len(c.Name) > MaxEvaluationNameLength:
		return bad("InvalidEvaluationContract", "The evaluation name must be 1 to %d characters.", MaxEvaluationNameLength)
	case c.StartTime.IsZero() || c.EndTime.IsZero():
		return bad("InvalidDateTimesInEvaluationContract", "startTime and endTime are required.")
	case !c.EndTime.After(c.StartTime):
		return bad("InvalidDateTimesInEvaluationContract", "endTime must be after startTime.")
	case len(c.Policies) > evaluate.MaxCustom:
		return bad("MaximumEvaluationCustomPoliciesExceeded", "A maximum of %d custom policies are allowed.", evaluate.MaxCustom)
	}
	seen := map[string]bool{}
	var total int64
	for i, p := range c.Policies {
		switch {
		case strings.TrimSpace(p.Name) == "" || len(p.Name) > MaxEvaluationNameLength:
			return bad("InvalidEvaluationContract", "policies[%d]: a policy name must be 1 to %d characters.", i, MaxEvaluationNameLength)
		case seen[p.Name]:
			return bad("DuplicateCustomPolicyNames", "Custom policy names should be unique.")
		case len(p.Arguments) > MaxPolicyArgumentsLength:
			return bad("InvalidEvaluationContract", "policies[%d]: arguments must be at most %d characters.", i, MaxPolicyArgumentsLength)
		}
		seen[p.Name] = true
		pol, err := bandit.ParsePolicy(p.Arguments)
		if err != nil {
			return bad("InvalidEvaluationContract", "policy %q: %v", p.Name, err)
		}
		if err := a.fits(pol, "InvalidEvaluationContract"); err != nil {
			return err
		}
		total += pol.WeightBytes()
	}
	if total > a.cfg.MaxModelBytes {
		return bad("InvalidEvaluationContract", "The custom policies' models take %d bytes together, over the limit of %d bytes (--max-model-bytes); use fewer bits (-b) or fewer policies.",
			total, a.cfg.MaxModelBytes)
	}
	c.StartTime, c.EndTime = c.StartTime.UTC(), c.EndTime.UTC()
	return nil
}

// checkSearch sets c.Current to loop's policy and refuses a search whose
// candidates' models and the custom ones would take together more than
// the largest model this server takes.
func (a *Admin) checkSearch(name string, c *EvaluationContract) error {
	cfg, err := a.config(name)
	if err != nil {
		return err
	}
	c.Current = cfg.Policy.Arguments
	cands, err := evaluate.Candidates(c.Current, evaluate.DefaultBudget)
	if err != nil {
		return &loop.Error{Code: "InvalidEvaluationContract", Message: fmt.Sprintf("search around the loop's policy: %v", err)}
	}
	var total int64
	names := map[string]bool{}
	for _, p := range c.Policies {
		pol, _ := bandit.ParsePolicy(p.Arguments) // checkEvaluation checked them
		total += pol.WeightBytes()
		names[p.Name] = true
	}
	for _, p := range cands {
		if names[p.Name] {
			return &loop.Error{Code: "DuplicateCustomPolicyNames", Message: fmt.Sprintf("Custom policy names should be unique: %q names a searched policy.", p.Name)}
		}
		pol, _ := bandit.ParsePolicy(p.Arguments) // Candidates parsed them
		total += pol.WeightBytes()
	}
	if total > a.cfg.MaxModelBytes {
		return &loop.Error{Code: "InvalidEvaluationContract", Message: fmt.Sprintf(
			"The custom policies' and the %d searched policies' models take %d bytes together, over the limit of %d bytes (--max-model-bytes); use fewer bits (-b) or search without enableOfflineExperimentation.",
			len(cands), total, a.cfg.MaxModelBytes)}
	}
	return nil
}

// checkImportance sets c.Current to loop's policy and refuses an
// importance evaluation with a search, a custom policy named as one of
// its policies, or whose models (Current and one per feature left out;
// one more per namespace) and the custom ones would take together more
// than the largest model this server takes.
func (a *Admin) checkImportance(name string, c *EvaluationContract) error {
	bad := func(code, format string, args ...any) error {
		return &loop.Error{Code: code, Message: fmt.Sprintf(format, args...)}
	}
	if c.EnableOfflineExperimentation {
		return bad("InvalidEvaluationContract", "enableFeatureImportance and enableOfflineExperimentation are separate evaluations.")
	}
	cfg, err := a.config(name)
	if err != nil {
		return err
	}
	c.Current = cfg.Policy.Arguments
	pol, err := bandit.ParsePolicy(c.Current)
	if err != nil {
		return bad("InvalidEvaluationContract", "the loop's policy: %v", err)
	}
	total := int64(1+evaluate.DefaultFeatures) * pol.WeightBytes()
	for _, p := range c.Policies {
		if p.Name == evaluate.CurrentName || strings.HasPrefix(p.Name, evaluate.WithoutName) {
			return bad("DuplicateCustomPolicyNames", "Custom policy names should be unique: %q names a feature importance policy.", p.Name)
		}
		cp, _ := bandit.ParsePolicy(p.Arguments) // checkEvaluation checked them
		total += cp.WeightBytes()
	}
	if total > a.cfg.MaxModelBytes {
		return bad("InvalidEvaluationContract",
			"The custom policies' and the %d feature importance policies' models take %d bytes together, over the limit of %d bytes (--max-model-bytes); use fewer bits (-b) or evaluate without enableFeatureImportance.",
			1+evaluate.DefaultFeatures, total, a.cfg.MaxModelBytes)
	}
	return nil
}

// evaluations returns the EvaluationAdmin and the loop the call addresses.
func (a *Admin) evaluations(ctx context.Context, name string) (EvaluationAdmin, string, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, "", err
	}
	if a.cfg.Evaluations == nil {
		return nil, "", errUnsupported
	}
	if _, err := a.config(l); err != nil {
		return nil, "", err
	}
	return a.cfg.Evaluations, l, nil
}

func (a *Admin) createEvaluation(ctx context.Context, name string, c EvaluationContract) (*Evaluation, error) {
	if l, err := a.loopOf(ctx, name); err == nil {
		if cfg, err := a.config(l); err == nil && cfg.Policy.MultiSlot() {
			return nil, &apiError{http.StatusBadRequest, codes.FailedPrecondition, "InvalidEvaluationContract", "Offline evaluation of a multi-slot loop is not supported."}
		}
	}
	ev, l, err := a.evaluations(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := a.checkEvaluation(&c); err != nil {
		return nil, err
	}
	if c.EnableOfflineExperimentation {
		if err := a.checkSearch(l, &c); err != nil {
			return nil, err
		}
	}
	if c.EnableFeatureImportance {
		if err := a.checkImportance(l, &c); err != nil {
			return nil, err
		}
	}
	return ev.Create(ctx, l, c)
}

func (a *Admin) getEvaluation(ctx context.Context, name, id string) (*Evaluation, error) {
	ev, l, err := a.evaluations(ctx, name)
	if err != nil {
		return nil, err
	}
	return ev.Get(ctx, l, id)
}

func (a *Admin) listEvaluations(ctx context.Context, name string) ([]*Evaluation, error) {
	ev, l, err := a.evaluations(ctx, name)
	if err != nil {
		return nil, err
	}
	return ev.List(ctx, l)
}

func (a *Admin) deleteEvaluation(ctx context.Context, name, id string) error {
	ev, l, err := a.evaluations(ctx, name)
	if err != nil {
		return err
	}
	return ev.Delete(ctx, l, id)
}

// classifyEvaluation answers the evaluation errors [Admin.classify] does
// not know.
func classifyEvaluation(err error) *apiError {
	switch {
	case errors.Is(err, ErrEvaluationNotFound):
		return &apiError{http.StatusNotFound, codes.NotFound, "EvaluationNotFound", "the evaluation does not exist"}
	case errors.Is(err, errLearningSettingsNotFound):
		return &apiError{http.StatusNotFound, codes.NotFound, "LearningSettingsNotFound", errLearningSettingsNotFound.Error()}
	case errors.Is(err, ErrEvaluationModelNotFound):
		return &apiError{http.StatusNotFound, codes.NotFound, "EvaluationModelNotFound", ErrEvaluationModelNotFound.Error()}
	case errors.Is(err, ErrNoLogsInRange):
		return &apiError{http.StatusBadRequest, codes.InvalidArgument, "NoLogsExistInDateRange", ErrNoLogsInRange.Error()}
	}
	return nil
}

func (h *REST) listEvaluations(w http.ResponseWriter, r *http.Request) {
	es, err := h.admin.listEvaluations(r.Context(), "")
	if err != nil {
		h.adminFail(w, "EvaluationsGetListFailed", err)
		return
	}
	if es == nil {
		es = []*Evaluation{}
	}
	writeJSON(w, http.StatusOK, es)
}

func (h *REST) createEvaluation(w http.ResponseWriter, r *http.Request) {
	var c EvaluationContract
	if err := decodeObject(r, &c); err != nil {
		h.adminFail(w, "", err)
		return
	}
	e, err := h.admin.createEvaluation(r.Context(), "", c)
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	w.Header().Set("Location", scheme+"://"+r.Host+strings.TrimSuffix(r.URL.Path, "/")+"/"+e.ID)
	writeJSON(w, http.StatusCreated, e)
}

func (h *REST) getEvaluation(w http.ResponseWriter, r *http.Request) {
	e, err := h.admin.getEvaluation(r.Context(), "", r.PathValue("id"))
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (h *REST) deleteEvaluation(w http.ResponseWriter, r *http.Request) {
	if err := h.admin.deleteEvaluation(r.Context(), "", r.PathValue("id")); err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// PolicyReferenceContract is Personalizer's PolicyReferenceContract: a
// policy of an evaluation, for POST /configurations/applyFromEvaluation.
type PolicyReferenceContract struct {
	EvaluationID string `json:"evaluationId"`
	PolicyName   string `json:"policyName"`
}

// errLearningSettingsNotFound is Personalizer's LearningSettingsNotFound:
// the evaluation has no completed, learnable policy of that name.
var errLearningSettingsNotFound = errors.New("the evaluation has no completed policy of that name with learning arguments (Online, Baseline and Random have none)")

// applyFromEvaluation applies the policy p names in a finished
// evaluation (a custom or searched one) with the model the evaluation
// trained for it, as Personalizer did: it imports the model (the path of
// PUT /model), then sets the loop's policy to the policy's arguments (the
// path of PUT /configurations/policy). In that order the learner does not
// retrain: when the new policy reaches it, its model, the imported one,
// already follows that policy, so it continues learning from it.
func (a *Admin) applyFromEvaluation(ctx context.Context, name string, p PolicyReferenceContract) (*loop.Config, error) {
	ev, l, err := a.evaluations(ctx, name)
	if err != nil {
		return nil, err
	}
	if p.EvaluationID == "" || len(p.EvaluationID) > MaxEvaluationNameLength || p.PolicyName == "" || len(p.PolicyName) > MaxEvaluationNameLength {
		return nil, &loop.Error{Code: "BadRequest", Message: fmt.Sprintf("evaluationId and policyName are required, at most %d characters each.", MaxEvaluationNameLength)}
	}
	e, err := ev.Get(ctx, l, p.EvaluationID)
	if err != nil {
		return nil, err
	}
	if !EvaluationFinished(e.Status) {
		return nil, errLearningSettingsNotFound
	}
	for _, r := range e.PolicyResults {
		if r.Name != p.PolicyName || r.Arguments == "" {
			continue
		}
		pol := loop.Policy{Name: r.Name, Arguments: r.Arguments}
		if err := pol.Validate(); err != nil { // refused before the model changes
			return nil, err
		}
		parsed, _ := bandit.ParsePolicy(pol.Arguments) // Validate parsed it
		if err := a.fits(parsed, "InvalidPolicyConfiguration"); err != nil {
			return nil, err
		}
		model, err := ev.Model(ctx, l, e.ID, r.Name)
		if err != nil {
			return nil, err
		}
		if _, err := a.importModel(ctx, name, model); err != nil {
			return nil, err
		}
		return a.setPolicy(ctx, name, &pol)
	}
	return nil, errLearningSettingsNotFound
}

func (h *REST) applyFromEvaluation(w http.ResponseWriter, r *http.Request) {
	var p PolicyReferenceContract
	if err := decodeObject(r, &p); err != nil {
		h.adminFail(w, "", err)
		return
	}
	if _, err := h.admin.applyFromEvaluation(r.Context(), "", p); err != nil {
		h.adminFail(w, "UpdateConfigurationFailed", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
