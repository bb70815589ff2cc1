package app

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/server"
)

// TestPageClient checks that bench's page makes the dashboard page's
// requests against a dev: its files, the first loop's calls, then each
// poll's, with ?since= once it has seen a reward bucket.
func TestPageClient(t *testing.T) {
	t.Parallel()
	d, _ := startTestDev(t, testConfig(t, t.TempDir()))
	defer d.close()
	var mu sync.Mutex
	var got []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, strings.TrimSpace(r.URL.RequestURI()+" "+r.Header.Get(server.LoopHeader)))
		mu.Unlock()
		d.api.http.Handler.ServeHTTP(w, r)
	}))
	defer ts.Close()
	p := newPageClient(strings.TrimPrefix(ts.URL, "http://"), "")
	if err := p.open(t.Context()); err != nil {
		t.Fatal(err)
	}
	p.newest = time.Date(2026, 5, 1, 12, 30, 5, 0, time.UTC) // as if a poll had seen a bucket
	for range 2 {
		if err := p.poll(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"/"}
	for _, f := range []string{"vendor/uplot/uPlot.min.css", "style.css", "vendor/uplot/uPlot.iife.min.js", "app.js", "views/start.js",
		"views/rewards.js", "views/traffic.js", "views/model.js", "views/capacity.js", "views/evaluations.js", "views/importance.js",
		"views/autoopt.js", "views/settings.js", "views/loops.js", "views/audit.js", "boot.js"} {
		want = append(want, "/ui/"+f)
	}
	const api, since = "/personalizer/v1.0", "?since=2026-05-01T12%3A15%3A05Z"
	want = append(want, api+"/dashboard", api+"/loops") // before a loop is chosen
	for _, r := range []string{"/model/history", "/configurations/service", "/evaluations", "/evaluations",
		"/configurations/service", "/configurations/policy", "/logs/properties", "/loops",
		"/dashboard", "/model/history", // the first poll, and the model view's list of its version
		"/dashboard" + since, "/dashboard" + since, "/configurations/service"} { // the third poll reads the configuration
		want = append(want, api+r+" default")
	}
	if !slices.Equal(got, want) {
		t.Errorf("requests\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p.requests != len(want) {
		t.Errorf("counted %d requests, want %d", p.requests, len(want))
	}
}
