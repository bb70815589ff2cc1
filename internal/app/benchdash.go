package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/open-personalizer/personalizer/server"
)

// pagePoll is how long the dashboard page waits after one poll's answer
// before the next, and pageAPI where its REST calls go (POLL_MS and API
// in web/static/app.js).
const (
	pagePoll = 2 * time.Second
	pageAPI  = "/personalizer/v1.0"
)

// pageClient makes the requests the dashboard page makes, in the same
// order and at the same interval, without a browser (bench --call
// dashboard): it loads the page's files, opens the first loop (each
// view's first calls), then polls GET .../dashboard every 2 s after each
// answer, with ?since= as the reward view asks it, GET /model/history
// when the version changes (the model view) and GET
// /configurations/service every third poll (the auto-optimization view).
// It does not run an evaluation, so the evaluation views' 6 s refresh of
// a running one is not made.
type pageClient struct {
	base     string // http://host:port
	key      string
	http     *http.Client
	loop     string        // the page's loop: the first answer's
	every    time.Duration // between an answer and the next poll: pagePoll
	requests int           // made so far

	newest time.Time // the newest reward bucket's start
	listed int64     // the version whose kept versions were listed; -1: none
	polls  int
	edited string // the service configuration's lastConfigurationEditDate
}

func newPageClient(addr, key string) *pageClient {
	return &pageClient{base: "http://" + addr, key: key, http: &http.Client{Timeout: 30 * time.Second}, every: pagePoll, listed: -1}
}

// pageFiles are the files index.html loads.
var pageFiles = regexp.MustCompile(`(?:src|href)="(ui/[^"]+)"`)

// run opens the page and polls until ctx ends; an error of a call ends it.
func (p *pageClient) run(ctx context.Context) error {
	err := p.open(ctx)
	for err == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.every):
		}
		err = p.poll(ctx)
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// open loads the page and its files, then makes the calls of boot.js's
// start and of each view's loop(), and the first poll.
func (p *pageClient) open(ctx context.Context) error {
	index, err := p.get(ctx, "/", false)
	if err != nil {
		return err
	}
	for _, m := range pageFiles.FindAllSubmatch(index, -1) {
		if _, err := p.get(ctx, "/"+string(m[1]), false); err != nil {
			return err
		}
	}
	body, err := p.get(ctx, pageAPI+"/"+dashboardRoute, false)
	if err != nil {
		return err
	}
	var first dashboardStats
	if err := json.Unmarshal(body, &first); err != nil {
		return fmt.Errorf("GET /dashboard: %w", err)
	}
	routes := []string{"/model/history", "/configurations/service", "/evaluations", "/evaluations",
		"/configurations/service", "/configurations/policy", "/logs/properties"}
	if first.Admin {
		// The loop list, before a loop is chosen, and the Loops view.
		if _, err := p.get(ctx, pageAPI+"/loops", false); err != nil {
			return err
		}
		routes = append(routes, "/loops")
	}
	p.loop = first.Loop
	for i, r := range routes {
		body, err := p.get(ctx, pageAPI+r, true)
		if err != nil {
			return err
		}
		if i == 1 { // the auto-optimization view's, which it compares later ones with
			p.edited = editDate(body)
		}
	}
	return p.poll(ctx)
}

// poll makes one of the page's polls and what its answer leads the views
// to call.
func (p *pageClient) poll(ctx context.Context) error {
	route := pageAPI + "/" + dashboardRoute
	if !p.newest.IsZero() {
		route += "?since=" + url.QueryEscape(p.newest.Add(-15*time.Minute).UTC().Format(time.RFC3339))
	}
	body, err := p.get(ctx, route, true)
	if err != nil {
		return err
	}
	var s dashboardStats
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("GET /dashboard: %w", err)
	}
	if s.Rewards != nil && len(s.Rewards.Points) > 0 {
		if t := s.Rewards.Points[len(s.Rewards.Points)-1].Start; t.After(p.newest) {
			p.newest = t
		}
	}
	var latest int64
	switch {
	case s.Learner != nil:
		latest = int64(s.Learner.Version)
	case s.Served != nil:
		latest = int64(s.Served.Version)
	}
	if latest != p.listed {
		p.listed = latest
		if _, err := p.get(ctx, pageAPI+"/model/history", true); err != nil {
			return err
		}
	}
	if p.polls = (p.polls + 1) % 3; p.polls == 0 {
		body, err := p.get(ctx, pageAPI+"/configurations/service", true)
		if err != nil {
			return err
		}
		if edited := editDate(body); edited != p.edited {
			p.edited = edited
			if _, err := p.get(ctx, pageAPI+"/evaluations", true); err != nil {
				return err
			}
		}
	}
	return nil
}

// editDate is the lastConfigurationEditDate of a service configuration.
func editDate(body []byte) string {
	var svc struct{ LastConfigurationEditDate string }
	json.Unmarshal(body, &svc) // none: ""
	return svc.LastConfigurationEditDate
}

