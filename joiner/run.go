package joiner

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// Config configures a [Joiner].
type Config struct {
	Rules
	// TickInterval is how often the joiner writes a tick record into each
	// partition it owns, so that windows close when no traffic comes.
	TickInterval time.Duration
	// CommitInterval is the least time between two offset commits of a
	// partition.
	CommitInterval time.Duration
}

// RegisterFlags registers the joiner's flags with prefix p.
func (c *Config) RegisterFlags(fs *flag.FlagSet, p string) {
	fs.DurationVar(&c.RewardWait, p+"reward-wait", 10*time.Minute, "reward wait time: rewards count if they arrive within this long after the rank")
	fs.DurationVar(&c.Backward, p+"backward-window", 2*time.Minute, "how long before its rank a reward may arrive (reordering) and still count")
	fs.Var((*float32Value)(&c.DefaultReward), p+"default-reward", "reward of an event with no reward in its window")
	fs.StringVar(&c.Aggregation, p+"reward-aggregation", Earliest, "how several rewards combine: earliest or sum")
	fs.DurationVar(&c.TickInterval, p+"tick-interval", time.Second, "how often each owned partition gets a tick record, so idle windows close")
	fs.DurationVar(&c.CommitInterval, p+"commit-interval", time.Second, "least time between offset commits of a partition")
}

// float32Value is a flag.Value for a float32.
type float32Value float32

func (f *float32Value) String() string { return strconv.FormatFloat(float64(*f), 'g', -1, 32) }
func (f *float32Value) Set(s string) error {
	v, err := strconv.ParseFloat(s, 32)
	*f = float32Value(v)
	return err
}

// Validate reports settings that cannot work.
func (c *Config) Validate() error {
	if err := c.Rules.Validate(); err != nil {
		return err
	}
	if c.TickInterval <= 0 {
		return fmt.Errorf("tick interval must be positive, got %v", c.TickInterval)
	}
	return nil
}

// Source is a consumer group over personalizer.events.
type Source interface {
	Consume(ctx context.Context, fn eventlog.ClaimFunc) error
}

// Joiner joins the partitions it is given.
type Joiner struct {
	cfg   Config
	log   *slog.Logger
	src   Source
	out   eventlog.Writer // personalizer.joined
	ticks eventlog.Writer // personalizer.events
	now   func() time.Time

	emitted, learnable, undecodable atomic.Int64
}

// Counters are a [Joiner]'s totals over all partitions.
type Counters struct {
	Emitted     int64 // joined lines written and acknowledged
	Learnable   int64 // of them, not marked _skipLearn
	Undecodable int64 // records skipped because they did not decode
}

// New returns a joiner reading src and writing joined lines to out and
// tick records to ticks. now stamps ticks only; the join itself uses the
// records' times.
func New(cfg Config, log *slog.Logger, src Source, out, ticks eventlog.Writer, now func() time.Time) *Joiner {
	return &Joiner{cfg: cfg, log: log, src: src, out: out, ticks: ticks, now: now}
}

// Counters returns the joiner's totals.
func (j *Joiner) Counters() Counters {
	return Counters{Emitted: j.emitted.Load(), Learnable: j.learnable.Load(), Undecodable: j.undecodable.Load()}
}

