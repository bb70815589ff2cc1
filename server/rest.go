package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// RESTVersions are the Personalizer API versions whose Rank, Reward and
// Activate routes [REST] serves; the three have the same shapes in each.
var RESTVersions = []string{"v1.0", "v1.1-preview.3"}

// REST serves Personalizer's REST API for Rank, Reward and Activate,
// under /personalizer/{version}/, multi-slot Rank, Reward and Activate
// under v1.1-preview.3, and with [REST.AddAdmin] the configuration,
// model, logs and evaluations routes. Routes it does not serve (feature
// importances) answer 404 ResourceNotFound. Requests are mapped onto the gRPC request
// types and answered by the same [Server] methods, so a request gets the
// same answer, and logs the same event, over either API.
type REST struct {
	s            *Server
	g            *Guard
	maxBodyBytes int64
	mux          *http.ServeMux
	admin        *Admin // nil until [REST.AddAdmin]
}

// NewREST returns the REST API of s. Calls are authenticated and rate
// limited by g; bodies longer than maxBodyBytes are refused.
func NewREST(s *Server, g *Guard, maxBodyBytes int64) *REST {
	h := &REST{s: s, g: g, maxBodyBytes: maxBodyBytes, mux: http.NewServeMux()}
	for _, v := range RESTVersions {
		base := "/personalizer/" + v
		h.mux.HandleFunc("POST "+base+"/rank", h.rank)
		h.mux.HandleFunc("POST "+base+"/events/{eventId}/reward", h.reward)
		h.mux.HandleFunc("POST "+base+"/events/{eventId}/activate", h.activate)
		if v != "v1.0" { // multi-slot came with v1.1-preview.1
			h.mux.HandleFunc("POST "+base+"/multislot/rank", h.multiSlotRank)
			h.mux.HandleFunc("POST "+base+"/multislot/events/{eventId}/reward", h.multiSlotReward)
			h.mux.HandleFunc("POST "+base+"/multislot/events/{eventId}/activate", h.multiSlotActivate)
		}
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "ResourceNotFound", "no such route: "+r.Method+" "+r.URL.Path, "")
	})
	return h
}

// ServeHTTP authenticates the call by its Ocp-Apim-Subscription-Key
// header (or "Authorization: Bearer KEY"), applies the caller's rate
// limit, and serves the route.
func (h *REST) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, err := h.g.authenticate(withRequestedLoop(r.Context(), r.Header.Get(LoopHeader)), keyFrom(r.Header.Get))
	if err != nil {
		h.fail(w, "", err)
		return
	}
	if err := h.g.Limit(ctx); err != nil {
		h.fail(w, "", status.Error(codes.ResourceExhausted, err.Error()))
		return
	}
	limit := h.maxBodyBytes
	if h.admin != nil && isModelImport(r) {
		limit = h.admin.cfg.MaxModelBytes
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	h.mux.ServeHTTP(w, r.WithContext(ctx))
}

// restRankRequest is Personalizer's RankRequest. Feature objects are kept
// raw and mapped by [namespaces], which keeps their order.
type restRankRequest struct {
	ContextFeatures []json.RawMessage `json:"contextFeatures"`
	Actions         []*restAction     `json:"actions"`
	ExcludedActions []string          `json:"excludedActions"`
	EventID         *string           `json:"eventId"`
	DeferActivation bool              `json:"deferActivation"`
}

type restAction struct {
	ID       string            `json:"id"`
	Features []json.RawMessage `json:"features"`
}

type restRankResponse struct {
	Ranking        []restRankedAction `json:"ranking"`
	EventID        string             `json:"eventId"`
	RewardActionID string             `json:"rewardActionId"`
	// InferenceExplanation is there only when the loop explains its
	// ranks (isInferenceExplainabilityEnabled).
	InferenceExplanation []restExplanation `json:"inferenceExplanation,omitempty"`
}

type restRankedAction struct {
	ID          string  `json:"id"`
	Probability float32 `json:"probability"`
}

