package app

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/loop"
)

// perLoop calls start for every loop the registry holds but skip (the
// process's own loop, started with the process), when it appears, and the
// stop start returned when it is deleted; at the end of ctx it stops them
// all.
func perLoop(ctx context.Context, reg *loop.Registry, skip string, start func(ctx context.Context, name string) (stop func())) error {
	running := map[string]func(){}
	defer func() {
		for _, stop := range running {
			stop()
		}
	}()
	for {
		ch := reg.Changed()
		present := map[string]bool{}
		for _, c := range reg.Loops() {
			present[c.Loop] = true
			if _, ok := running[c.Loop]; !ok && c.Loop != skip {
				running[c.Loop] = start(ctx, c.Loop)
			}
		}
		for name, stop := range running {
			if !present[name] {
				stop()
				delete(running, name)
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// learnerHost starts the learners of the loops other than the process's
// own, as they are created: each keeps its checkpoint in
// <data-dir>/learner/<loop>, reads personalizer.joined for its loop's
// lines, publishes to its own store, served by svc, and has its metrics
// labelled with its loop.
type learnerHost struct {
	tmpl    learner.Config // the process's learner configuration
	dataDir string
	open    learner.Open
	svc     *learner.Service
	metrics prometheus.Registerer
	configs *configTopic
	log     *slog.Logger
	rewards *liveRewards
	// also, when set, gives what runs beside each learner until it
	// stops (dev: the server watching the loop's models), having
	// registered its metrics with metrics.
	also func(name string, store *learner.Store, metrics *loopRegisterer) func(context.Context) error
}

// start runs loop name's learner until the returned stop.
func (h *learnerHost) start(ctx context.Context, name string) (stop func()) {
	cfg := h.tmpl
	cfg.Loop, cfg.Dir, cfg.Learned = name, filepath.Join(h.dataDir, "learner", name), nil
	cfg.Observe = h.rewards.observer(name)
	store := learner.NewStore()
	l, err := learner.New(cfg, h.log.With("loop", name), store, time.Now)
	if err != nil {
		h.rewards.remove(name)
		h.log.Error("loop not learned: its learner did not start", "loop", name, "err", err)
		return func() {}
	}
	h.svc.Add(name, store, l)
	metrics := forLoop(h.metrics, name)
	registerLearner(metrics, l, store)
	registerConfig(metrics, h.configs, name)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := l.Run(ctx, h.open); err != nil {
			h.log.Error("loop learner stopped", "loop", name, "err", err)
		}
	})
	if h.also != nil {
		run := h.also(name, store, metrics)
		wg.Go(func() { run(ctx) })
	}
	h.log.Info("loop learner started", "loop", name)
	return func() {
		cancel()
		wg.Wait()
		h.svc.Remove(name)
		h.rewards.remove(name)
		metrics.unregister()
	}
}

// learnerModule is the learning part of a process (dev, or the learner
// role): the learner of the process's own loop, resumed from its
// checkpoint at once; the learners of the other loops of the configuration
// topic, started and stopped with them; and the ModelService serving
// their versions and taking their resets and imports.
type learnerModule struct {
	learner *learner.Learner // the process's own loop's
	store   *learner.Store
	svc     *learner.Service // every loop's learner's versions and model commands
	host    *learnerHost
	loop    string
	rewards *liveRewards // every loop's reward over time, for the dashboard
}

// newLearnerModule makes the process's own loop's learner from cfg
// (checkpoint in <dataDir>/learner/<loop>), following configs.
func newLearnerModule(cfg learner.Config, dataDir string, brokers []string, configs *configTopic, log *slog.Logger) (*learnerModule, error) {
	cfg.Configs, cfg.OffsetsAt = configs.reg, joinedOffsetsAt(brokers)
	m := &learnerModule{store: learner.NewStore(), loop: cfg.Loop, rewards: newLiveRewards()}
	cfg.Observe = m.rewards.observer(cfg.Loop)
	var err error
	if m.learner, err = learner.New(cfg, log, m.store, time.Now); err != nil {
		return nil, err
	}
	m.svc = learner.NewService(cfg.Loop, m.store, m.learner)
	m.svc.ServeRewards(m.rewards.response)
	open := func(ctx context.Context, start map[int]int64) (eventlog.Reader, error) {
		return kafkalog.NewTopicReader(ctx, brokers, eventlog.JoinedTopic, start)
	}
	m.host = &learnerHost{tmpl: cfg, dataDir: dataDir, open: open, svc: m.svc, configs: configs, log: log, rewards: m.rewards}
	return m, nil
}

// serve registers the learners' metrics with reg (the other loops' as
// they come) and returns what runs them, in the learners' stage: the own
// loop's learner, its checkpoint health in health, and the other loops'.
func (m *learnerModule) serve(reg *prometheus.Registry, a *api) []func(context.Context) error {
	m.host.metrics = reg
	own := forLoop(reg, m.loop)
	registerLearner(own, m.learner, m.store)
	registerConfig(own, m.host.configs, m.loop)
	return []func(context.Context) error{
		func(ctx context.Context) error { return m.learner.Run(ctx, m.host.open) },
		checkpointHealth(m.learner, a.health),
		func(ctx context.Context) error { return perLoop(ctx, m.host.configs.reg, m.loop, m.host.start) },
	}
}
