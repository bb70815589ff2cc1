package learner

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/open-personalizer/personalizer/bandit"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// ErrBadModel is returned by [Learner.Import] for data that is not a
// model file the learner can load: not bandit's format, truncated,
// corrupted, of an unknown format version or of a policy this build
// cannot parse. The wrapping error says which.
var ErrBadModel = errors.New("bad model file")

// errNotPublished is returned by a command whose model could not be
// published because its checkpoint could not be written; nothing changed.
var errNotPublished = errors.New("model not published: the checkpoint could not be written")

// command is a Reset (model nil), an Import (the model read) or a
// Rollback (the model read and the version it comes from) for the Run
// goroutine, which answers on done (buffered: it never waits).
type command struct {
	model *bandit.Model
	from  *eventsv1.ModelInfo // a Rollback's version
	done  chan commandResult
}

type commandResult struct {
	info *eventsv1.ModelInfo
	err  error
}

// Reset replaces the model with a new one of the same policy, learning
// from the next joined event on, and returns the version that publishes
// it: a new version number, Examples 0 and ModelCreated now. The offsets
// the learner stands at and the event keys it remembers stay. Run carries
// it out; Reset returns once the version is published, or when ctx ends
// first (the reset may then still happen). When the checkpoint cannot be
// written nothing changes and Reset returns an error.
func (l *Learner) Reset(ctx context.Context) (*eventsv1.ModelInfo, error) {
	return l.do(ctx, command{})
}

// Import replaces the model with the model file data, in bandit's format
// ([bandit.Model.WriteTo]: what personalizer train -f writes and what
// published versions carry), and returns the version that publishes it,
// as [Learner.Reset]. The imported model brings its own policy, which it
// keeps until the configured policy changes (see [Config.Configs]). Data
// that is not such a file is an error wrapping [ErrBadModel], and nothing
// changes.
func (l *Learner) Import(ctx context.Context, data []byte) (*eventsv1.ModelInfo, error) {
	m, err := bandit.ReadModel(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("import: %w: %w", ErrBadModel, err)
	}
	return l.do(ctx, command{model: m})
}

// Rollback makes the model of a kept version (see [Config.History]) the
// model again, and returns the version that publishes it, as
// [Learner.Reset]: learning goes on from that version's model (what was
// learned since is dropped) at the offsets the learner stands at, and the
// new version records the one it rolls back to (ModelInfo.rollback_of).
// Its examples and creation time are the old version's. The model brings
// its own policy, as an import does. A version the history does not keep
// is an error wrapping [ErrNotKept], and nothing changes.
func (l *Learner) Rollback(ctx context.Context, version uint64) (*eventsv1.ModelInfo, error) {
	mv, err := l.store.Get(version)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	m, err := bandit.ReadModel(bytes.NewReader(mv.GetData()))
	if err != nil {
		return nil, fmt.Errorf("rollback: model version %d: %w", version, err)
	}
	return l.do(ctx, command{model: m, from: mv.GetInfo()})
}

// do hands c to the Run goroutine and waits for its answer.
func (l *Learner) do(ctx context.Context, c command) (*eventsv1.ModelInfo, error) {
	c.done = make(chan commandResult, 1)
	select {
	case l.cmds <- c:
	case <-ctx.Done():
		return nil, fmt.Errorf("the learner did not take the command: %w", ctx.Err())
	}
	select {
	case r := <-c.done:
		return r.info, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("the learner did not answer: %w", ctx.Err())
	}
}

// command carries out a Reset or an Import on the Run goroutine: swaps
// the model and publishes it at once, or, when its checkpoint cannot be
// written, puts everything back.
func (l *Learner) command(c command) {
	what, m := "import", c.model
	if m == nil {
		what, m = "reset", bandit.NewModel(l.model.Policy())
	}
	oldModel, oldCreated, oldDirty, oldStats := l.model, l.created, l.dirty, l.stats.Get()
	if c.from != nil {
		what = "rollback"
		l.swap(m, int64(c.from.GetExamples()))
		if t := c.from.GetModelCreated(); t != nil {
			l.created = t.AsTime()
			l.stats.Update(func(s *Stats) { s.ModelCreated = l.created })
		}
		l.rollbackOf = c.from.GetVersion()
	} else {
		l.swap(m, 0)
	}
	err := l.checkpoint()
	l.rollbackOf = 0
	if err != nil {
		l.model, l.created, l.dirty = oldModel, oldCreated, oldDirty
		l.stats.Update(func(s *Stats) {
			s.Examples, s.ModelCreated, s.Policy = oldStats.Examples, oldStats.ModelCreated, oldStats.Policy
		})
		l.countFailure(err)
		l.log.Error("model "+what+" not done: its checkpoint could not be written", "loop", l.cfg.Loop, "err", err)
		c.done <- commandResult{err: fmt.Errorf("%s: %w: %w", what, errNotPublished, err)}
		return
	}
	l.stats.Update(func(s *Stats) {
		switch {
		case c.from != nil:
			s.Rollbacks++
		case c.model == nil:
			s.Resets++
		default:
			s.Imports++
		}
	})
	info := l.store.Latest().GetInfo()
	l.log.Info("model "+what+" published", "loop", l.cfg.Loop, "version", info.GetVersion(), "policy", m.Policy().String())
	c.done <- commandResult{info: info}
}

// swap makes m, created now and having learned examples, the model, to
// be published by the next checkpoint.
func (l *Learner) swap(m *bandit.Model, examples int64) {
	l.model, l.created, l.dirty = m, l.now(), true
	l.stats.Update(func(s *Stats) { l.setModelStats(s, examples) })
}
