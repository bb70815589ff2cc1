package app

// Kafka-down tests: the embedded broker of a dev loop stops under a steady
// load of Rank and Reward calls and comes back on the same address and
// data directory. Rank answers throughout; events wait in the server's
// bounded buffer; what the buffer could not take is counted exactly, and
// everything it took is joined and learned exactly once.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// traffic is a steady stream of Rank calls, each followed by a Reward of 1
// except for every third event (which gets the default reward, 0), from a
// few goroutines that each make one call per tick.
type traffic struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu            sync.Mutex
	changed       chan struct{}   // closed and replaced on every call
	ranked        map[string]bool // key (loop/eventId) -> Rank returned OK
	rewarded      map[string]bool // Reward returned OK
	rewardRefused map[string]bool // Reward returned ResourceExhausted
	errs          []error         // any other outcome
}

func startTraffic(ctx context.Context, client personalizerv1.PersonalizerServiceClient, workers int, every time.Duration) *traffic {
	l := &traffic{stop: make(chan struct{}), changed: make(chan struct{}),
		ranked: map[string]bool{}, rewarded: map[string]bool{}, rewardRefused: map[string]bool{}}
	for w := range workers {
		l.wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				l.call(ctx, client, fmt.Sprintf("w%d-%d", w, n), n%3 != 2)
			}
		})
	}
	return l
}

func (l *traffic) call(ctx context.Context, client personalizerv1.PersonalizerServiceClient, id string, reward bool) {
	key := "default/" + id
	_, err := client.Rank(ctx, rankRequest(id))
	var rerr error
	if err == nil && reward {
		_, rerr = client.Reward(ctx, &personalizerv1.RewardRequest{EventId: id, Value: 1})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil:
		l.errs = append(l.errs, fmt.Errorf("rank %s: %w", id, err))
	case !reward:
		l.ranked[key] = true
	case rerr == nil:
		l.ranked[key], l.rewarded[key] = true, true
	case status.Code(rerr) == codes.ResourceExhausted:
		l.ranked[key], l.rewardRefused[key] = true, true
	default:
		l.ranked[key] = true
		l.errs = append(l.errs, fmt.Errorf("reward %s: %w", id, rerr))
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// wait blocks until cond holds for the traffic's results.
func (l *traffic) wait(t *testing.T, ctx context.Context, what string, cond func(*traffic) bool) {
	t.Helper()
	for {
		l.mu.Lock()
		ok, changed := cond(l), l.changed
		l.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-changed:
		}
	}
}

// ranks returns how many Rank calls have answered.
func (l *traffic) ranks() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ranked)
}

// end stops the traffic and reports any unexpected error.
func (l *traffic) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	for _, err := range l.errs {
		t.Error(err)
	}
}

// outageDev is a dev loop for the outage tests: its log goes to logs, and
// learned records every event the learner learns with its cost.
type outageDev struct {
	*dev
	client  personalizerv1.PersonalizerServiceClient
	cfg     devConfig
	logs    *syncBuffer
	mu      sync.Mutex
	learned map[string][]float32
}

func startOutageDev(t *testing.T, extra ...string) *outageDev {
	t.Helper()
	o := &outageDev{logs: new(syncBuffer), learned: map[string][]float32{}}
	// A record stamped before the broker left may arrive after records
	// stamped since it came back (the joiner's ticks): the slack covers
	// the outage and the time the writers take to reconnect.
	o.cfg = testConfig(t, t.TempDir(), append([]string{"--join-slack", "30s"}, extra...)...)
	o.cfg.Learner.Learned = func(key []byte, cost float32) {
		o.mu.Lock()
		o.learned[string(key)] = append(o.learned[string(key)], cost)
		o.mu.Unlock()
	}
	var err error
	o.dev, err = startDev(context.Background(), o.cfg, slog.New(slog.NewJSONHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := o.close(); err != nil {
			t.Error(err)
		}
	})
	o.client = personalizerv1.NewPersonalizerServiceClient(dial(t, o.grpcAddr()))
	return o
}

// restartBroker starts the broker again on its address and data directory.
func (o *outageDev) restartBroker(t *testing.T, addr string) {
	t.Helper()
	cfg := o.cfg.Broker
	cfg.Addr = addr
	b, err := kafkalog.StartBroker(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	o.broker = b
}

// checkLearned checks that the learner learned exactly the events of want,
// each once, with the cost given.
func (o *outageDev) checkLearned(t *testing.T, want map[string]float32) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.learned) != len(want) {
		t.Errorf("learned %d events, want %d", len(o.learned), len(want))
	}
	for key, cost := range want {
		if got := o.learned[key]; len(got) != 1 || got[0] != cost {
			t.Errorf("%s learned with costs %v, want once with %v", key, got, cost)
		}
	}
	for key := range o.learned {
		if _, ok := want[key]; !ok {
			t.Errorf("%s learned, want not", key)
		}
	}
}

