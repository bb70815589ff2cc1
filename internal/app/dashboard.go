package app

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
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
	srv *server.Server
	// self is the server's name in the learners' lists of servers
	// ([serverName]).
	self     string
	joiner   *joiner.Joiner
	learners func() map[string]*learner.Learner
	rewards  *liveRewards
	capacity *capacity
	// svc, in a process that learns, lists the servers of other
	// processes that watch its learners.
	svc *learner.Service
	// models, in a server without a learner, is its learner's
	// ModelService: the reward over time and the servers watching come
	// from there.
	models eventsv1.ModelServiceClient
}

// learnerTimeout bounds a dashboard's call to its learner: without an
// answer the page goes without what it would have said.
const learnerTimeout = 2 * time.Second

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
	// Rewards is the loop's reward over time, from its learner (in this
	// process or, for a server, over the learner's ModelService); absent
	// when the learner did not answer (RewardsError says why).
	Rewards      *rewardSeries `json:"rewards,omitempty"`
	RewardsError string        `json:"rewardsError,omitempty"`
	// Servers are the servers of the loop and the version each serves:
	// this one, and those watching the loop's learner, sorted.
	Servers []servingServer `json:"servers"`
}

// servingServer is a server and the model version it serves in a loop.
type servingServer struct {
	Server  string     `json:"server"`  // its gRPC address ([serverName])
	Self    bool       `json:"self"`    // the server answering
	Version uint64     `json:"version"` // 0: none yet, the uniform policy
	Created *time.Time `json:"created"` // when the learner made the version; null when not known
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
	since, _ := time.Parse(time.RFC3339, r.URL.Query().Get("since")) // none or bad: every bucket
	var watching []*eventsv1.ServerInfo
	if d.models != nil {
		ctx, cancel := context.WithTimeout(r.Context(), learnerTimeout)
		defer cancel()
		var err error
		if out.Rewards, err = d.remoteRewards(ctx, name, since); err != nil {
			out.RewardsError = "the learner did not answer: " + status.Convert(err).Message()
		}
		if resp, err := d.models.ListServers(ctx, &eventsv1.ListServersRequest{Loop: name}); err == nil {
			watching = resp.GetServers()
		}
	} else if resp, ok := d.rewards.response(name, since); ok {
		out.Rewards = rewardSeriesOf(resp)
	}
	if d.svc != nil {
		watching = d.svc.Servers(name)
	}
	out.Servers = d.servers(watching, out.Served)
	writeJSON(w, out)
}

// remoteRewards asks the learner for loop name's reward over time.
func (d *dashboard) remoteRewards(ctx context.Context, name string, since time.Time) (*rewardSeries, error) {
	req := &eventsv1.GetLiveRewardsRequest{Loop: name}
	if !since.IsZero() {
		req.Since = timestamppb.New(since)
	}
	resp, err := d.models.GetLiveRewards(ctx, req)
	if err != nil {
		return nil, err
	}
	return rewardSeriesOf(resp), nil
}

// servers lists the servers watching a loop's learner and this one,
// which serves served, as it serves it now (what its watch said may be
// a version behind).
func (d *dashboard) servers(watching []*eventsv1.ServerInfo, served *modelVersion) []servingServer {
	out := []servingServer{{Server: d.self, Self: true}}
	if served != nil {
		out[0].Version, out[0].Created = served.Version, &served.Created
	}
	for _, w := range watching {
		if w.GetServer() == d.self {
			continue
		}
		s := servingServer{Server: w.GetServer(), Version: w.GetVersion()}
		if w.GetCreated() != nil {
			t := w.GetCreated().AsTime()
			s.Created = &t
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b servingServer) int { return strings.Compare(a.Server, b.Server) })
	return out
}

// serverName is how a server names itself to its learners: the address
// its gRPC API listens on, with the host's name for an unspecified IP.
func serverName(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsUnspecified() {
		if name, err := os.Hostname(); err == nil {
			return net.JoinHostPort(name, port)
		}
	}
	return addr.String()
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

// response is loop name's series as ModelService.GetLiveRewards answers
// it: the buckets that start at or after since; false for a loop without
// one (or a nil lr).
func (lr *liveRewards) response(name string, since time.Time) (*eventsv1.GetLiveRewardsResponse, bool) {
	live := lr.get(name)
	if live == nil {
		return nil, false
	}
	out := &eventsv1.GetLiveRewardsResponse{BucketSeconds: live.Bucket().Seconds(), Buckets: []*eventsv1.LiveRewardBucket{}}
	for _, p := range live.Points() {
		if !p.Start.Before(since) {
			out.Buckets = append(out.Buckets, &eventsv1.LiveRewardBucket{Start: timestamppb.New(p.Start), Events: p.Events,
				Reward: p.Reward, Explored: p.Explored, Baseline: liveEstimateProto(p.Baseline), Random: liveEstimateProto(p.Random)})
		}
	}
	return out, true
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

func liveEstimateProto(e evaluate.LiveEstimate) *eventsv1.LiveEstimate {
	out := &eventsv1.LiveEstimate{Value: e.Value}
	if e.Interval != nil {
		out.Interval = &eventsv1.LiveInterval{Lower: e.Interval.Lower, Upper: e.Interval.Upper}
	}
	return out
}

// rewardSeriesOf is the dashboard's form of a GetLiveRewards answer.
func rewardSeriesOf(resp *eventsv1.GetLiveRewardsResponse) *rewardSeries {
	s := &rewardSeries{BucketSeconds: resp.GetBucketSeconds(), Points: make([]evaluate.LivePoint, 0, len(resp.GetBuckets()))}
	for _, b := range resp.GetBuckets() {
		s.Points = append(s.Points, evaluate.LivePoint{Start: b.GetStart().AsTime(), Events: b.GetEvents(), Reward: b.GetReward(),
			Explored: b.GetExplored(), Baseline: liveEstimateOf(b.GetBaseline()), Random: liveEstimateOf(b.GetRandom())})
	}
	return s
}

func liveEstimateOf(e *eventsv1.LiveEstimate) evaluate.LiveEstimate {
	out := evaluate.LiveEstimate{Value: e.GetValue()}
	if iv := e.GetInterval(); iv != nil {
		out.Interval = &evaluate.Interval{Lower: iv.GetLower(), Upper: iv.GetUpper()}
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(v) // the client went away if this fails
}

// dashboardURL is where a's dashboard is, to print at start. (Not from
// a.http.TLSConfig: serving sets it, for HTTP/2, with or without TLS.)
func (a *api) dashboardURL() string {
	return a.scheme + "://" + a.httpLis.Addr().String() + "/"
}