// Run joins until ctx ends.
func (j *Joiner) Run(ctx context.Context) error {
	err := j.src.Consume(ctx, j.claim)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// claim joins one partition for one group generation. A fresh window
// replays from the committed offset, so emitting again what an earlier
// owner emitted but did not commit is expected; the learner drops repeats.
func (j *Joiner) claim(ctx context.Context, c eventlog.Claim) error {
	g, ctx := errgroup.WithContext(ctx)
	records := make(chan eventlog.Record, 1024)
	g.Go(func() error {
		for {
			rec, err := c.Fetch(ctx)
			if err != nil {
				return err
			}
			select {
			case records <- rec:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	g.Go(func() error { return j.tick(ctx, c.Partition()) })
	g.Go(func() error { return j.join(ctx, c, records) })
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// tick writes a tick record into partition p every TickInterval.
func (j *Joiner) tick(ctx context.Context, p int) error {
	t := time.NewTicker(j.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		err := j.ticks.Write(ctx, eventlog.Record{
			Topic:     eventlog.EventsTopic,
			Partition: p,
			Headers:   []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeTick)}},
			Time:      j.now(),
		})
		if err != nil && ctx.Err() == nil {
			j.log.Warn("tick write failed", "partition", p, "err", err)
		}
	}
}

// join owns the partition's window: it applies records, writes what they
// close, and commits.
func (j *Joiner) join(ctx context.Context, c eventlog.Claim, records <-chan eventlog.Record) error {
	w := NewWindow(j.cfg.Rules)
	var out []eventlog.Record
	var line []byte
	lastCommit := j.now()
	committed := int64(-1)
	for {
		var rec eventlog.Record
		select {
		case <-ctx.Done():
			return ctx.Err()
		case rec = <-records:
		}
		// Take what is already fetched, so output is written in batches.
		for n := 0; ; n++ {
			in, err := decode(rec)
			if err != nil {
				j.undecodable.Add(1)
				j.log.Warn("skipping undecodable record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
				in = Input{Kind: Tick, Time: rec.Time, Offset: rec.Offset}
			}
			for _, jd := range w.Add(in) {
				line = AppendDSJSON(line[:0], &jd)
				out = append(out, eventlog.Record{
					Topic:   eventlog.JoinedTopic,
					Key:     []byte(jd.Key),
					Value:   append([]byte(nil), line...),
					Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeJoined)}},
					Time:    jd.Time,
				})
				if jd.Learnable {
					j.learnable.Add(1)
				}
			}
			if n == 1000 || len(records) == 0 {
				break
			}
			rec = <-records
		}
		if len(out) > 0 {
			if err := j.write(ctx, out); err != nil {
				return err
			}
			j.emitted.Add(int64(len(out)))
			clear(out)
			out = out[:0]
		}
		if now := j.now(); now.Sub(lastCommit) >= j.cfg.CommitInterval {
			if off := w.CommitOffset(); off != committed {
				if err := c.Commit(ctx, off); err != nil {
					return fmt.Errorf("commit partition %d offset %d: %w", c.Partition(), off, err)
				}
				committed = off
			}
			lastCommit = now
		}
	}
}

// write retries until the joined lines are acknowledged or ctx ends: the
// partition must not move past output that is not stored.
func (j *Joiner) write(ctx context.Context, recs []eventlog.Record) error {
	backoff := 50 * time.Millisecond
	for {
		err := j.out.Write(ctx, recs...)
		if err == nil || ctx.Err() != nil {
			return err
		}
		j.log.Warn("joined write failed; retrying", "records", len(recs), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// decode turns an events record into an [Input].
func decode(rec eventlog.Record) (Input, error) {
	in := Input{Key: string(rec.Key), Time: rec.Time, Offset: rec.Offset}
	switch typ := rec.Type(); typ {
	case eventlog.TypeTick:
		in.Kind = Tick
	case eventlog.TypeRank:
		ev := new(eventsv1.RankEvent)
		if err := proto.Unmarshal(rec.Value, ev); err != nil {
			return in, fmt.Errorf("rank: %w", err)
		}
		n := len(ev.GetRanking())
		if n == 0 || len(ev.GetProbabilities()) != n || len(ev.GetContext()) == 0 {
			return in, fmt.Errorf("rank %q: %d ranked, %d probabilities, %d bytes of context", ev.GetEventId(), n, len(ev.GetProbabilities()), len(ev.GetContext()))
		}
		for _, a := range ev.GetRanking() {
			if int(a) >= n {
				return in, fmt.Errorf("rank %q: ranking names action %d of %d", ev.GetEventId(), a, n)
			}
		}
		in.Kind, in.Rank = Rank, ev
	case eventlog.TypeReward:
		ev := new(eventsv1.RewardEvent)
		if err := proto.Unmarshal(rec.Value, ev); err != nil {
			return in, fmt.Errorf("reward: %w", err)
		}
		in.Kind, in.Value = Reward, ev.GetValue()
	case eventlog.TypeActivate:
		ev := new(eventsv1.ActivateEvent)
		if err := proto.Unmarshal(rec.Value, ev); err != nil {
			return in, fmt.Errorf("activate: %w", err)
		}
		in.Kind = Activate
	default:
		return in, fmt.Errorf("unknown record type %q", typ)
	}
	return in, nil
}
