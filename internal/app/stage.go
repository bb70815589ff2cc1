package app

import (
	"context"
	"log/slog"
	"sync"

	"golang.org/x/sync/errgroup"
)

// stage is a group of goroutines stopped together.
type stage struct {
	cancel context.CancelFunc
	g      *errgroup.Group
}

func (s *stage) stop() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	return s.g.Wait()
}

// supervisor runs a process's stages, each stopped on its own in the
// process's shutdown order, and records the first failure.
type supervisor struct {
	log    *slog.Logger
	failed chan struct{} // closed when any stage fails
	err    error         // the first failure, set before failed is closed
	once   sync.Once
}

func (v *supervisor) init(log *slog.Logger) {
	v.log, v.failed = log, make(chan struct{})
}

// start runs fns in stage s until s is stopped; ctx's values are kept but
// not its cancellation.
func (v *supervisor) start(s *stage, ctx context.Context, fns ...func(context.Context) error) {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.g = new(errgroup.Group)
	for _, fn := range fns {
		s.g.Go(func() error {
			err := fn(ctx)
			if err != nil && ctx.Err() == nil {
				v.log.Error("component failed", "err", err)
				v.fail(err)
			}
			return err
		})
	}
}

func (v *supervisor) fail(err error) {
	v.once.Do(func() { v.err = err; close(v.failed) })
}

// wait blocks until ctx ends or a stage fails.
func (v *supervisor) wait(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-v.failed:
	}
}

// failure returns the first failure, nil if nothing failed.
func (v *supervisor) failure() error {
	select {
	case <-v.failed:
		return v.err
	default:
		return nil
	}
}
