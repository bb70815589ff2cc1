// Package watch holds a value that goroutines read, change and wait on:
// the joiner's and the learner's counters, which tests and operators wait
// on instead of sleeping.
package watch

import (
	"context"
	"sync"
)

// Value is a value of type T that goroutines read, change and wait on. The
// zero Value holds T's zero value and is ready to use.
type Value[T any] struct {
	mu      sync.Mutex
	v       T
	changed chan struct{} // closed and replaced by every Update
}

// Get returns the value.
func (w *Value[T]) Get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v
}

// Update changes the value with f and wakes every Wait.
func (w *Value[T]) Update(f func(*T)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(&w.v)
	if w.changed != nil {
		close(w.changed)
		w.changed = nil
	}
}

// Wait blocks until cond holds for the value or ctx ends.
func (w *Value[T]) Wait(ctx context.Context, cond func(T) bool) error {
	for {
		w.mu.Lock()
		v := w.v
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		changed := w.changed
		w.mu.Unlock()
		if cond(v) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
