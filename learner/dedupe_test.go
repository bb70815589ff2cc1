package learner

import (
	"fmt"
	"testing"
)

// TestDedupe checks that repeats are dropped while a key is remembered,
// that memory holds exactly the last n keys, and that a checkpoint's keys
// restore the same memory.
func TestDedupe(t *testing.T) {
	t.Parallel()
	d := newDedupe(3)
	steps := []struct {
		key string
		new bool
	}{
		{"a", true}, {"b", true}, {"a", false}, {"c", true}, {"b", false},
		{"d", true}, // evicts a
		{"a", true}, // evicts b
		{"c", false}, {"b", true}, {"d", false},
	}
	for i, s := range steps {
		if got := d.add([]byte(s.key)); got != s.new {
			t.Fatalf("step %d: add(%q) = %v, want %v", i, s.key, got, s.new)
		}
	}
	restored := newDedupe(3)
	for _, k := range d.keys() {
		restored.addHash(k)
	}
	for _, k := range []string{"d", "a", "b"} {
		if restored.add([]byte(k)) {
			t.Errorf("restored memory forgot %q", k)
		}
	}
	if !restored.add([]byte("c")) {
		t.Error(`restored memory still has "c", evicted before the checkpoint`)
	}
	if len(d.seen) != 3 || len(d.ring) != 3 {
		t.Errorf("memory holds %d keys in a ring of %d, want 3", len(d.seen), len(d.ring))
	}
}

func BenchmarkDedupe(b *testing.B) {
	d := newDedupe(1 << 20)
	keys := make([][]byte, 1<<16)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "loop/event-%d", i)
	}
	b.ResetTimer()
	for i := range b.N {
		d.add(keys[i%len(keys)])
	}
}
