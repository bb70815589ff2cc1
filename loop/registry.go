package loop

import (
	"context"
	"sync"
)

// Registry holds the current configuration of every loop a process knows.
// One goroutine feeds it (from flags, or following the configuration
// topic); every role reads it. Configurations are immutable once set:
// readers keep the pointer they get.
type Registry struct {
	mu      sync.Mutex
	loops   map[string]*Config
	changed chan struct{} // closed and replaced on every change
}

// NewRegistry returns a registry holding cfgs.
func NewRegistry(cfgs ...*Config) *Registry {
	r := &Registry{loops: make(map[string]*Config), changed: make(chan struct{})}
	for _, c := range cfgs {
		r.loops[c.Loop] = c
	}
	return r
}

// Delete forgets loop.
func (r *Registry) Delete(loop string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.loops[loop]; ok {
		delete(r.loops, loop)
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

// Get returns loop's current configuration, nil if the loop is unknown.
func (r *Registry) Get(loop string) *Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loops[loop]
}

// Loops returns the current configuration of every loop.
func (r *Registry) Loops() []*Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Config, 0, len(r.loops))
	for _, c := range r.loops {
		out = append(out, c)
	}
	return out
}

// Set makes c its loop's configuration unless the one held has a newer
// version, and reports whether it did. An equal version replaces: two
// writers that raced wrote the same version, and the configuration topic
// (one partition, read in order) keeps the later one, as compaction does.
func (r *Registry) Set(c *Config) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.loops[c.Loop]; old != nil && old.Version > c.Version {
		return false
	}
	r.loops[c.Loop] = c
	close(r.changed)
	r.changed = make(chan struct{})
	return true
}

// Next blocks until loop's configuration is another than cur (which may
// be nil), and returns it: nil if the loop was deleted.
func (r *Registry) Next(ctx context.Context, loop string, cur *Config) (*Config, error) {
	for {
		r.mu.Lock()
		c, ch := r.loops[loop], r.changed
		r.mu.Unlock()
		if c != cur {
			return c, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// GetVersion returns c's version, 0 for nil.
func (c *Config) GetVersion() uint64 {
	if c == nil {
		return 0
	}
	return c.Version
}

// Changed returns a channel closed at the next change of any loop.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}
