package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/loop"
)

// TestConfigKill9 changes a loop's service configuration over REST, one
// PUT after another, while the server and the learner, each its own OS
// process, are killed with SIGKILL and restarted on the same flags: the
// server twice, each time just after a PUT was sent (its change may or
// may not have reached the topic), the learner once. Every PUT carries its
// own explorationPercentage, which names it. Afterwards:
//
//   - personalizer.config holds versions 1..V in order, each an attempted
//     PUT's, in the order sent; every acknowledged PUT is there, and at
//     most one unacknowledged one per server kill (the one in flight);
//   - the last record is the last acknowledged PUT;
//   - the server and the learner both report personalizer_config_version
//     V, and GET /configurations/service answers the exploration of V.
//
// The embedded broker compacts the topic once an hour
// (log.cleaner.backoff.ms), so within the test it holds every record.
func TestConfigKill9(t *testing.T) {
	t.Parallel()
	// A bound for failures, not a wait.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	field := func(p *process, prefix, name string) string {
		_, v, _ := strings.Cut(p.waitLine(ctx, t, prefix), name+" ")
		v, _, _ = strings.Cut(v, ",")
		return v
	}

	broker := startProcess(t, "broker", "--broker-addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn")
	brokers := field(broker, "personalizer broker:", "Kafka")

	// Fixed addresses, so that a restarted role has the flags of the one
	// killed: the server's --learner-addr and the test's URLs stay valid.
	learnerGRPC, learnerHTTP, serverHTTP := freeAddr(t), freeAddr(t), freeAddr(t)
	learnerArgs := []string{"learner", "--kafka-brokers", brokers, "--grpc-addr", learnerGRPC, "--http-addr", learnerHTTP,
		"--data-dir", dir, "--log-level", "warn"}
	serverArgs := []string{"server", "--kafka-brokers", brokers, "--learner-addr", learnerGRPC,
		"--grpc-addr", freeAddr(t), "--http-addr", serverHTTP, "--log-level", "warn"}
	lp := startProcess(t, learnerArgs...)
	lp.waitLine(ctx, t, "personalizer learner:")
	sp := startProcess(t, serverArgs...)
	sp.waitLine(ctx, t, "personalizer server:")

	put := newConfigPutter("http://" + serverHTTP + "/personalizer/v1.0/configurations/service")
	stop := make(chan struct{})
	putDone := make(chan error, 1)
	go func() { putDone <- put.run(ctx, stop) }()

	const between = 10 // acknowledged PUTs between kills
	inFlight := map[float64]bool{}
	// killServer kills the server a fraction of a typical PUT's time after
	// the next PUT is sent: at 0 the server has barely read it, at 0.5 it
	// is likely writing it to the topic or waiting to read it back.
	killServer := func(fraction float64) {
		put.waitAcked(ctx, t, put.ackedCount()+between)
		e := put.nextWritten(ctx, t)
		time.Sleep(time.Duration(fraction * float64(put.medianLatency()))) // where the kill falls, not a wait for a state
		sp.kill(t)
		inFlight[e] = true
		sp = startProcess(t, serverArgs...)
		sp.waitLine(ctx, t, "personalizer server:")
	}
	const serverKills = 2
	killServer(0)
	put.waitAcked(ctx, t, put.ackedCount()+between)
	lp.kill(t)
	lp = startProcess(t, learnerArgs...)
	lp.waitLine(ctx, t, "personalizer learner:")
	killServer(0.5)
	put.waitAcked(ctx, t, put.ackedCount()+between)
	close(stop)
	if err := <-putDone; err != nil {
		t.Fatal(err)
	}

	sent, acked := put.results()
	last := acked[len(acked)-1]
	if sent[len(sent)-1] != last {
		t.Fatalf("the last PUT (exploration %v) was not acknowledged; the last acknowledged was %v", sent[len(sent)-1], last)
	}

	// The topic: versions 1..V, in the order the PUTs were sent.
	h := &harness{t: t, ctx: ctx, brokers: []string{brokers}}
	recs := h.readTopic(eventlog.ConfigTopic)[0]
	isAcked := map[float64]bool{}
	for _, e := range acked {
		isAcked[e] = true
	}
	stored := map[float64]uint64{}
	var unacked []float64 // stored, not acknowledged
	next := 0             // index into sent: the topic follows the order of sending
	for i, rec := range recs {
		c, err := loop.Unmarshal(rec.Key, rec.Value)
		if err != nil {
			t.Fatalf("record %d of %s: %v", i, eventlog.ConfigTopic, err)
		}
		e := c.Service.ExplorationPercentage
		if c.Version != uint64(i+1) {
			t.Errorf("record %d has version %d, want %d", i, c.Version, i+1)
		}
		j := slices.Index(sent[next:], e)
		if j < 0 {
			t.Errorf("version %d has exploration %v: not sent, or out of order", c.Version, e)
			continue
		}
		next += j + 1
		stored[e] = c.Version
		if !isAcked[e] {
			unacked = append(unacked, e)
		}
	}
	// PUTs go one at a time, so a server kill leaves at most one PUT
	// stored without its answer: the one in flight then (the one the kill
	// was timed against, or the next if that one was answered first).
	if len(unacked) > serverKills {
		t.Errorf("%d versions are stored without their PUT acknowledged (%v), more than the %d server kills", len(unacked), unacked, serverKills)
	}
	for _, e := range acked {
		if _, ok := stored[e]; !ok {
			t.Errorf("the PUT of exploration %v was acknowledged but is not in %s", e, eventlog.ConfigTopic)
		}
	}
	for e := range inFlight {
		v, landed := stored[e]
		t.Logf("PUT in flight at a server kill (exploration %v): acknowledged %v, stored %v (version %d)", e, isAcked[e], landed, v)
	}
	want := uint64(len(recs))
	if stored[last] != want {
		t.Fatalf("the last acknowledged PUT (exploration %v) is version %d, but the topic ends at version %d", last, stored[last], want)
	}
	t.Logf("%d PUTs sent, %d acknowledged, %d stored; last acknowledged version %d", len(sent), len(acked), len(recs), want)

	// Every role converges on V and the API answers V's configuration.
	roles := map[string]string{"server": serverHTTP, "learner": learnerHTTP}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for name, addr := range roles {
		for {
			got := scrape(t, addr)[`personalizer_config_version{loop="default"}`]
			if got == float64(want) {
				break
			}
			if got > float64(want) {
				t.Fatalf("%s reports configuration version %v, beyond the topic's last, %d", name, got, want)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				t.Fatalf("%s reports configuration version %v, want %d: %v", name, got, want, ctx.Err())
			}
		}
	}
	resp, err := http.Get(put.url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var svc loop.Service
	if err := json.NewDecoder(resp.Body).Decode(&svc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", put.url, resp.Status, err)
	}
	if svc.ExplorationPercentage != last {
		t.Errorf("GET /configurations/service: exploration %v, want %v (version %d)", svc.ExplorationPercentage, last, want)
	}
	sp.stop(t)
	lp.stop(t)
	broker.stop(t)
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// configPutter PUTs service configurations one after another, each with
// its own explorationPercentage, and records which were sent and which
// acknowledged.
type configPutter struct {
	url     string
	written chan float64 // a PUT's request fully sent; dropped if nobody waits

	mu      sync.Mutex
	sent    []float64
	acked   []float64
	latency []time.Duration // of the acknowledged PUTs
	changed chan struct{}   // closed and replaced on every acknowledgement
}

func newConfigPutter(url string) *configPutter {
	return &configPutter{url: url, written: make(chan float64), changed: make(chan struct{})}
}

// maxPuts bounds the PUTs of one run: the explorations i/maxPuts stay in [0, 1].
const maxPuts = 10000

// run PUTs until stop is closed. A PUT that fails to connect or loses its
// connection (a killed server) is not acknowledged; the next one carries
// the next exploration. Any answer other than 200 is an error.
func (p *configPutter) run(ctx context.Context, stop <-chan struct{}) error {
	client := &http.Client{Timeout: time.Minute}
	for i := 1; i <= maxPuts; i++ {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		e := float64(i) / maxPuts
		body, err := json.Marshal(map[string]any{
			"rewardWaitTime": "PT10M", "defaultReward": 0, "rewardAggregation": "earliest",
			"explorationPercentage": e, "modelExportFrequency": "PT5M", "logRetentionDays": loop.DefaultLogRetentionDays,
			"learningMode": "Online", "logMirrorEnabled": false, "isAutoOptimizationEnabled": false,
			"autoOptimizationFrequency": "P28D",
		})
		if err != nil {
			return err
		}
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
			select {
			case p.written <- e:
			default:
			}
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPut, p.url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		p.mu.Lock()
		p.sent = append(p.sent, e)
		p.mu.Unlock()
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The server is down or was killed mid-call: pause before
			// trying again (pacing, not synchronisation).
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("PUT exploration %v: %s: %s", e, resp.Status, answer)
		}
		var got loop.Service
		if err := json.Unmarshal(answer, &got); err != nil || got.ExplorationPercentage != e {
			return fmt.Errorf("PUT exploration %v answered %s (%v)", e, answer, err)
		}
		p.mu.Lock()
		p.acked = append(p.acked, e)
		p.latency = append(p.latency, time.Since(start))
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	return fmt.Errorf("%d PUTs and still running", maxPuts)
}

func (p *configPutter) ackedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

func (p *configPutter) results() (sent, acked []float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sent), slices.Clone(p.acked)
}

// medianLatency returns the median time of the acknowledged PUTs.
func (p *configPutter) medianLatency() time.Duration {
	p.mu.Lock()
	l := slices.Clone(p.latency)
	p.mu.Unlock()
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	return l[len(l)/2]
}

// waitAcked waits until n PUTs are acknowledged.
func (p *configPutter) waitAcked(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	for {
		p.mu.Lock()
		got, changed := len(p.acked), p.changed
		p.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("%d PUTs acknowledged, want %d: %v", got, n, ctx.Err())
		}
	}
}

// nextWritten waits until the next PUT's request is sent and returns its
// exploration: killing the server then catches that PUT in flight.
func (p *configPutter) nextWritten(ctx context.Context, t *testing.T) float64 {
	t.Helper()
	select {
	case e := <-p.written:
		return e
	case <-ctx.Done():
		t.Fatalf("no PUT sent: %v", ctx.Err())
		return 0
	}
}
