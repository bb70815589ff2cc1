package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/open-personalizer/personalizer/eventlog"
)

// GroupConfig configures a consumer group member.
type GroupConfig struct {
	Brokers []string
	GroupID string
	Topic   string
	// SessionTimeout is how long the coordinator keeps a silent member
	// before rebalancing without it. Default 10s; brokers reject values
	// under group.min.session.timeout.ms (6s by default).
	SessionTimeout time.Duration
	// RebalanceTimeout is how long the coordinator waits for every member
	// to rejoin during a rebalance, so how long claims may take to stop.
	// Default 10s.
	RebalanceTimeout time.Duration
	// HeartbeatInterval is how often a member checks in, which is also
	// how soon it learns that a rebalance began. Default 1s.
	HeartbeatInterval time.Duration
}

// Default values of [GroupConfig].
const (
	DefaultSessionTimeout    = 10 * time.Second
	DefaultRebalanceTimeout  = 10 * time.Second
	DefaultHeartbeatInterval = 1 * time.Second
)

// joinBackoff is how long kafka-go waits before it rejoins after a failed
// join or sync; its default of 5s would dominate recovery in tests.
const joinBackoff = time.Second

// Group is one member of a consumer group reading one topic. Offsets move
// only when a claim commits them.
type Group struct {
	cfg GroupConfig
	log *slog.Logger
}

// NewGroup returns a group member; it joins when Consume runs.
func NewGroup(cfg GroupConfig, log *slog.Logger) *Group {
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if cfg.RebalanceTimeout <= 0 {
		cfg.RebalanceTimeout = DefaultRebalanceTimeout
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	return &Group{cfg: cfg, log: log}
}

// Consume joins the group and, for every generation, runs fn once per
// partition assigned to this member, each in its own goroutine, with a
// [eventlog.Claim] that fetches from the group's committed offset (the
// earliest offset when none was committed). When the generation ends the
// claims' contexts end; Consume waits for every fn to return, then joins the
// next generation; an fn that returns nil early keeps its partition idle until
// then. Consume returns ctx's error once ctx ends, or the first error an fn
// returns while its claim is still live. Join failures are logged and
// retried.
func (g *Group) Consume(ctx context.Context, fn eventlog.ClaimFunc) error {
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                g.cfg.GroupID,
		Brokers:           g.cfg.Brokers,
		Topics:            []string{g.cfg.Topic},
		SessionTimeout:    g.cfg.SessionTimeout,
		RebalanceTimeout:  g.cfg.RebalanceTimeout,
		HeartbeatInterval: g.cfg.HeartbeatInterval,
		JoinGroupBackoff:  joinBackoff,
		StartOffset:       kafka.FirstOffset,
	})
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", g.cfg.GroupID, err)
	}
	// runCtx ends when ctx ends or a claim fails. Either way the group
	// must be closed before any claim returns: kafka-go starts joining
	// the next generation as soon as the claims of the current one are
	// gone, and only checks for Close after that join completes, which
	// would make this member rejoin (rebalancing everyone) just to leave.
	// Closing first makes kafka-go end the generation itself, wait for the
	// claims, and leave the group.
	runCtx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	stop := context.AfterFunc(runCtx, func() { cg.Close() })
	defer stop()
	// Offsets are committed and read back through a Client rather than
	// the Generation, whose CommitOffsets cannot carry metadata. The
	// transport sends group requests to the group's coordinator.
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(g.cfg.Brokers...), Transport: tr}

	for runCtx.Err() == nil {
		gen, err := cg.Next(runCtx)
		if runCtx.Err() != nil {
			break
		}
		if err != nil {
			g.log.Warn("consumer group join failed, retrying", "group", g.cfg.GroupID, "err", err)
			continue
		}
		g.log.Debug("consumer group generation", "group", g.cfg.GroupID, "generation", gen.ID,
			"member", gen.MemberID, "partitions", len(gen.Assignments[g.cfg.Topic]))
		g.runGeneration(runCtx, gen, client, fn, fail)
	}
	cg.Close()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return context.Cause(runCtx)
}

// runGeneration runs one claim per assigned partition and returns when all
// of them returned, which happens when the generation ends.
func (g *Group) runGeneration(ctx context.Context, gen *kafka.Generation, client *kafka.Client, fn eventlog.ClaimFunc, fail context.CancelCauseFunc) {
	var wg sync.WaitGroup
	for _, a := range gen.Assignments[g.cfg.Topic] {
		wg.Add(1)
		// gen.Start makes kafka-go wait for this goroutine before it
		// rejoins, so the partition cannot move to another member (with
		// the offset this claim has not committed yet) while it runs.
		gen.Start(func(genCtx context.Context) {
			defer wg.Done()
			g.runClaim(ctx, genCtx, &claim{client: client, gen: gen, brokers: g.cfg.Brokers, topic: g.cfg.Topic, partition: a.ID}, fn, fail)
		})
	}
	wg.Wait()
}

func (g *Group) runClaim(ctx, genCtx context.Context, c *claim, fn eventlog.ClaimFunc, fail context.CancelCauseFunc) {
	// The claim lives exactly as long as the generation: it keeps ctx's
	// values but not its cancellation, which reaches it through Close
	// ending the generation (see Consume).
	claimCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(genCtx, cancel)
	defer stop()
	c.lost = cancel

	if err := g.serveClaim(claimCtx, c, fn); err != nil && claimCtx.Err() == nil {
		fail(fmt.Errorf("claim %s/%d: %w", g.cfg.Topic, c.partition, err))
	}
	// Returning from a gen.Start function ends the generation for every
	// claim, so an fn that finished early, or failed, waits here for the
	// generation to end (a failure ends it through fail and Close).
	<-claimCtx.Done()
}

