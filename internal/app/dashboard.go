package app

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/server"
	"github.com/open-personalizer/personalizer/web"
)

// The dashboard's reward over time: buckets of liveBucket, the last
// liveKeep of them (an hour).
const (
	liveBucket = 5 * time.Second
	liveKeep   = 720
)

// dashboardRoute is the dashboard's one data route, under
// /personalizer/{version}/: GET it for a loop's live numbers.
const dashboardRoute = "dashboard"

// dashboard serves the web dashboard of a process that serves the REST
// API: its static files at / and, on the REST API (same keys, same loop
// checks), GET /personalizer/{version}/dashboard, a loop's live numbers
// ([dashboardStats]). Everything else the page shows or changes it reads
// and writes through the REST routes any client uses. Its fields other
// than srv are nil where the process does not run the part; they are set
// before serving starts.
type dashboard struct {
	srv      *server.Server
	joiner   *joiner.Joiner
	learners func() map[string]*learner.Learner
	rewards  *liveRewards
	capacity *capacity
}

// serve adds the dashboard's routes to mux and rest: the page at / and
// its files under /ui/.
func (d *dashboard) serve(mux *http.ServeMux, rest *server.REST) {
	files := http.StripPrefix("/ui", http.FileServerFS(web.Static))
	static := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Nothing from elsewhere; uPlot sets element styles.
		h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache") // the files change with the binary
		files.ServeHTTP(w, r)
	}
	mux.HandleFunc("GET /ui/", static)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = "/ui/" // index.html
		static(w, r)
	})
	rest.HandleLoop(dashboardRoute, d.stats)
}

// dashboardStats is what GET /personalizer/{version}/dashboard answers for
// a loop. Counters are totals since the process started: the page turns
// them into rates between two answers (Time says when each was taken).
type dashboardStats struct {
	Loop  string    `json:"loop"`
	Admin bool      `json:"admin"` // the caller may address every loop and manage loops
	Time  time.Time `json:"time"`
	// Calls are the loop's calls this server answered.
	Calls server.LoopCounts `json:"calls"`
	// Served is the model version this server answers the loop with; nil
	// before the first (the uniform policy).
	Served *modelVersion `json:"served"`
	// Learner is the loop's learner, when it runs in this process.
	Learner *learnerVersion `json:"learner,omitempty"`
	// Joiner counts the joins of every loop (one joiner joins them all),
	// when it runs in this process.
	Joiner *joinerCounts `json:"joiner,omitempty"`
	// Capacity is the process's latest GET /capacity sample (every
	// loop's), when sampled.
	Capacity *capacityReport `json:"capacity,omitempty"`
	// Rewards is the loop's reward over time, when its learner runs in
	// this process.
	Rewards *rewardSeries `json:"rewards,omitempty"`
}

type modelVersion struct {
	Version  uint64    `json:"version"`
	Created  time.Time `json:"created"`
	Examples uint64    `json:"examples"` // learned into this version since its model was started
}

type learnerVersion struct {
	Version      uint64    `json:"version"`  // the latest published
	Learned      int64     `json:"learned"`  // examples learned live, all time
	Examples     int64     `json:"examples"` // learned by the current model, since ModelCreated
	ModelCreated time.Time `json:"modelCreated"`
	Retraining   bool      `json:"retraining"`
}

type joinerCounts struct {
	Joined        int64 `json:"joined"`
	DefaultReward int64 `json:"defaultReward"`
	Late          int64 `json:"late"`
	Dangling      int64 `json:"dangling"`
}

// rewardSeries is a loop's [evaluate.Live] buckets newer than the
// request's since.
type rewardSeries struct {
	BucketSeconds float64              `json:"bucketSeconds"`
	Points        []evaluate.LivePoint `json:"points"`
}

// stats answers GET /personalizer/{version}/dashboard for loop name;
// ?since=RFC3339 leaves out the reward buckets that start before it.
func (d *dashboard) stats(w http.ResponseWriter, r *http.Request, name string, admin bool) {
	out := dashboardStats{Loop: name, Admin: admin, Time: time.Now().UTC()}
	out.Calls, _ = d.srv.LoopCounts(name)
	if info := d.srv.LoopModelInfo(name); info != nil {
		out.Served = &modelVersion{Version: info.GetVersion(), Created: info.GetCreated().AsTime(), Examples: info.GetExamples()}
	}
	if d.learners != nil {
		if l := d.learners()[name]; l != nil {
			st := l.Stats()
			out.Learner = &learnerVersion{Version: st.Version, Learned: st.Learned, Examples: st.Examples, ModelCreated: st.ModelCreated, Retraining: st.Retraining}
		}
	}
	if d.joiner != nil {
		c := d.joiner.Counters()
		out.Joiner = &joinerCounts{Joined: c.Emitted, DefaultReward: c.DefaultRewards, Late: c.Late, Dangling: c.Dangling}
	}
	if d.capacity != nil {
		out.Capacity = d.capacity.report()
	}
	if live := d.rewards.get(name); live != nil {
		since, _ := time.Parse(time.RFC3339, r.URL.Query().Get("since")) // none or bad: every bucket
		s := &rewardSeries{BucketSeconds: live.Bucket().Seconds(), Points: []evaluate.LivePoint{}}
		for _, p := range live.Points() {
			if !p.Start.Before(since) {
				s.Points = append(s.Points, p)
			}
		}
		out.Rewards = s
	}
	writeJSON(w, out)
}

// liveRewards holds the reward over time of each loop learned in the
// process: the learners add to it (learner.Config.Observe), the dashboard
// reads it.
type liveRewards struct {
	mu    sync.Mutex
	loops map[string]*evaluate.Live
}

func newLiveRewards() *liveRewards { return &liveRewards{loops: map[string]*evaluate.Live{}} }

// observer starts loop name's series and returns what its learner calls
// with every event it learns.
func (lr *liveRewards) observer(name string) func(*bandit.Event, []int, []float32, []byte) {
	live := evaluate.NewLive(liveBucket, liveKeep)
	lr.mu.Lock()
	lr.loops[name] = live
	lr.mu.Unlock()
	return live.Add
}

// remove drops loop name's series: its learner stopped.
func (lr *liveRewards) remove(name string) {
	lr.mu.Lock()
	delete(lr.loops, name)
	lr.mu.Unlock()
}

// get returns loop name's series; nil for none (or a nil lr).
func (lr *liveRewards) get(name string) *evaluate.Live {
	if lr == nil {
		return nil
	}
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return lr.loops[name]
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(v) // the client went away if this fails
}

// dashboardURL is where a's dashboard is, to print at start.
func (a *api) dashboardURL() string {
	scheme := "http"
	if a.http.TLSConfig != nil {
		scheme = "https"
	}
	return scheme + "://" + a.httpLis.Addr().String() + "/"
}