// TestKafkaOutage stops the broker for 10 s under load: every Rank answers,
// the events wait in the buffer, and once the broker is back every event
// whose Rank answered is joined and learned exactly once, with its reward.
func TestKafkaOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	o := startOutageDev(t)
	lo := startTraffic(ctx, o.client, 4, 10*time.Millisecond)
	lo.wait(t, ctx, "ranks before the outage", func(l *traffic) bool { return len(l.ranked) >= 200 })

	addr := o.broker.Addrs()[0]
	o.broker.Close()
	before := lo.ranks()
	select {
	case <-time.After(10 * time.Second): // the outage
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	during := lo.ranks() - before
	if st := o.pub.Stats(); during == 0 || st.Buffered == 0 || st.Refused != 0 {
		t.Fatalf("broker away: %d ranks answered, publisher %+v; want ranks answered and buffered, none refused", during, st)
	}
	o.restartBroker(t, addr)
	lo.wait(t, ctx, "ranks after the outage", func(l *traffic) bool { return len(l.ranked) >= before+during+200 })
	lo.end(t)

	events, rewards := len(lo.ranked), len(lo.rewarded)
	if len(lo.rewardRefused) != 0 {
		t.Fatalf("%d rewards refused with a buffer of %d", len(lo.rewardRefused), o.cfg.EventBuffer)
	}
	if err := o.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= int64(events) }); err != nil {
		t.Fatalf("waiting for %d events learned: %v (learner %+v, joiner %+v)", events, err, o.learner.Stats(), o.joiner.Counters())
	}
	if err := o.joiner.Wait(ctx, func(s joiner.Stats) bool { return s.Emitted >= int64(events) }); err != nil {
		t.Fatal(err)
	}
	want := map[string]float32{}
	for key := range lo.ranked {
		want[key] = 0
		if lo.rewarded[key] {
			want[key] = -1
		}
	}
	o.checkLearned(t, want)
	if st := o.learner.Stats(); st.Learned != int64(events) || st.Malformed != 0 {
		t.Errorf("learner %+v, want %d learned", st, events)
	}
	if c := o.joiner.Counters(); c.Emitted != int64(events) || c.DefaultRewards != int64(events-rewards) || c.Late != 0 || c.Dangling != 0 {
		t.Errorf("joiner %+v, want %d joined, %d with the default reward, none late or dangling", c, events, events-rewards)
	}
	// Every record the buffer took was written once it could be.
	if st := o.pub.Stats(); st.Written != int64(events+rewards) || st.Refused != 0 || st.Lost != 0 || st.Buffered != 0 {
		t.Errorf("publisher %+v, want %d written", st, events+rewards)
	}
	t.Logf("%d events (%d during the outage), %d rewards", events, during, rewards)
}

// TestEventBufferOverflow fills a small buffer while the broker is away:
// Rank still answers, Reward answers ResourceExhausted, and the refused
// records are counted exactly, in the publisher and on /metrics, and
// logged in a summary, not one line each.
func TestEventBufferOverflow(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// A short backward window makes the rewards of refused ranks dangle
	// soon.
	o := startOutageDev(t, "--event-buffer", "50", "--backward-window", "1s")
	lo := startTraffic(ctx, o.client, 2, 5*time.Millisecond)
	lo.wait(t, ctx, "ranks before the outage", func(l *traffic) bool { return len(l.ranked) >= 50 })
	addr := o.broker.Addrs()[0]
	o.broker.Close()
	lo.wait(t, ctx, "refused rewards", func(l *traffic) bool { return len(l.rewardRefused) >= 20 })
	o.restartBroker(t, addr)
	after := lo.ranks() + 100
	lo.wait(t, ctx, "ranks after the outage", func(l *traffic) bool { return len(l.ranked) >= after })
	lo.end(t)

	// Rank answers whether or not its record was refused, so the refused
	// ranks are the refused records less the refused rewards; their
	// events are never learned, and their accepted rewards dangle.
	st := o.pub.Stats()
	rankRefused := int(st.Refused) - len(lo.rewardRefused)
	events := len(lo.ranked) - rankRefused
	if rankRefused <= 0 {
		t.Fatalf("publisher %+v, %d rewards refused: no rank refused", st, len(lo.rewardRefused))
	}
	if err := o.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= int64(events) }); err != nil {
		t.Fatalf("waiting for %d events learned: %v (learner %+v, joiner %+v)", events, err, o.learner.Stats(), o.joiner.Counters())
	}
	want := map[string]float32{}
	o.mu.Lock()
	for key := range lo.ranked {
		if len(o.learned[key]) == 0 {
			continue // its rank was refused
		}
		want[key] = 0
		if lo.rewarded[key] {
			want[key] = -1
		}
	}
	dangling := 0
	for key := range lo.rewarded {
		if len(o.learned[key]) == 0 {
			dangling++
		}
	}
	o.mu.Unlock()
	if err := o.joiner.Wait(ctx, func(s joiner.Stats) bool { return s.Emitted >= int64(events) && s.Dangling >= int64(dangling) }); err != nil {
		t.Fatalf("joiner %+v: %v", o.joiner.Counters(), err)
	}
	o.checkLearned(t, want)
	if len(want) != events {
		t.Errorf("%d events learned, want %d: %d ranks answered, %d records refused, %d of them rewards", len(want), events, len(lo.ranked), st.Refused, len(lo.rewardRefused))
	}
	if c := o.joiner.Counters(); c.Emitted != int64(events) || c.Dangling != int64(dangling) || c.Late != 0 {
		t.Errorf("joiner %+v, want %d joined, %d dangling, none late", c, events, dangling)
	}
	if st := o.pub.Stats(); st.Written != int64(events+len(lo.rewarded)) || st.Lost != 0 || st.Buffered != 0 {
		t.Errorf("publisher %+v, want %d written", st, events+len(lo.rewarded))
	}
	checkMetrics(t, scrape(t, o.api.httpLis.Addr().String()), map[string]float64{
		"personalizer_events_refused_total":   float64(st.Refused),
		"personalizer_events_buffer_capacity": 50,
	})
	warnings := strings.Count(o.logs.String(), "event buffer full")
	if warnings == 0 || warnings >= int(st.Refused) {
		t.Errorf("%d overflow warnings for %d refused records, want a few", warnings, st.Refused)
	}
	t.Logf("%d ranks answered, %d learned, %d ranks and %d rewards refused, %d rewards dangling, %d warnings",
		len(lo.ranked), events, rankRefused, len(lo.rewardRefused), dangling, warnings)
}