// serveClaim runs fn on the claim's partition with a reader at the
// committed offset.
func (g *Group) serveClaim(ctx context.Context, c *claim, fn eventlog.ClaimFunc) error {
	if err := g.fetchCommitted(ctx, c); err != nil {
		return err
	}
	start := c.start
	if start < 0 {
		start = kafka.FirstOffset
	}
	r, err := newPartitionReader(g.cfg.Brokers, g.cfg.Topic, c.partition, start, fetchQueueCapacity)
	if err != nil {
		return err
	}
	defer r.Close()
	c.r = r
	return fn(ctx, c)
}

// fetchCommitted reads the claim's committed offset and metadata, retrying
// until it succeeds or ctx ends: the generation's assignment carries the
// offset but not the metadata, and a claim must not start without what its
// previous owner left for it.
func (g *Group) fetchCommitted(ctx context.Context, c *claim) error {
	backoff := 50 * time.Millisecond
	for {
		err := c.fetchCommitted(ctx, g.cfg.GroupID)
		if err == nil || ctx.Err() != nil {
			return err
		}
		g.log.Warn("reading committed offset failed, retrying", "group", g.cfg.GroupID, "partition", c.partition, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// claim is one partition of one generation. Fetch and Commit may be called
// from different goroutines.
type claim struct {
	client    *kafka.Client
	gen       *kafka.Generation
	brokers   []string
	topic     string
	partition int
	start     int64  // committed offset, -1 if none
	metadata  string // committed with start
	r         *kafka.Reader
	lost      context.CancelFunc // ends the claim's context
}

func (c *claim) Partition() int { return c.partition }

func (c *claim) Start() (int64, string) { return c.start, c.metadata }

func (c *claim) fetchCommitted(ctx context.Context, group string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{c.topic: {c.partition}}})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		return fmt.Errorf("committed offset of %s/%d: %w", c.topic, c.partition, err)
	}
	for _, p := range resp.Topics[c.topic] {
		if p.Partition != c.partition {
			continue
		}
		if p.Error != nil {
			return fmt.Errorf("committed offset of %s/%d: %w", c.topic, c.partition, p.Error)
		}
		c.start, c.metadata = p.CommittedOffset, p.Metadata
		if c.start < 0 {
			c.start, c.metadata = -1, ""
		}
		return nil
	}
	return fmt.Errorf("committed offset of %s/%d: partition missing from the answer", c.topic, c.partition)
}

func (c *claim) Fetch(ctx context.Context) (eventlog.Record, error) {
	m, err := c.r.FetchMessage(ctx)
	if err != nil {
		return eventlog.Record{}, fmt.Errorf("fetch %s/%d: %w", c.topic, c.partition, err)
	}
	return toRecord(m), nil
}

// Reread implements [eventlog.Rereader]: a reader of the claim's
// partition from offset, or from the first record kept if retention
// deleted offset. Close it when done.
func (c *claim) Reread(_ context.Context, offset int64) (eventlog.Reader, error) {
	r, err := newPartitionReader(c.brokers, c.topic, c.partition, offset, rereadQueueCapacity)
	if err != nil {
		return nil, err
	}
	return &partitionReader{r: r}, nil
}

// partitionReader is a kafka-go reader of one partition as an
// [eventlog.Reader].
type partitionReader struct{ r *kafka.Reader }

func (p *partitionReader) Fetch(ctx context.Context) (eventlog.Record, error) {
	m, err := p.r.FetchMessage(ctx)
	if err != nil {
		return eventlog.Record{}, fmt.Errorf("read %s/%d again: %w", p.r.Config().Topic, p.r.Config().Partition, err)
	}
	return toRecord(m), nil
}

func (p *partitionReader) Close() error { return p.r.Close() }

// Commit stores next and metadata for this partition under this
// generation. The broker refuses a commit from a generation the group has
// left behind, so a member that lost the partition cannot move the new
// owner's offset.
func (c *claim) Commit(ctx context.Context, next int64, metadata string) error {
	resp, err := c.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID:      c.gen.GroupID,
		GenerationID: int(c.gen.ID),
		MemberID:     c.gen.MemberID,
		Topics:       map[string][]kafka.OffsetCommit{c.topic: {{Partition: c.partition, Offset: next, Metadata: metadata}}},
	})
	if err == nil {
		err = fmt.Errorf("partition missing from the answer")
		for _, p := range resp.Topics[c.topic] {
			if p.Partition == c.partition {
				err = p.Error
			}
		}
	}
	if err == nil {
		return nil
	}
	if generationLost(err) {
		// The group moved on before this member's heartbeat noticed.
		// Ending the claim's context makes the error a context end for
		// Consume rather than a failure, and returning from the claim
		// then ends kafka-go's generation so the member rejoins.
		c.lost()
	}
	return fmt.Errorf("commit %s/%d at %d: %w", c.topic, c.partition, next, err)
}

// generationLost reports whether a commit failed because this member's
// generation is no longer the group's.
func generationLost(err error) bool {
	return errors.Is(err, kafka.IllegalGeneration) || errors.Is(err, kafka.RebalanceInProgress) ||
		errors.Is(err, kafka.UnknownMemberId) || errors.Is(err, kafka.FencedInstanceID)
}
