package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/open-personalizer/personalizer/loop"
)

// AddAdmin serves a's routes of Personalizer's REST API under every
// version of [RESTVersions]: /configurations/service and /policy, /model
// (export, import, reset) and /model/properties, /logs and
// /logs/properties, /evaluations, /configurations/applyFromEvaluation, and /loops ([REST.addLoops]),
// and beyond Personalizer /model/history, /model/rollback and the audit, GET /events/{eventId}. A REST call addresses the loop of its key (an admin
// key's: the server's). Call it before serving.
func (h *REST) AddAdmin(a *Admin) {
	h.admin = a
	for _, v := range RESTVersions {
		base := "/personalizer/" + v
		h.mux.HandleFunc("GET "+base+"/configurations/service", h.getService)
		h.mux.HandleFunc("PUT "+base+"/configurations/service", h.putService)
		h.mux.HandleFunc("GET "+base+"/configurations/policy", h.getPolicy)
		h.mux.HandleFunc("PUT "+base+"/configurations/policy", h.putPolicy)
		h.mux.HandleFunc("DELETE "+base+"/configurations/policy", h.deletePolicy)
		h.mux.HandleFunc("GET "+base+"/model", h.getModel)
		h.mux.HandleFunc("PUT "+base+"/model", h.putModel)
		h.mux.HandleFunc("DELETE "+base+"/model", h.deleteModel)
		h.mux.HandleFunc("GET "+base+"/model/properties", h.getModelProperties)
		h.mux.HandleFunc("DELETE "+base+"/logs", h.deleteLogs)
		h.mux.HandleFunc("GET "+base+"/logs/properties", h.getLogProperties)
		h.mux.HandleFunc("GET "+base+"/evaluations", h.listEvaluations)
		h.mux.HandleFunc("POST "+base+"/evaluations", h.createEvaluation)
		h.mux.HandleFunc("GET "+base+"/evaluations/{id}", h.getEvaluation)
		h.mux.HandleFunc("DELETE "+base+"/evaluations/{id}", h.deleteEvaluation)
		h.mux.HandleFunc("POST "+base+"/configurations/applyFromEvaluation", h.applyFromEvaluation)
		h.mux.HandleFunc("POST "+base+"/model/rollback", h.rollbackModel)
		h.mux.HandleFunc("GET "+base+"/model/history", h.modelHistory)
		h.mux.HandleFunc("GET "+base+"/events/{eventId}", h.getDecision)
		h.addLoops(base)
	}
}

// isModelImport reports whether r imports a model, whose body may be as
// large as a model file.
func isModelImport(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/model")
}

// adminFail writes err, from an admin operation, as Personalizer's error
// body; failCode is the operation's code for internal failures.
func (h *REST) adminFail(w http.ResponseWriter, failCode string, err error) {
	var inv *invalidError
	var tooLong *http.MaxBytesError
	if errors.As(err, &inv) || errors.As(err, &tooLong) || errors.Is(err, errNotJSON) ||
		errors.Is(err, errBadBody) || errors.Is(err, errBodyTimeout) || errors.Is(err, errClientGone) {
		h.fail(w, "BadRequest", err) // the body, as every route reports it
		return
	}
	e := h.admin.classify(err, failCode)
	writeError(w, e.http, e.code, e.msg, "")
}

func (h *REST) getService(w http.ResponseWriter, r *http.Request) {
	c, err := h.admin.loopConfig(r.Context(), "")
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	writeJSON(w, http.StatusOK, c.Service)
}

func (h *REST) putService(w http.ResponseWriter, r *http.Request) {
	var svc loop.Service
	if err := decodeObject(r, &svc); err != nil {
		h.adminFail(w, "", err)
		return
	}
	c, err := h.admin.updateService(r.Context(), "", svc)
	if err != nil {
		h.adminFail(w, "UpdateConfigurationFailed", err)
		return
	}
	writeJSON(w, http.StatusOK, c.Service)
}

func (h *REST) getPolicy(w http.ResponseWriter, r *http.Request) {
	c, err := h.admin.loopConfig(r.Context(), "")
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	writeJSON(w, http.StatusOK, c.Policy)
}

