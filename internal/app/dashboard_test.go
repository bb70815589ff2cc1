package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// The dashboard's browser tests drive a real headless Chromium (Debian's
// chromium package: make deps) with chromedp against a live dev fed by
// the simulator. Screenshots of the main views go to
// $DASHBOARD_SCREENSHOTS, by default bin/dashboard-screenshots at the
// repository's root (not committed).

// browser is a page in a headless Chromium, and the errors its console
// reported.
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
	shots  string
}

func newBrowser(t *testing.T, ctx context.Context) *browser {
	t.Helper()
	path, err := findChromium()
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox does not start
		chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: bctx, shots: screenshotDir(t)}
	chromedp.ListenTarget(bctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.APITypeError || ev.Type == runtime.APITypeWarning {
				for _, a := range ev.Args {
					msg += " " + string(a.Value) + a.Description
				}
			}
		case *runtime.EventExceptionThrown:
			msg = ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.LevelError {
				msg = ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	})
	if err := chromedp.Run(bctx, log.Enable()); err != nil {
		t.Fatalf("start Chromium %s: %v", path, err)
	}
	return b
}

// findChromium is Debian's chromium, or $CHROMIUM.
func findChromium() (string, error) {
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium: install Debian's chromium package (make deps) or set $CHROMIUM")
}

