package server

import (
	"net/http"
	"time"

	"github.com/open-personalizer/personalizer/loop"
)

// addLoops serves the loops under base (admin keys only, as over gRPC):
// GET /loops lists them, POST /loops creates one from a [loop.Config]
// whose "loop" names it (the other fields default as in CreateLoop), and
// DELETE /loops/{loop} deletes one. The dashboard manages loops with them.
func (h *REST) addLoops(base string) {
	h.mux.HandleFunc("GET "+base+"/loops", h.listLoops)
	h.mux.HandleFunc("POST "+base+"/loops", h.createLoop)
	h.mux.HandleFunc("DELETE "+base+"/loops/{loop}", h.deleteLoop)
}

func (h *REST) listLoops(w http.ResponseWriter, r *http.Request) {
	cs, err := h.admin.listLoops(r.Context())
	if err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]*loop.Config{"loops": cs})
}

func (h *REST) createLoop(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Loop    string        `json:"loop"`
		Service *loop.Service `json:"service"`
		Policy  *loop.Policy  `json:"policy"`
		Limits  loop.Limits   `json:"limits"`
	}
	if err := decodeObject(r, &in); err != nil {
		h.adminFail(w, "", err)
		return
	}
	c := loop.Default(in.Loop)
	c.Version = 1
	if in.Service != nil {
		c.Service = *in.Service
	}
	c.Service.LastConfigurationEditDate = h.admin.cfg.Now().UTC().Truncate(time.Second)
	if in.Policy != nil {
		c.Policy = *in.Policy
	}
	c.Limits = in.Limits
	c, err := h.admin.createLoop(r.Context(), c)
	if err != nil {
		h.adminFail(w, "UpdateConfigurationFailed", err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

func (h *REST) deleteLoop(w http.ResponseWriter, r *http.Request) {
	if err := h.admin.deleteLoop(r.Context(), r.PathValue("loop")); err != nil {
		h.adminFail(w, "InternalServerError", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// HandleLoop serves GET /personalizer/{version}/route, for every version
// of [RESTVersions], with f, after the checks every REST call passes (key,
// rate limit) and those of a call addressing one loop: the loop is the
// key's, or for an admin key (or without keys) the one [LoopHeader]
// names, else the server's own; a loop the server does not serve answers
// 404. admin tells f whether the caller may address every loop. Call it
// before serving.
func (h *REST) HandleLoop(route string, f func(w http.ResponseWriter, r *http.Request, loop string, admin bool)) {
	for _, v := range RESTVersions {
		h.mux.HandleFunc("GET /personalizer/"+v+"/"+route, func(w http.ResponseWriter, r *http.Request) {
			name, err := h.g.loopOf(r.Context(), "", h.s.cfg.Loop)
			if err != nil {
				e := denied(err).(*apiError)
				writeError(w, e.http, e.code, e.msg, "")
				return
			}
			if !h.s.Serves(name) {
				writeError(w, http.StatusNotFound, "ResourceNotFound", "the loop does not exist", "")
				return
			}
			f(w, r, name, h.g.requireAdmin(r.Context()) == nil)
		})
	}
}