func (h *REST) rank(w http.ResponseWriter, r *http.Request) {
	const code = "InvalidRankRequest"
	var in restRankRequest
	if err := h.decode(r, &in); err != nil {
		h.fail(w, code, err)
		return
	}
	req, err := rankFromREST(&in)
	if err != nil {
		h.fail(w, code, err)
		return
	}
	resp, err := h.s.Rank(r.Context(), req)
	if err != nil {
		h.fail(w, code, err)
		return
	}
	out := restRankResponse{EventID: resp.GetEventId(), RewardActionID: resp.GetRewardActionId(), Ranking: make([]restRankedAction, len(resp.GetRanking()))}
	for i, a := range resp.GetRanking() {
		out.Ranking[i] = restRankedAction{ID: a.GetId(), Probability: a.GetProbability()}
	}
	out.InferenceExplanation = restExplanations(resp.GetInferenceExplanation())
	writeJSON(w, http.StatusCreated, out)
}

func (h *REST) reward(w http.ResponseWriter, r *http.Request) {
	const code = "InvalidRewardRequest"
	var in struct {
		Value *float64 `json:"value"`
	}
	if err := h.decode(r, &in); err != nil {
		h.fail(w, code, err)
		return
	}
	if in.Value == nil {
		h.fail(w, code, invalid("value", "required: a number between -1 and 1"))
		return
	}
	v := *in.Value
	if v < -1 || v > 1 { // before float32 rounding can make it 1
		h.fail(w, code, invalid("value", "reward must be a number between -1 and 1, got %v", v))
		return
	}
	_, err := h.s.Reward(r.Context(), &personalizerv1.RewardRequest{EventId: r.PathValue("eventId"), Value: float32(v)})
	if err != nil {
		h.fail(w, code, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *REST) activate(w http.ResponseWriter, r *http.Request) {
	_, err := h.s.Activate(r.Context(), &personalizerv1.ActivateRequest{EventId: r.PathValue("eventId")})
	if err != nil {
		h.fail(w, "InvalidEventIdToActivate", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// errNotJSON marks a body that is not the JSON a route takes.
var errNotJSON = errors.New("the request body is not valid JSON")

// decode reads the JSON body into v.
func (h *REST) decode(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return bodyError(r, err)
	}
	err = json.Unmarshal(body, v)
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		return typeError(body, typeErr)
	case err != nil:
		return fmt.Errorf("%w: %v", errNotJSON, err)
	}
	return nil
}

// jsonKind names a Go kind the way a JSON user thinks of it.
func jsonKind(kind string) string {
	switch kind {
	case "slice":
		return "an array"
	case "struct", "ptr", "map":
		return "an object"
	case "float64", "float32":
		return "a number"
	case "bool":
		return "true or false"
	}
	return "a " + kind
}

// rankFromREST maps a REST RankRequest onto the gRPC type. Each
// contextFeatures object's plain values are features of the default
// namespace, and each nested object is the namespace named by its key, as
// Vowpal Wabbit's JSON parser reads a nested object; namespaces of the same
// name are merged, in order of first appearance. Action features do the
// same with the action's unnamed namespace ("j" in the log).
func rankFromREST(in *restRankRequest) (*personalizerv1.RankRequest, error) {
	req := &personalizerv1.RankRequest{
		ExcludedActions: in.ExcludedActions,
		EventId:         in.EventID,
		DeferActivation: in.DeferActivation,
	}
	var err error
	req.ContextFeatures, req.Actions, err = contextAndActions(in.ContextFeatures, in.Actions)
	if err != nil {
		return nil, err
	}
	return req, nil
}

// contextAndActions maps the context features and the actions that Rank
// and multi-slot Rank requests share, as [rankFromREST] describes.
func contextAndActions(context []json.RawMessage, in []*restAction) ([]*personalizerv1.Namespace, []*personalizerv1.Action, error) {
	ctx, err := namespaces("contextFeatures", context)
	if err != nil {
		return nil, nil, err
	}
	actions := make([]*personalizerv1.Action, len(in))
	for i, a := range in {
		if a == nil {
			return nil, nil, invalid(fmt.Sprintf("actions[%d]", i), "actions contains a null value")
		}
		actions[i] = &personalizerv1.Action{Id: a.ID}
		if actions[i].Features, err = namespaces(fmt.Sprintf("actions[%d].features", i), a.Features); err != nil {
			return nil, nil, err
		}
	}
	return ctx, actions, nil
}

// namespaces maps a list of feature objects onto namespaces.
func namespaces(field string, objs []json.RawMessage) ([]*personalizerv1.Namespace, error) {
	var b nsBuilder
	for i, raw := range objs {
		at := func() string { return fmt.Sprintf("%s[%d]", field, i) }
		w := walker{b: raw}
		switch w.skipSpace() {
		case 'n':
			return nil, invalid(at(), "features contain a null value")
		case '{':
			if err := b.object(&w, "", at); err != nil {
				return nil, err
			}
		default:
			return nil, invalid(at(), "features are not in key value pair format: want a JSON object")
		}
	}
	return b.list, nil
}

// nsBuilder collects features by namespace name, in order of first
// appearance.
type nsBuilder struct {
	list  []*personalizerv1.Namespace
	index map[string]*personalizerv1.Namespace
}

func (b *nsBuilder) add(ns string, f *personalizerv1.Feature) {
	n, ok := b.index[ns]
	if !ok {
		if b.index == nil {
			b.index = make(map[string]*personalizerv1.Namespace)
		}
		n = &personalizerv1.Namespace{Name: ns}
		b.index[ns] = n
		b.list = append(b.list, n)
	}
	n.Features = append(n.Features, f)
}

// object reads the members of the object at w's '{' into namespace ns; at
// formats the object's path for errors.
func (b *nsBuilder) object(w *walker, ns string, at func() string) error {
	w.i++ // '{'
	for w.skipSpace() != '}' {
		if w.b[w.i] == ',' {
			w.i++
			w.skipSpace()
		}
		name := w.str()
		path := func() string { return at() + "." + name }
		if reason := featureNameProblem(name); reason != "" {
			return invalid(path(), "%s", reason)
		}
		w.skipSpace() // before ':'
		w.i++
		f := &personalizerv1.Feature{Name: name}
		switch c := w.skipSpace(); c {
		case '"':
			f.Value = &personalizerv1.Feature_StringValue{StringValue: w.str()}
		case 't':
			f.Value = &personalizerv1.Feature_BoolValue{BoolValue: true}
			w.i += len("true")
		case 'f':
			f.Value = &personalizerv1.Feature_BoolValue{BoolValue: false}
			w.i += len("false")
		case 'n':
			return invalid(path(), "features contain a null value")
		case '[':
			return invalid(path(), "array features are not supported; give each element a name")
		case '{':
			if reason := namespaceNameProblem(name); reason != "" {
				return invalid(path(), "%s", reason)
			}
			if err := b.object(w, name, path); err != nil {
				return err
			}
			continue
		default:
			n := w.number()
			x, err := strconv.ParseFloat(n, 64)
			if err != nil || math.IsInf(x, 0) {
				return invalid(path(), "number %s is out of range", n)
			}
			f.Value = &personalizerv1.Feature_NumberValue{NumberValue: x}
		}
		b.add(ns, f)
	}
	w.i++ // '}'
	return nil
}

// walker reads JSON that encoding/json has already found valid (a
// json.RawMessage it decoded), so it checks no syntax: each method starts
// at the first byte of what it reads and leaves w.i just after it.
type walker struct {
	b []byte
	i int
}

// skipSpace moves past white space and returns the next byte.
func (w *walker) skipSpace() byte {
	for w.b[w.i] == ' ' || w.b[w.i] == '\n' || w.b[w.i] == '\t' || w.b[w.i] == '\r' {
		w.i++
	}
	return w.b[w.i]
}

// str reads a string. Plain strings are copied; those with escapes or
// invalid UTF-8 are decoded by encoding/json, which replaces invalid bytes
// with U+FFFD as the gRPC decoder's UTF-8 check would refuse them.
func (w *walker) str() string {
	start := w.i
	plain := true
	for w.i++; w.b[w.i] != '"'; w.i++ {
		switch c := w.b[w.i]; {
		case c == '\\':
			plain = false
			w.i++
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
	w.i++
	if plain {
		return string(w.b[start+1 : w.i-1])
	}
	var s string
	json.Unmarshal(w.b[start:w.i], &s) // valid: encoding/json checked it
	return s
}

// number reads a number's text.
func (w *walker) number() string {
	start := w.i
	for w.i < len(w.b) && strings.IndexByte("+-.eE0123456789", w.b[w.i]) >= 0 {
		w.i++
	}
	return string(w.b[start:w.i])
}

// restError is Personalizer's ErrorResponse.
type restError struct {
	Error restErrorBody `json:"error"`
}

type restErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Target  string `json:"target,omitempty"`
}

// protoFields renames the gRPC field names validation reports to their
// REST names; the rest of a path (indices, .id) is the same in both.
var protoFields = strings.NewReplacer("context_features", "contextFeatures", "excluded_actions", "excludedActions",
	"event_id", "eventId", "number_value", "numberValue", "baseline_action", "baselineAction", "slot_id", "slotId",
	"rewards", "reward")

// fail writes err as Personalizer's error body; code is the route's error
// code for invalid requests.
func (h *REST) fail(w http.ResponseWriter, code string, err error) {
	var inv *invalidError
	var tooLong *http.MaxBytesError
	switch {
	case errors.As(err, &inv) && inv.Field == "": // the whole body
		writeError(w, http.StatusBadRequest, code, inv.Reason, "")
		return
	case errors.As(err, &inv): // found by the REST mapping: the field is already REST's
		writeError(w, http.StatusBadRequest, code, inv.Error(), inv.Field)
		return
	case errors.As(err, &tooLong):
		writeError(w, http.StatusBadRequest, "PayloadSizeExceeded", fmt.Sprintf("exceeds maximum allowed payload size of %d bytes", tooLong.Limit), "")
		return
	case errors.Is(err, errNotJSON):
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error(), "")
		return
	case errors.Is(err, errBadBody), errors.Is(err, errBodyTimeout), errors.Is(err, errClientGone):
		h.s.log.Debug("request body not read", "err", err)
		switch {
		case errors.Is(err, errBadBody):
			writeError(w, http.StatusBadRequest, "BadRequest", errBadBody.Error(), "")
		case errors.Is(err, errBodyTimeout):
			writeError(w, http.StatusRequestTimeout, "RequestTimeout", errBodyTimeout.Error(), "")
		default:
			writeError(w, StatusClientClosedRequest, "ClientClosedRequest", errClientGone.Error(), "")
		}
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.Convert(h.s.toStatus(err))
	}
	switch st.Code() {
	case codes.InvalidArgument:
		msg, target := st.Message(), ""
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
				fv := br.GetFieldViolations()[0]
				target = protoFields.Replace(fv.GetField())
				msg = target + ": " + fv.GetDescription()
			}
		}
		writeError(w, http.StatusBadRequest, code, msg, target)
	case codes.FailedPrecondition: // a call the loop's problem type does not answer
		reason := code
		for _, d := range st.Details() {
			if ei, ok := d.(*errdetails.ErrorInfo); ok {
				reason = ei.GetReason()
			}
		}
		writeError(w, http.StatusBadRequest, reason, st.Message(), "")
	case codes.Unauthenticated:
		writeError(w, http.StatusUnauthorized, "401", st.Message(), "")
	case codes.PermissionDenied:
		writeError(w, http.StatusForbidden, "InvalidApiAccess", st.Message(), "")
	case codes.ResourceExhausted:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "429", st.Message(), "")
	case codes.Unavailable:
		writeError(w, http.StatusServiceUnavailable, "OperationNotAllowed", st.Message(), "")
	case codes.Canceled:
		writeError(w, StatusClientClosedRequest, "ClientClosedRequest", st.Message(), "")
	case codes.DeadlineExceeded:
		writeError(w, http.StatusRequestTimeout, "RequestTimeout", st.Message(), "")
	default:
		writeError(w, http.StatusInternalServerError, "InternalServerError", "internal error", "")
	}
}

func writeError(w http.ResponseWriter, httpStatus int, code, message, target string) {
	writeJSON(w, httpStatus, restError{restErrorBody{Code: code, Message: message, Target: target}})
}

func writeJSON(w http.ResponseWriter, httpStatus int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(httpStatus)
	json.NewEncoder(w).Encode(v) // the client went away if this fails
}