func screenshotDir(t *testing.T) string {
	dir := os.Getenv("DASHBOARD_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin", "dashboard-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// run runs actions, failing the test on an error.
func (b *browser) run(t *testing.T, actions ...chromedp.Action) {
	t.Helper()
	if err := chromedp.Run(b.ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// until waits, at most d, for the JavaScript expression cond to be true
// in the page: the page's own DOM is the condition, nothing is slept.
func (b *browser) until(t *testing.T, what, cond string, d time.Duration) {
	t.Helper()
	var ok bool
	if err := chromedp.Run(b.ctx, chromedp.Poll(cond, &ok, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(d))); err != nil {
		var page string
		chromedp.Run(b.ctx, chromedp.Evaluate(`document.getElementById("views") ? document.getElementById("views").innerText.slice(0, 3000) : document.body.innerText`, &page))
		t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, page)
	}
}

// text returns the text of the element sel.
func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	var s string
	b.run(t, chromedp.Text(sel, &s, chromedp.ByQuery))
	return s
}

// shoot writes a screenshot of the element sel to name.png.
func (b *browser) shoot(t *testing.T, sel, name string) {
	t.Helper()
	var png []byte
	b.run(t, chromedp.ScrollIntoView(sel, chromedp.ByQuery), chromedp.Screenshot(sel, &png, chromedp.ByQuery))
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// noErrors fails the test if the page's console reported errors, but for
// the failed calls the test made on purpose: Chromium reports every
// answer with an error status, as "... a status of 400 (Bad Request)".
func (b *browser) noErrors(t *testing.T, expected ...string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []string
next:
	for _, e := range b.errors {
		for _, x := range expected {
			if strings.Contains(e, "status of "+x) {
				continue next
			}
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		t.Errorf("the page's console reported %d errors:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

// restGet GETs a REST route of base for loop (empty: the default) with
// key (empty: none) into v, and returns the status.
func restGet(t *testing.T, base, route, key, loop string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/personalizer/v1.0"+route, nil)
	if key != "" {
		req.Header.Set(server.KeyHeader, key)
	}
	if loop != "" {
		req.Header.Set(server.LoopHeader, loop)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %s", route, err, body)
		}
	}
	return resp.StatusCode
}

// TestDashboard opens the dashboard of a dev without keys while the
// simulator feeds it: the page opens without a key and without console
// errors, the reward chart has points and rises, the model version
// advances live, an evaluation is created and its chart drawn and one of
// its policies applied, and a configuration change made on the page (and
// one the API refuses) is read back through REST.
func TestDashboard(t *testing.T) {
	// A bound for failures, not a wait.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d, client := startTestDev(t, testConfig(t, t.TempDir()))
	defer d.close()
	base := "http://" + d.api.httpLis.Addr().String()

	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() {
		_, err := sim.Run(simCtx, client, sim.Config{Events: 60000, Seed: 7, Concurrency: 4, Rate: 500}, io.Discard)
		simDone <- err
	}()
	stop := sync.OnceFunc(func() { stopSim(); <-simDone })
	defer stop()

	b := newBrowser(t, ctx)
	b.run(t, chromedp.Navigate(base+"/"))
	b.until(t, "the views", `!!document.querySelector("#rewards-chart") && document.getElementById("signin").hidden && /live/.test(document.getElementById("status").textContent)`, time.Minute)
	// The first load: the page, its files and the calls it made to show
	// the first numbers, as transferred (headers included).
	var load struct{ Files, Calls, Count int }
	b.run(t, chromedp.Evaluate(`(() => {
		const n = performance.getEntriesByType("navigation")[0], rs = performance.getEntriesByType("resource");
		const sum = es => es.reduce((a, e) => a + e.transferSize, 0);
		return { Files: n.transferSize + sum(rs.filter(e => !e.name.includes("/personalizer/"))),
			Calls: sum(rs.filter(e => e.name.includes("/personalizer/"))), Count: rs.length + 1 } })()`, &load))
	t.Logf("first load: %d bytes of files and %d bytes of API calls in %d requests", load.Files, load.Calls, load.Count)
	if load.Files == 0 || load.Files+load.Calls > 500_000 {
		t.Errorf("first load %d + %d bytes, want more than none and under 500 KB", load.Files, load.Calls)
	}

	b.until(t, "a rising reward chart", `(() => {
		const r = JSON.parse(document.getElementById("rewards-chart").dataset.rewards || "[]");
		return r.length >= 3 && Math.max(...r.slice(1)) > r[0] + 0.05 })()`, 3*time.Minute)
	var v0 int
	b.run(t, chromedp.Evaluate(`+document.getElementById("model-info").dataset.version`, &v0))
	b.until(t, "a newer model version", fmt.Sprintf(`+document.getElementById("model-info").dataset.version > %d`, v0), time.Minute)
	// The model view lists this server, the dev's one, as it serves.
	b.until(t, "this server in the servers' list", fmt.Sprintf(`(() => {
		const rows = document.querySelectorAll("#model-servers tr[data-server]");
		return rows.length == 1 && rows[0].dataset.server == %q && rows[0].hasAttribute("data-self") &&
			rows[0].dataset.version == document.getElementById("model-info").dataset.version && rows[0].dataset.version > 0 &&
			/ago/.test(rows[0].textContent) })()`, d.grpcAddr()), time.Minute)
	b.until(t, "traffic", `document.querySelectorAll("#traffic .u-over").length == 1 && /events joined/.test(document.getElementById("traffic-shares").textContent)`, time.Minute)
	for _, v := range []string{"rewards", "traffic", "model", "capacity"} {
		b.shoot(t, "#"+v, v)
	}

	// A configuration change made on the page is read back through REST;
	// one the API refuses shows the API's message.
	b.until(t, "the configuration form", `!!document.getElementById("svc-explorationPercentage")`, time.Minute)
	b.run(t, chromedp.SetValue("#svc-explorationPercentage", "0.35", chromedp.ByQuery), chromedp.Click("#service-save", chromedp.ByQuery))
	b.until(t, "the configuration saved", `document.getElementById("service-msg").textContent == "saved"`, time.Minute)
	var svc struct {
		ExplorationPercentage float64 `json:"explorationPercentage"`
	}
	if code := restGet(t, base, "/configurations/service", "", "", &svc); code != http.StatusOK || svc.ExplorationPercentage != 0.35 {
		t.Errorf("GET /configurations/service: %d, explorationPercentage %v, want 0.35", code, svc.ExplorationPercentage)
	}
	b.run(t, chromedp.SetValue("#svc-explorationPercentage", "2", chromedp.ByQuery), chromedp.Click("#service-save", chromedp.ByQuery))
	b.until(t, "the API's validation message", `document.getElementById("service-msg").className == "error"`, time.Minute)
	if msg := b.text(t, "#service-msg"); !strings.Contains(msg, "xploration") {
		t.Errorf("validation message %q, want the API's about the exploration percentage", msg)
	}
	b.shoot(t, "#settings", "settings")

	// An evaluation with a custom policy: created on the page, its chart
	// drawn, its custom policy applied.
	const args = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.05 --cb_type mtr -q ::"
	b.run(t, chromedp.SetValue("#eval-name", "browser", chromedp.ByQuery),
		chromedp.SetValue("#eval-policies", "faster | "+args, chromedp.ByQuery),
		chromedp.Click("#eval-create", chromedp.ByQuery))
	b.until(t, "the evaluation's chart", `(() => { const c = document.getElementById("eval-chart"); return !!c && +c.dataset.series == 4 && +c.dataset.points >= 1 })()`, 2*time.Minute)
	b.shoot(t, "#evaluations", "evaluations")
	b.run(t, chromedp.Click(`#eval-results button[data-policy="faster"]`, chromedp.ByQuery),
		chromedp.Click(`#eval-results .confirm button.danger`, chromedp.ByQuery))
	b.until(t, "the policy applied", `/applied/.test(document.getElementById("apply-msg").textContent)`, time.Minute)
	var pol struct {
		Name, Arguments string
	}
	if code := restGet(t, base, "/configurations/policy", "", "", &pol); code != http.StatusOK || pol.Name != "faster" || pol.Arguments != args {
		t.Errorf("GET /configurations/policy: %d, %+v, want faster: %s", code, pol, args)
	}

	// The model: exported through REST, imported on the page, exported
	// on the page, reset; then the logs deleted, once the simulator stops.
	stop()
	model := filepath.Join(t.TempDir(), "default.model")
	before := d.learner.Stats()
	if err := downloadModel(base, model); err != nil {
		t.Fatal(err)
	}
	b.run(t, chromedp.SetUploadFiles("#model-file", []string{model}, chromedp.ByQuery),
		chromedp.Click("#model-import", chromedp.ByQuery), chromedp.Click(`#settings .confirm button.danger`, chromedp.ByQuery))
	b.until(t, "the model imported", `document.getElementById("model-msg").textContent == "imported default.model"`, time.Minute)
	b.run(t, chromedp.Click("#model-export", chromedp.ByQuery))
	b.until(t, "the model exported", `document.getElementById("model-msg").textContent == "exported"`, time.Minute)
	b.run(t, chromedp.Click("#model-reset", chromedp.ByQuery), chromedp.Click(`#settings .confirm button.danger`, chromedp.ByQuery))
	b.until(t, "the model reset", `/model reset/.test(document.getElementById("model-msg").textContent)`, time.Minute)
	if st := d.learner.Stats(); st.Imports != before.Imports+1 || st.Resets != before.Resets+1 {
		t.Errorf("learner: %d imports, %d resets; want one more of each than %d and %d", st.Imports, st.Resets, before.Imports, before.Resets)
	}
	// Every rank joined, so that no joined line comes after the logs are
	// deleted.
	ranks, _ := d.srv.LoopCounts("default")
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= ranks.Ranks }); err != nil {
		t.Fatalf("waiting for %d joined events: %v (counters %+v)", ranks.Ranks, err, d.joiner.Counters())
	}
	b.run(t, chromedp.Click("#logs-delete", chromedp.ByQuery), chromedp.Click(`#settings .confirm button.danger`, chromedp.ByQuery))
	b.until(t, "the logs deleted", `document.getElementById("logs-msg").textContent == "logs deleted" && document.getElementById("logs-range").textContent == "No events stored."`, time.Minute)
	if code := restGet(t, base, "/logs/properties", "", "", nil); code != http.StatusNotFound {
		t.Errorf("GET /logs/properties after the page deleted them: %d, want 404", code)
	}
	// The refused configuration, and the logs properties after the logs
	// were deleted (404 LogsPropertiesNotFound, shown as "No events stored").
	b.noErrors(t, "400 (Bad Request)", "404 (Not Found) "+base+"/personalizer/v1.0/logs/properties")
}

// TestDashboardImportanceAutoopt opens the dashboard of a dev whose loop
// has simulated events: an evaluation with feature importance and policy
// search is refused with the API's message, one with feature importance
// alone is created on the page and draws a bar per featureScores row REST
// answers; the auto-optimization view says how to turn it on, and after
// a run (the schedule's clock and check, as in autoopt_test.go) shows the
// run with the outcome REST answers.
func TestDashboardImportanceAutoopt(t *testing.T) {
	// A bound for failures, not a wait.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := testConfig(t, t.TempDir(), "--events-partitions", "1")
	clock := &testClock{t: time.Now().UTC()}
	cfg.AutoClock = clock.now
	d, client := startTestDev(t, cfg)
	defer d.close()
	base := "http://" + d.api.httpLis.Addr().String()
	api := base + "/personalizer/v1.0"
	const events = 1000
	if _, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: 5, Concurrency: 4}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, ctx)
	b.run(t, chromedp.Navigate(base+"/"))
	b.until(t, "the auto-optimization view, off", `!!document.getElementById("autoopt-setting") && document.getElementById("autoopt-setting").dataset.enabled === "false" &&
		/turn it on with isAutoOptimizationEnabled/.test(document.getElementById("autoopt-next").textContent) &&
		/no run yet/.test(document.getElementById("autoopt-runs").textContent)`, time.Minute)
	b.shoot(t, "#autoopt", "autoopt-off")

	// Feature importance with policy search: the API's refusal.
	b.run(t, chromedp.SetValue("#eval-name", "importance", chromedp.ByQuery),
		chromedp.Click("#eval-importance", chromedp.ByQuery), chromedp.Click("#eval-search", chromedp.ByQuery),
		chromedp.Click("#eval-create", chromedp.ByQuery))
	b.until(t, "the API's refusal", `document.getElementById("eval-msg").className == "error"`, time.Minute)
	if msg := b.text(t, "#eval-msg"); !strings.Contains(msg, "InvalidEvaluationContract") || !strings.Contains(msg, "enableFeatureImportance") {
		t.Errorf("refusal %q, want the API's InvalidEvaluationContract about enableFeatureImportance", msg)
	}
	// Feature importance alone: a bar per featureScores row.
	b.run(t, chromedp.Click("#eval-search", chromedp.ByQuery), chromedp.Click("#eval-create", chromedp.ByQuery))
	b.until(t, "the importance bars", `document.querySelectorAll("#importance-bars .bar").length > 0`, 3*time.Minute)
	var list []server.Evaluation
	if code := restGet(t, base, "/evaluations", "", "", &list); code != http.StatusOK || len(list) != 1 || list[0].Status != server.EvaluationCompleted {
		t.Fatalf("GET /evaluations: %d %+v, want one completed", code, list)
	}
	var bars []struct {
		Name  string
		Score float64
	}
	b.run(t, chromedp.Evaluate(`[...document.querySelectorAll("#importance-bars tr[data-name]")].filter(r => r.querySelector(".bar")).map(r => ({ Name: r.dataset.name, Score: +r.dataset.score }))`, &bars))
	rows := list[0].FeatureScores
	if len(rows) == 0 || len(bars) != len(rows) {
		t.Fatalf("%d bars %+v, want one per featureScores row (%d): %+v", len(bars), bars, len(rows), rows)
	}
	for _, r := range rows {
		name := r.Namespace
		if r.FeatureName != "" {
			name = r.Namespace + "^" + r.FeatureName
		}
		if !slices.ContainsFunc(bars, func(b struct {
			Name  string
			Score float64
		}) bool {
			return b.Name == name && b.Score == r.Score
		}) {
			t.Errorf("no bar %s of score %v among %+v", name, r.Score, bars)
		}
	}
	b.shoot(t, "#importance", "importance")

	// Auto-optimization on from an hour on: no run yet, and when it is due.
	period := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	setAutoOptimization(t, api, true, period.Add(time.Hour))
	b.until(t, "the next run's time", `document.getElementById("autoopt-setting").dataset.enabled === "true" &&
		/Next run due/.test(document.getElementById("autoopt-next").textContent) && /no run yet/.test(document.getElementById("autoopt-runs").textContent)`, time.Minute)
	// An auto-optimization run of the period starting now.
	clock.set(period)
	setAutoOptimization(t, api, true, period)
	d.auto.check(ctx) // the period has run once this returns, here or on the optimizer's goroutine
	runs := autoRunsOf(t, api)
	if len(runs) != 1 {
		t.Fatalf("%d auto runs, want 1: %+v", len(runs), runs)
	}
	run := awaitFinished(t, ctx, d, runs[0].ID)
	if run.Status != server.EvaluationOptimalPolicyApplied && run.Status != server.EvaluationOnlinePolicyRetained {
		t.Fatalf("auto run %s %q", run.Status, run.Error)
	}
	var rest server.Evaluation
	if code := restGet(t, base, "/evaluations/"+run.ID, "", "", &rest); code != http.StatusOK || rest.Status != run.Status {
		t.Fatalf("GET the auto run: %d %s, want %s", code, rest.Status, run.Status)
	}
	b.until(t, "the run in the history", fmt.Sprintf(`(() => { const r = document.querySelector('#autoopt-runs tr[data-id="%s"]');
		return !!r && r.dataset.status == %q && document.getElementById("autoopt-setting").dataset.enabled === "true" &&
			/Next run due/.test(document.getElementById("autoopt-next").textContent) })()`, run.ID, rest.Status), time.Minute)
	b.shoot(t, "#autoopt", "autoopt")
	// The refused evaluation.
	b.noErrors(t, "400 (Bad Request)")
}

// downloadModel writes the model GET /model answers to file.
func downloadModel(base, file string) error {
	resp, err := http.Get(base + "/personalizer/v1.0/model")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /model: %s", resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

// TestDashboardKeys opens the dashboard of a dev that requires keys: it
// asks for one; a loop key sees its loop only, and the API refuses it the
// other loop whatever the page asks; an admin key sees and manages every
// loop.
func TestDashboardKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	loopKey, loopLine := server.NewKey("default", "")
	adminKey, adminLine := server.NewKey("*", "")
	keys, admins := filepath.Join(dir, "keys"), filepath.Join(dir, "admin-keys")
	if err := os.WriteFile(keys, []byte(loopLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(admins, []byte(adminLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := startTestDev(t, testConfig(t, filepath.Join(dir, "data"), "--api-keys", keys, "--admin-keys", admins))
	defer d.close()
	base := "http://" + d.api.httpLis.Addr().String()

	b := newBrowser(t, ctx)
	b.run(t, chromedp.Navigate(base+"/"))
	b.until(t, "the key form", `!document.getElementById("signin").hidden`, time.Minute)

	// The admin creates a second loop on the page.
	b.run(t, chromedp.SetValue("#key", adminKey, chromedp.ByQuery), chromedp.Click("#signin-open", chromedp.ByQuery))
	b.until(t, "the loops view", `!!document.getElementById("loops") && !document.getElementById("loops").hidden && /default/.test(document.getElementById("loops-table").textContent)`, time.Minute)
	b.run(t, chromedp.SetValue("#loop-name", "other", chromedp.ByQuery), chromedp.Click("#loop-create", chromedp.ByQuery))
	b.until(t, "the new loop in the list", `[...document.querySelectorAll("#loop option")].map(o => o.value).join() == "default,other"`, time.Minute)
	b.shoot(t, "#loops", "loops")

	// The loop key sees its own loop only, without the loops view.
	b.run(t, chromedp.Click("#signout", chromedp.ByQuery))
	b.until(t, "the key form again", `!document.getElementById("signin").hidden`, time.Minute)
	b.run(t, chromedp.SetValue("#key", loopKey, chromedp.ByQuery), chromedp.Click("#signin-open", chromedp.ByQuery))
	b.until(t, "the loop key's view", `document.getElementById("signin").hidden && document.getElementById("loops").hidden &&
		[...document.querySelectorAll("#loop option")].map(o => o.value).join() == "default" && /live/.test(document.getElementById("status").textContent)`, time.Minute)
	// The loop has no data yet: the page says what to do.
	b.until(t, "what to do next", `!document.getElementById("start").hidden && /personalizer simulate --loop default --api-key/.test(document.getElementById("start").textContent) && /curl/.test(document.getElementById("start").textContent)`, time.Minute)
	b.shoot(t, "#start", "start")
	// Whatever the page asks for, the API refuses the other loop.
	var status int
	b.run(t, chromedp.Evaluate(`D.state.loop = "other"; D.call("GET", "/dashboard").then(() => 200, e => e.status)`, &status,
		func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if status != http.StatusForbidden {
		t.Errorf("the loop key's dashboard call for loop other: %d, want 403", status)
	}
	if code := restGet(t, base, "/dashboard", loopKey, "other", nil); code != http.StatusForbidden {
		t.Errorf("GET /dashboard for loop other with the loop key: %d, want 403", code)
	}
	if code := restGet(t, base, "/loops", loopKey, "", nil); code != http.StatusForbidden {
		t.Errorf("GET /loops with the loop key: %d, want 403", code)
	}
	if code := restGet(t, base, "/dashboard", "", "", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /dashboard without a key: %d, want 401", code)
	}
	// The first call without a key, the other loop's, and the logs of a
	// loop without events (404 LogsPropertiesNotFound, which the page
	// shows as "No events stored").
	b.noErrors(t, "401 (Unauthorized)", "403 (Forbidden)", "404 (Not Found) "+base+"/personalizer/v1.0/logs/properties")
}

// restDo makes a REST call of base without a key and returns its status
// and body.
func restDo(t *testing.T, method, url, loop, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if loop != "" {
		req.Header.Set(server.LoopHeader, loop)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDashboardRoutes checks the dashboard's routes without a browser:
// the page and its files, the loops' REST routes and the data route's
// loop.
func TestDashboardRoutes(t *testing.T) {
	d, _ := startTestDev(t, testConfig(t, t.TempDir()))
	defer d.close()
	base := "http://" + d.api.httpLis.Addr().String()
	api := base + "/personalizer/v1.0"

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") || !strings.Contains(string(page), `src="ui/app.js"`) {
		t.Errorf("GET /: %d %v\n%s", resp.StatusCode, resp.Header, page)
	}
	for _, f := range []string{"/ui/app.js", "/ui/vendor/uplot/uPlot.iife.min.js", "/ui/vendor/uplot/LICENSE", "/ui/views/rewards.js"} {
		if code, _ := restDo(t, http.MethodGet, base+f, "", ""); code != http.StatusOK {
			t.Errorf("GET %s: %d", f, code)
		}
	}
	if code, _ := restDo(t, http.MethodGet, base+"/nope", "", ""); code != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", code)
	}

	steps := []struct {
		method, route, loop, body string
		code                      int
		want                      string // in the body
	}{
		{"POST", "/loops", "", `{"loop": "shop"}`, http.StatusCreated, `"loop":"shop","version":1`},
		{"POST", "/loops", "", `{"loop": "shop"}`, http.StatusConflict, `"code":"LoopAlreadyExists"`},
		{"POST", "/loops", "", `{"loop": "no/slash"}`, http.StatusBadRequest, `"code":"BadRequest"`},
		{"GET", "/loops", "", "", http.StatusOK, `"loop":"shop"`},
		{"GET", "/dashboard", "shop", "", http.StatusOK, `{"loop":"shop","admin":true,`},
		{"GET", "/dashboard", "", "", http.StatusOK, `{"loop":"default","admin":true,`},
		{"DELETE", "/loops/shop", "", "", http.StatusNoContent, ""},
		{"DELETE", "/loops/shop", "", "", http.StatusNotFound, `"code":"ResourceNotFound"`},
		{"GET", "/dashboard", "shop", "", http.StatusNotFound, `"code":"ResourceNotFound"`},
	}
	for _, s := range steps {
		code, body := restDo(t, s.method, api+s.route, s.loop, s.body)
		if code != s.code || !strings.Contains(body, s.want) {
			t.Errorf("%s %s (loop %q): %d %s, want %d with %s", s.method, s.route, s.loop, code, body, s.code, s.want)
		}
	}
}

// BenchmarkDashboardPoll is the server's cost of one of the page's polls,
// GET /personalizer/v1.0/dashboard through the process's whole HTTP
// handler (mux, key check, logging, metrics), with an hour of reward
// buckets: the first poll (every bucket), and the later ones (the last 15
// minutes, ?since=).
func BenchmarkDashboardPoll(b *testing.B) {
	d, _ := startTestDev(b, testConfig(b, b.TempDir()))
	defer d.close()
	live := d.rewards.get("default")
	var ev bandit.Event
	ev.AddAction()
	ev.AddAction()
	ev.SetLabel(0, -1, 0.9)
	now := time.Now()
	for i := range liveKeep {
		ts := []byte(now.Add(-time.Duration(i) * liveBucket).UTC().Format(time.RFC3339Nano))
		live.Add(&ev, []int{1, 2}, []float32{0.9, 0.1}, ts)
	}
	since := now.Add(-15 * time.Minute).UTC().Format(time.RFC3339)
	for _, bm := range []struct{ name, query string }{{"first", ""}, {"since", "?since=" + since}} {
		b.Run(bm.name, func(b *testing.B) {
			var bytes int
			for b.Loop() {
				rec := httptest.NewRecorder()
				d.api.http.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/personalizer/v1.0/dashboard"+bm.query, nil))
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code, rec.Body.String())
				}
				bytes = rec.Body.Len()
			}
			b.ReportMetric(float64(bytes), "bytes/poll")
		})
	}
}

// TestDashboardAudit looks up decisions on the page of a dev fed by the
// simulator: an event ranked with a known id shows the model version,
// the ranking and the probabilities Rank returned; an unknown id shows
// the API's 404 message; a rollback to that version, confirmed on the
// page, is published by the learner.
func TestDashboardAudit(t *testing.T) {
	// A bound for failures, not a wait.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, client := startTestDev(t, testConfig(t, t.TempDir()))
	defer d.close()
	base := "http://" + d.api.httpLis.Addr().String()
	if _, err := sim.Run(ctx, client, sim.Config{Events: 2000, Seed: 7, Concurrency: 4}, io.Discard); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, ctx)
	b.run(t, chromedp.Navigate(base+"/"))
	// The server serves a model: Rank answers with its version.
	b.until(t, "a model served", `!!document.getElementById("model-info") && +document.getElementById("model-info").dataset.version >= 1`, time.Minute)
	// Once the learner has learned every event, the model view's table
	// lists the versions GET /model/history lists.
	if err := d.learner.Wait(ctx, func(learner.Stats) bool { return d.store.Latest().GetInfo().GetExamples() >= 2000 }); err != nil {
		t.Fatal(err)
	}
	code, body := restCall(t, "GET", base+"/personalizer/v1.0/model/history", nil)
	var hist struct{ Versions []struct{ Version string } }
	if err := json.Unmarshal(body, &hist); code != http.StatusOK || err != nil || len(hist.Versions) < 2 {
		t.Fatalf("GET /model/history: %d %s", code, body)
	}
	var listed []string
	for _, v := range hist.Versions {
		listed = append(listed, v.Version)
	}
	b.until(t, "the kept versions", `[...document.querySelectorAll("#model-history tr[data-version]")].map(r => r.dataset.version).join(",") == "`+strings.Join(listed, ",")+`"`, time.Minute)
	num := func(v float64) *personalizerv1.Feature {
		return &personalizerv1.Feature{Name: "n", Value: &personalizerv1.Feature_NumberValue{NumberValue: v}}
	}
	eventID := "dash-audit-1"
	req := &personalizerv1.RankRequest{EventId: &eventID,
		ContextFeatures: []*personalizerv1.Namespace{{Name: "User", Features: []*personalizerv1.Feature{
			{Name: "segment", Value: &personalizerv1.Feature_StringValue{StringValue: "student"}}, num(0.5)}}},
		Actions: []*personalizerv1.Action{
			{Id: "a-news", Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{{Name: "topic", Value: &personalizerv1.Feature_StringValue{StringValue: "news"}}}}}},
			{Id: "a-sports", Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{{Name: "topic", Value: &personalizerv1.Feature_StringValue{StringValue: "sports"}}}}}},
			{Id: "a-music", Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{{Name: "topic", Value: &personalizerv1.Feature_StringValue{StringValue: "music"}}}}}},
		}}
	resp, err := client.Rank(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetModelVersion() == "" {
		t.Fatalf("Rank answered without a model version: %v", resp)
	}

	b.run(t, chromedp.SetValue("#audit-event", "dash-audit-1", chromedp.ByQuery), chromedp.Click("#audit-lookup", chromedp.ByQuery))
	b.until(t, "the decision", `!!document.getElementById("audit-ranking")`, time.Minute)
	var shown struct {
		Version string
		Ranking []struct{ ID, P string }
	}
	b.run(t, chromedp.Evaluate(`({ Version: document.getElementById("audit-info").dataset.version,
		Ranking: [...document.querySelectorAll("#audit-ranking tr[data-id]")].map(r => ({ ID: r.dataset.id, P: r.dataset.probability })) })`, &shown))
	if shown.Version != resp.GetModelVersion() {
		t.Errorf("model version shown %q, Rank's %q", shown.Version, resp.GetModelVersion())
	}
	if len(shown.Ranking) != len(resp.GetRanking()) {
		t.Fatalf("ranking shown %v, Rank's %v", shown.Ranking, resp.GetRanking())
	}
	for i, a := range resp.GetRanking() {
		p, err := strconv.ParseFloat(shown.Ranking[i].P, 32)
		if shown.Ranking[i].ID != a.GetId() || err != nil || float32(p) != a.GetProbability() {
			t.Errorf("ranking row %d shown %v, Rank's %s %v", i, shown.Ranking[i], a.GetId(), a.GetProbability())
		}
	}
	if txt := b.text(t, "#audit-request"); !strings.Contains(txt, "segment=student") || !strings.Contains(txt, "topic=sports") {
		t.Errorf("request shown %q, want its features", txt)
	}
	b.until(t, "the breakdown", `document.querySelectorAll("#audit-breakdown tr[data-id]").length == 3`, time.Second)
	b.shoot(t, "#audit", "audit")

	// An unknown event: the API's message.
	b.run(t, chromedp.SetValue("#audit-event", "no-such-event", chromedp.ByQuery), chromedp.Click("#audit-lookup", chromedp.ByQuery))
	b.until(t, "the 404 message", `/no rank of the event was found/.test(document.getElementById("audit-msg").textContent) && document.getElementById("audit-msg").className == "error" && !document.getElementById("audit-ranking")`, time.Minute)

	// A rollback to the version that served it, from its row of the kept
	// versions and confirmed on the page: the learner publishes that
	// model again as a new version, which the table lists.
	row := `#model-history tr[data-version="` + resp.GetModelVersion() + `"]`
	b.until(t, "the served version's row", `!!document.querySelector('`+row+`')`, time.Minute)
	b.run(t, chromedp.Click(row+" button", chromedp.ByQuery), chromedp.Click(`#model .confirm button.danger`, chromedp.ByQuery))
	b.until(t, "the rollback", `/serves version \d+'s model/.test(document.getElementById("rollback-msg").textContent)`, time.Minute)
	var next uint64
	msg := b.text(t, "#rollback-msg")
	_, err = fmt.Sscanf(msg, "version %d serves version "+resp.GetModelVersion()+"'s model", &next)
	// The learner may publish more versions since (the last joins).
	served, _ := strconv.ParseUint(resp.GetModelVersion(), 10, 64)
	if st := d.learner.Stats(); err != nil || st.Rollbacks != 1 || next <= served || next > st.Version {
		t.Errorf("after the rollback: %q (%v), %d rollbacks, latest version %d; want a version after %s and 1 rollback", msg, err, st.Rollbacks, st.Version, resp.GetModelVersion())
	}
	b.until(t, "the rollback's row", fmt.Sprintf(`(document.querySelector('#model-history tr[data-version="%d"] td:nth-child(4)') || {}).textContent == %q`, next, resp.GetModelVersion()), time.Minute)
	b.shoot(t, "#model", "model-rollback")
	b.noErrors(t, "404 (Not Found) "+base+"/personalizer/v1.0/events/no-such-event")
}

