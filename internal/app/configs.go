package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/loop"
)

// configTopic keeps a registry of loop configurations current from the
// compacted topic personalizer.config, and writes changes to it. The
// registry starts with the configurations made from flags (version 0),
// which any version in the topic replaces.
type configTopic struct {
	brokers []string
	w       *kafkalog.Writer
	reg     *loop.Registry
	log     *slog.Logger
}

// follow applies the topic to the registry until ctx ends, closing ready
// once it has read what the topic held when it started.
func (c *configTopic) follow(ctx context.Context, ready chan<- struct{}) error {
	return kafkalog.FollowCompacted(ctx, c.brokers, eventlog.ConfigTopic, c.log, func(key, value []byte) {
		if value == nil {
			c.reg.Delete(string(key))
			c.log.Info("loop deleted", "loop", string(key))
			return
		}
		cfg, err := loop.Unmarshal(key, value)
		if err != nil { // a record no writer of ours makes: skip it, never stop
			c.log.Warn("configuration record skipped", "err", err)
			return
		}
		if c.reg.Set(cfg) {
			c.log.Info("configuration applied", "loop", cfg.Loop, "version", cfg.Version)
		}
	}, func() { close(ready) })
}

// readBack bounds how long a change waits to be read back from the topic.
const readBack = 30 * time.Second

// Put writes cfg and returns once this process's registry holds it (or a
// later version): every role follows the same topic, so a change an
// admin call acknowledged is one every role applies and a restart keeps.
func (c *configTopic) Put(ctx context.Context, cfg *loop.Config) error {
	value, err := loop.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := c.w.Write(ctx, eventlog.Record{Topic: eventlog.ConfigTopic, Key: []byte(cfg.Loop), Value: value}); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	return c.await(ctx, cfg.Loop, func(cur *loop.Config) bool { return cur != nil && cur.Version >= cfg.Version })
}

// Delete writes loop's tombstone and returns once the registry dropped it.
func (c *configTopic) Delete(ctx context.Context, name string) error {
	if err := c.w.Write(ctx, eventlog.Record{Topic: eventlog.ConfigTopic, Key: []byte(name)}); err != nil {
		return fmt.Errorf("delete configuration: %w", err)
	}
	return c.await(ctx, name, func(cur *loop.Config) bool { return cur == nil })
}

func (c *configTopic) await(ctx context.Context, name string, done func(*loop.Config) bool) error {
	ctx, cancel := context.WithTimeout(ctx, readBack)
	defer cancel()
	cur := c.reg.Get(name)
	for !done(cur) {
		var err error
		if cur, err = c.reg.Next(ctx, name, cur); err != nil {
			return fmt.Errorf("configuration of loop %s written but not read back yet: %w", name, err)
		}
	}
	return nil
}

// configWait bounds how long a role waits at start for the configuration
// topic to be read; past it the role starts with its flags' configuration
// (version 0) and applies the topic's when the broker answers.
const configWait = 10 * time.Second

// followConfigs creates the configuration topic (and the evaluations
// topic) if need be, starts
// following it in stage st of v, and waits until what it held is read
// (at most configWait). seed is the configuration from flags.
func followConfigs(ctx context.Context, v *supervisor, st *stage, brokers []string, w *kafkalog.Writer, seed *loop.Config, log *slog.Logger) *configTopic {
	c := &configTopic{brokers: brokers, w: w, reg: loop.NewRegistry(seed), log: log}
	setup, cancel := context.WithTimeout(ctx, configWait)
	defer cancel()
	// The evaluations topic too: the writer the serving part writes
	// evaluations with learns the topics at its first write, and one
	// created later would be unknown to it for a while.
	if err := kafkalog.EnsureTopics(setup, brokers, kafkalog.ConfigTopicSpec(), evaluationsTopicSpec()); err != nil {
		log.Warn("configuration topics not created; following them anyway", "err", err)
	}
	ready := make(chan struct{})
	v.start(st, ctx, func(ctx context.Context) error { return c.follow(ctx, ready) })
	select {
	case <-ready:
	case <-setup.Done():
		log.Warn("configuration topic not read yet: starting with the configuration from flags", "loop", seed.Loop, "wait", configWait)
	}
	return c
}

// flagConfig is loop name's configuration from a role's flags: version 0,
// which any version in the configuration topic replaces. A role leaves
// out (nil, 0, "") what it has no flags for, which keeps Personalizer's
// defaults. Its exploration is the policy's --epsilon.
func flagConfig(name, policy string, export time.Duration, rules *joiner.Rules) *loop.Config {
	c := loop.Default(name)
	if p, err := bandit.ParsePolicy(policy); policy != "" && err == nil { // the roles validated it
		c.UsePolicy(p)
	}
	if export > 0 {
		c.Service.ModelExportFrequency = loop.Duration(export)
	}
	if rules != nil {
		c.Service.RewardWaitTime = loop.Duration(rules.RewardWait)
		c.Service.DefaultReward = rules.DefaultReward
		c.Service.RewardAggregation = string(rules.Aggregation)
		c.Service.LearningMode = loop.ModeName(rules.LearningMode)
	}
	return c
}

// joinedOffsetsAt finds where personalizer.joined reaches a time: where a
// learner's retrain of a new policy starts.
func joinedOffsetsAt(brokers []string) func(context.Context, time.Time) (map[int]int64, error) {
	return func(ctx context.Context, t time.Time) (map[int]int64, error) {
		return kafkalog.OffsetsAt(ctx, brokers, eventlog.JoinedTopic, t)
	}
}