// get GETs path with the page's headers (the loop's with loop) and
// returns the body. An answer the page shows as the API's message (4xx
// but 401 and 403) is no error; others are.
func (p *pageClient) get(ctx context.Context, path string, loop bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		return nil, err
	}
	if p.key != "" {
		req.Header.Set(server.KeyHeader, p.key)
	}
	if loop && p.loop != "" {
		req.Header.Set(server.LoopHeader, p.loop)
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p.requests++
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if c := resp.StatusCode; c >= 500 || c == http.StatusUnauthorized || c == http.StatusForbidden {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// dashboardCost runs Rank at qps for d with the page closed and open
// (pageClient), alternating, pairs times each, and reports the server
// process pid's CPU in each run and the difference per pair as a share of
// the closed run's. Then, without Rank, it measures the server's CPU
// idle and with the page polling back to back for d each, and reports
// what the page's requests cost the server each and at the rate of the
// open runs, as a share of the closed runs' median.
func dashboardCost(ctx context.Context, stdout io.Writer, rank func(context.Context) error, concurrency int, d time.Duration, qps float64,
	pairs, pid int, page func() *pageClient) error {
	fmt.Fprintf(stdout, "dashboard cost: server pid %d, Rank at %.0f QPS, %d in flight, %d pairs of %v runs (page closed, then open), after a %v warm-up\n",
		pid, qps, concurrency, pairs, d, d)
	if _, err := measure(ctx, rank, concurrency, d, qps); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	// run is one run: the server's CPU per Rank and in cores over it.
	// The page's requests are added to openRequests.
	openRequests := 0
	run := func(name string, open bool) (perRank time.Duration, cores float64, err error) {
		load := loadAverage()
		cpu0, err := processCPU(pid)
		if err != nil {
			return 0, 0, err
		}
		start := time.Now()
		pageErr := make(chan error, 1)
		var p *pageClient
		pctx, stop := context.WithCancel(ctx)
		if open {
			p = page()
			go func() { pageErr <- p.run(pctx) }()
		}
		r, err := measure(ctx, rank, concurrency, d, qps)
		stop()
		if open {
			if perr := <-pageErr; perr != nil && err == nil {
				err = fmt.Errorf("page: %w", perr)
			}
		}
		if err != nil {
			return 0, 0, err
		}
		elapsed := time.Since(start)
		cpu1, err := processCPU(pid)
		if err != nil {
			return 0, 0, err
		}
		perRank, cores = (cpu1-cpu0)/time.Duration(len(r.lat)), (cpu1-cpu0).Seconds()/elapsed.Seconds()
		fmt.Fprintf(stdout, "%-12s load %s  server %.3f cores, %.1f µs/Rank  %s", name, load, cores, float64(perRank.Nanoseconds())/1000, r)
		if open {
			fmt.Fprintf(stdout, "  page: %d requests", p.requests)
			openRequests += p.requests
		}
		fmt.Fprintln(stdout)
		return perRank, cores, nil
	}
	// Each run makes the same ranks, so the difference of their CPU is
	// taken per Rank: a run the machine's load stretched past d still
	// did the same work.
	var diffs, closedCores []float64
	for i := range pairs {
		closed, cores, err := run(fmt.Sprintf("%d closed", i+1), false)
		if err != nil {
			return err
		}
		open, _, err := run(fmt.Sprintf("%d open", i+1), true)
		if err != nil {
			return err
		}
		diffs, closedCores = append(diffs, float64(open-closed)/float64(closed)), append(closedCores, cores)
	}
	fmt.Fprintf(stdout, "page open - closed, share of the closed run's server CPU per Rank: min %+.2f%%  median %+.2f%%  max %+.2f%%\n",
		100*slices.Min(diffs), 100*median(diffs), 100*slices.Max(diffs))

	// The page's own cost: the server idle, then the page alone polling
	// back to back.
	cpuOver := func(work func(ctx context.Context) error) (time.Duration, error) {
		cpu0, err := processCPU(pid)
		if err != nil {
			return 0, err
		}
		wctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		if err := work(wctx); err != nil {
			return 0, err
		}
		cpu1, err := processCPU(pid)
		return cpu1 - cpu0, err
	}
	idle, err := cpuOver(func(ctx context.Context) error { <-ctx.Done(); return nil })
	if err != nil {
		return err
	}
	p := page()
	p.every = 0
	busy, err := cpuOver(p.run)
	if err != nil {
		return fmt.Errorf("page: %w", err)
	}
	if p.requests == 0 {
		return errors.New("page: no request answered in the page-alone run")
	}
	each := (busy - idle) / time.Duration(p.requests)
	rate := float64(openRequests) / float64(pairs) / d.Seconds()
	perSecond := each.Seconds() * rate
	fmt.Fprintf(stdout, "page alone   load %s  server idle %.3f cores; %d page requests back to back in %v: %.0f µs of server CPU each (less idle)\n",
		loadAverage(), idle.Seconds()/d.Seconds(), p.requests, d, float64(each.Microseconds()))
	fmt.Fprintf(stdout, "page's cost at its rate in the open runs, %.2f requests/s: %.3f ms of server CPU per second, %.3f%% of the closed runs' median\n",
		rate, 1000*perSecond, 100*perSecond/median(closedCores))
	return nil
}

// median is the median of xs.
func median(xs []float64) float64 {
	xs = slices.Sorted(slices.Values(xs))
	return (xs[(len(xs)-1)/2] + xs[len(xs)/2]) / 2
}

// loadAverage is the machine's 1-minute load average, "?" off Linux.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