func (h *REST) putPolicy(w http.ResponseWriter, r *http.Request) {
	var p loop.Policy
	if err := decodeObject(r, &p); err != nil {
		h.adminFail(w, "", err)
		return
	}
	c, err := h.admin.setPolicy(r.Context(), "", &p)
	if err != nil {
		h.adminFail(w, "UpdateConfigurationFailed", err)
		return
	}
	writeJSON(w, http.StatusOK, c.Policy)
}

func (h *REST) deletePolicy(w http.ResponseWriter, r *http.Request) {
	c, err := h.admin.setPolicy(r.Context(), "", nil)
	if err != nil {
		h.adminFail(w, "UpdateConfigurationFailed", err)
		return
	}
	writeJSON(w, http.StatusOK, c.Policy)
}

// getModel answers the model file of the version Rank uses, with
// Last-Modified (its publication) and HEAD, which Personalizer's client
// library polls: in this server's format, or with ?format=vw as a VW
// 9.11.2 model file; ?signed=true wraps it in a zip with its signature
// (see [Admin.exportModel]). PUT /model takes every one of them.
func (h *REST) getModel(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	signed := false
	if v := q.Get("signed"); v != "" {
		var err error
		if signed, err = strconv.ParseBool(v); err != nil {
			h.fail(w, "BadRequest", invalid("signed", "want true or false, got %q", v))
			return
		}
	}
	sm, data, err := h.admin.exportModel(r.Context(), "", q.Get("format"), signed)
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if signed {
		w.Header().Set("Content-Type", "application/zip")
	}
	http.ServeContent(w, r, "", sm.info.GetCreated().AsTime(), bytes.NewReader(data))
}

func (h *REST) putModel(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		h.adminFail(w, "", bodyError(r, err))
		return
	}
	if _, err := h.admin.importModel(r.Context(), "", data); err != nil {
		h.adminFail(w, "ModelPublishFailed", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *REST) deleteModel(w http.ResponseWriter, r *http.Request) {
	if _, err := h.admin.resetModel(r.Context(), ""); err != nil {
		h.adminFail(w, "ModelResetFailed", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// restModelProperties is Personalizer's ModelProperties.
type restModelProperties struct {
	CreationTime     time.Time `json:"creationTime"`
	LastModifiedTime time.Time `json:"lastModifiedTime"`
}

func (h *REST) getModelProperties(w http.ResponseWriter, r *http.Request) {
	sm, err := h.admin.servedModel(r.Context(), "")
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	p := propertiesOf(sm.info)
	writeJSON(w, http.StatusOK, restModelProperties{CreationTime: p.created, LastModifiedTime: p.modified})
}

func (h *REST) deleteLogs(w http.ResponseWriter, r *http.Request) {
	if err := h.admin.deleteLogs(r.Context(), ""); err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// restLogsProperties is Personalizer's LogsProperties.
type restLogsProperties struct {
	DateRange struct {
		From time.Time `json:"from"`
		To   time.Time `json:"to"`
	} `json:"dateRange"`
}

func (h *REST) getLogProperties(w http.ResponseWriter, r *http.Request) {
	from, to, err := h.admin.logProperties(r.Context(), "")
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	var out restLogsProperties
	out.DateRange.From, out.DateRange.To = from.UTC(), to.UTC()
	writeJSON(w, http.StatusOK, out)
}

// decodeObject reads r's JSON object body into the struct v field by
// field, by the fields' JSON names (or names that differ only in case, as
// encoding/json matches them), so that a value that does not decode is
// reported with its field. Unknown fields are ignored.
func decodeObject(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return bodyError(r, err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return invalid("", "the request body must be a JSON object, not a JSON %s", typeErr.Value)
		}
		return fmt.Errorf("%w: %v", errNotJSON, err)
	}
	rv := reflect.ValueOf(v).Elem()
	rt := rv.Type()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		raw, ok := obj[name]
		if !ok {
			for k, r := range obj {
				if strings.EqualFold(k, name) {
					raw, ok = r, true
					break
				}
			}
		}
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, rv.Field(i).Addr().Interface()); err != nil {
			var typeErr *json.UnmarshalTypeError
			var timeErr *time.ParseError
			switch {
			case errors.As(err, &typeErr):
				return invalid(name, "must be %s, not a JSON %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
			case errors.As(err, &timeErr):
				return invalid(name, "must be an RFC 3339 date-time such as \"2019-01-19T00:00:00Z\"")
			}
			return invalid(name, "%v", err)
		}
	}
	return nil
}
