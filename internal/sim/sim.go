// Package sim simulates users of a decision service: contexts whose best
// action depends on who the user is and when they come, a hidden logistic
// reward model, and rewards sent back for every ranked event. It measures
// how much reward the service collects as it learns.
package sim

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Config configures a simulation.
type Config struct {
	Events      int     // events to run
	Seed        uint64  // seeds users and the hidden reward model
	Window      int     // events per reported window; 0 means Events/10
	Concurrency int     // parallel users; 0 means 1
	Rate        float64 // events per second over all users; 0 means as fast as possible
	// Slots makes each event a multi-slot rank of that many slots (a
	// carousel: MultiSlotRank and MultiSlotReward); 0 is single-slot.
	Slots int
}

// Result summarises a simulation.
type Result struct {
	Events            int     `json:"events"`
	RewardFirstWindow float64 `json:"reward_first_window"`
	RewardLastWindow  float64 `json:"reward_last_window"`
	// RandomPolicyReward and BestPolicyReward are the expected rewards of
	// choosing uniformly at random and of always choosing the best action,
	// over the same users. With slots, rewards are per slot: an event's
	// summed over its slots, divided by their number; the best policy
	// fills the slots with the best actions in order.
	RandomPolicyReward float64 `json:"random_policy_reward"`
	BestPolicyReward   float64 `json:"best_policy_reward"`
}

var (
	segments = []string{"student", "worker", "retired", "teen"}
	times    = []string{"morning", "afternoon", "evening", "night"}
	devices  = []string{"mobile", "desktop"}
	topics   = []string{"news", "sports", "music", "movies", "tech", "food", "travel", "games"}
)

// world is the hidden reward model.
type world struct {
	bias     float64
	segTopic [][]float64 // segment x topic
	timTopic [][]float64 // time of day x topic
	devLen   []float64   // device x article length
	actions  []*personalizerv1.Action
	lengths  []float64
}

// attention is how likely a user looks at each slot of a carousel: a
// click in slot k is attention[k] times the chance of a click at all.
var attention = []float64{1, 0.7, 0.5, 0.35, 0.25, 0.2, 0.15, 0.1}

func newWorld(r *rand.Rand) *world {
	w := &world{bias: -1.5}
	grid := func(n int, scale float64) [][]float64 {
		g := make([][]float64, n)
		for i := range g {
			g[i] = make([]float64, len(topics))
			for j := range g[i] {
				g[i][j] = scale * r.NormFloat64()
			}
		}
		return g
	}
	w.segTopic, w.timTopic = grid(len(segments), 1.5), grid(len(times), 0.8)
	w.devLen = []float64{-1, 1} // mobile users prefer short articles
	for i, t := range topics {
		length := float64(i%4) / 3
		w.lengths = append(w.lengths, length)
		w.actions = append(w.actions, &personalizerv1.Action{
			Id: "article-" + t,
			Features: []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{
				{Name: "topic", Value: &personalizerv1.Feature_StringValue{StringValue: t}},
				{Name: "length", Value: &personalizerv1.Feature_NumberValue{NumberValue: length}},
			}}},
		})
	}
	return w
}

// user is one simulated visit.
type user struct{ seg, tim, dev int }

func (w *world) user(r *rand.Rand) user {
	return user{r.IntN(len(segments)), r.IntN(len(times)), r.IntN(len(devices))}
}

// clickProb is the hidden probability that u clicks action a.
func (w *world) clickProb(u user, a int) float64 {
	z := w.bias + w.segTopic[u.seg][a] + w.timTopic[u.tim][a] + w.devLen[u.dev]*(w.lengths[a]-0.5)
	return 1 / (1 + math.Exp(-z))
}

func (w *world) request(u user) *personalizerv1.RankRequest {
	str := func(name, v string) *personalizerv1.Feature {
		return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_StringValue{StringValue: v}}
	}
	return &personalizerv1.RankRequest{
		ContextFeatures: []*personalizerv1.Namespace{
			{Name: "User", Features: []*personalizerv1.Feature{str("segment", segments[u.seg]), str("device", devices[u.dev])}},
			{Name: "Time", Features: []*personalizerv1.Feature{str("timeOfDay", times[u.tim])}},
		},
		Actions: w.actions,
	}
}