// TestDashboardServers checks the servers GET .../dashboard lists in dev:
// its own, as it serves, and one of another process watching the dev's
// learner, as its watch said.
func TestDashboardServers(t *testing.T) {
	t.Parallel()
	d, _ := startTestDev(t, testConfig(t, t.TempDir()))
	defer d.close()
	base := "http://" + d.api.httpLis.Addr().String()
	self := func(s dashboardStats) servingServer {
		out := servingServer{Server: d.grpcAddr(), Self: true}
		if s.Served != nil {
			out.Version, out.Created = s.Served.Version, &s.Served.Created
		}
		return out
	}
	check := func(what string, want func(dashboardStats) []servingServer) {
		t.Helper()
		var s dashboardStats
		if code := restGet(t, base, "/dashboard", "", "", &s); code != http.StatusOK {
			t.Fatalf("GET /dashboard: %d", code)
		}
		got, _ := json.Marshal(s.Servers)
		w, _ := json.Marshal(want(s))
		if string(got) != string(w) {
			t.Errorf("%s: servers %s, want %s", what, got, w)
		}
	}
	check("alone", func(s dashboardStats) []servingServer { return []servingServer{self(s)} })

	created := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	stream, err := eventsv1.NewModelServiceClient(dial(t, d.grpcAddr())).WatchModel(t.Context(),
		&eventsv1.WatchModelRequest{Loop: "default", Server: "other:50051", ServingVersion: 2, ServingCreated: timestamppb.New(created)})
	if err == nil {
		_, err = stream.Header() // sent once the watch is listed
	}
	if err != nil {
		t.Fatal(err)
	}
	check("with a server watching", func(s dashboardStats) []servingServer {
		return []servingServer{self(s), {Server: "other:50051", Version: 2, Created: &created}}
	})
}

// TestServerName checks how a server names itself to its learners.
func TestServerName(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50051}, "127.0.0.1:50051"},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 50051}, net.JoinHostPort(host, "50051")},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 7}, net.JoinHostPort(host, "7")},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 7}, "[fe80::1]:7"},
	} {
		if got := serverName(tt.addr); got != tt.want {
			t.Errorf("serverName(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}