// Run drives client with cfg.Events simulated users and reports the reward
// of every window to progress as it goes.
func Run(ctx context.Context, client personalizerv1.PersonalizerServiceClient, cfg Config, progress io.Writer) (Result, error) {
	if cfg.Events <= 0 {
		return Result{}, fmt.Errorf("events must be positive, got %d", cfg.Events)
	}
	if cfg.Window <= 0 {
		cfg.Window = max(cfg.Events/10, 1)
	}
	if cfg.Slots < 0 || cfg.Slots > len(attention) {
		return Result{}, fmt.Errorf("slots must be 0 to %d, got %d", len(attention), cfg.Slots)
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	r := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	w := newWorld(r)
	users := make([]user, cfg.Events)
	var res Result
	for i := range users {
		users[i] = w.user(r)
		best, random := w.expected(users[i], cfg.Slots)
		res.BestPolicyReward += best / float64(cfg.Events)
		res.RandomPolicyReward += random / float64(cfg.Events)
	}

	// Events are numbered in the order they are handed out; rewards are
	// tallied per window of that order.
	var (
		mu      sync.Mutex
		next    int
		rewards = make([]float64, cfg.Events)
		done    = make([]bool, cfg.Events)
		flushed int // windows reported
		start   = time.Now()
	)
	report := func() {
		for flushed*cfg.Window < cfg.Events {
			lo, hi := flushed*cfg.Window, min((flushed+1)*cfg.Window, cfg.Events)
			sum := 0.0
			for i := lo; i < hi; i++ {
				if !done[i] {
					return
				}
				sum += rewards[i]
			}
			fmt.Fprintf(progress, "events %6d-%-6d  average reward %.3f\n", lo+1, hi, sum/float64(hi-lo))
			flushed++
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	for range cfg.Concurrency {
		ur := rand.New(rand.NewPCG(cfg.Seed, r.Uint64())) // this user's clicks
		g.Go(func() error {
			for {
				mu.Lock()
				i := next
				if i == cfg.Events {
					mu.Unlock()
					return nil
				}
				next++
				mu.Unlock()
				if cfg.Rate > 0 {
					at := start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(time.Until(at)):
					}
				}
				visit := w.visit
				if cfg.Slots > 0 {
					visit = func(ctx context.Context, client personalizerv1.PersonalizerServiceClient, u user, r *rand.Rand) (float64, error) {
						return w.visitSlots(ctx, client, u, r, cfg.Slots)
					}
				}
				reward, err := visit(ctx, client, users[i], ur)
				if err != nil {
					return fmt.Errorf("event %d: %w", i, err)
				}
				mu.Lock()
				rewards[i], done[i] = reward, true
				report()
				mu.Unlock()
			}
		})
	}
	if err := g.Wait(); err != nil {
		return Result{}, err
	}
	res.Events = cfg.Events
	res.RewardFirstWindow = mean(rewards[:cfg.Window])
	res.RewardLastWindow = mean(rewards[cfg.Events-min(cfg.Window, cfg.Events):])
	return res, nil
}

// visit ranks for u, draws the click from the hidden model and rewards it.
func (w *world) visit(ctx context.Context, client personalizerv1.PersonalizerServiceClient, u user, r *rand.Rand) (float64, error) {
	resp, err := client.Rank(ctx, w.request(u))
	if err != nil {
		return 0, fmt.Errorf("rank: %w", err)
	}
	a := -1
	for i, act := range w.actions {
		if act.GetId() == resp.GetRewardActionId() {
			a = i
		}
	}
	if a < 0 {
		return 0, fmt.Errorf("rank chose unknown action %q", resp.GetRewardActionId())
	}
	reward := 0.0
	if r.Float64() < w.clickProb(u, a) {
		reward = 1
	}
	if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: resp.GetEventId(), Value: float32(reward)}); err != nil {
		return 0, fmt.Errorf("reward: %w", err)
	}
	return reward, nil
}

// expected returns u's expected reward (per slot, with slots) under the
// best policy and under a uniformly random one.
func (w *world) expected(u user, slots int) (best, random float64) {
	ps := make([]float64, len(topics))
	sum := 0.0
	for a := range topics {
		ps[a] = w.clickProb(u, a)
		sum += ps[a]
	}
	if slots == 0 {
		return slices.Max(ps), sum / float64(len(ps))
	}
	// Random without replacement: each slot's action is uniform over all.
	slices.Sort(ps)
	slices.Reverse(ps)
	for k := range slots {
		best += attention[k] * ps[k]
		random += attention[k] * sum / float64(len(ps))
	}
	return best / float64(slots), random / float64(slots)
}

// visitSlots ranks a carousel of slots for u, draws each slot's click and
// rewards every slot; it returns the reward per slot.
func (w *world) visitSlots(ctx context.Context, client personalizerv1.PersonalizerServiceClient, u user, r *rand.Rand, slots int) (float64, error) {
	single := w.request(u)
	req := &personalizerv1.MultiSlotRankRequest{ContextFeatures: single.GetContextFeatures(), Actions: single.GetActions()}
	for k := range slots {
		req.Slots = append(req.Slots, &personalizerv1.Slot{
			Id:             fmt.Sprintf("slot-%d", k+1),
			BaselineAction: w.actions[k].GetId(),
			Features: []*personalizerv1.Namespace{{Name: "Slot", Features: []*personalizerv1.Feature{
				{Name: "position", Value: &personalizerv1.Feature_StringValue{StringValue: fmt.Sprint(k + 1)}},
			}}},
		})
	}
	resp, err := client.MultiSlotRank(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("multi-slot rank: %w", err)
	}
	rewards := &personalizerv1.MultiSlotRewardRequest{EventId: resp.GetEventId()}
	total := 0.0
	seen := map[int]bool{}
	for k, s := range resp.GetSlots() {
		a := slices.IndexFunc(w.actions, func(x *personalizerv1.Action) bool { return x.GetId() == s.GetRewardActionId() })
		if a < 0 || seen[a] || s.GetId() != req.Slots[k].GetId() {
			return 0, fmt.Errorf("multi-slot rank filled slot %q with %q: unknown, or taken twice", s.GetId(), s.GetRewardActionId())
		}
		seen[a] = true
		reward := 0.0
		if r.Float64() < attention[k]*w.clickProb(u, a) {
			reward = 1
		}
		total += reward
		rewards.Rewards = append(rewards.Rewards, &personalizerv1.SlotReward{SlotId: s.GetId(), Value: float32(reward)})
	}
	if len(seen) != slots {
		return 0, fmt.Errorf("multi-slot rank filled %d of %d slots", len(seen), slots)
	}
	if _, err := client.MultiSlotReward(ctx, rewards); err != nil {
		return 0, fmt.Errorf("multi-slot reward: %w", err)
	}
	return total / float64(slots), nil
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
