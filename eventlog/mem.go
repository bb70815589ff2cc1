package eventlog

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"
)

// Mem is an in-memory partitioned log with consumer-group commits, for unit
// tests of the roles. It is safe for concurrent use.
type Mem struct {
	mu        sync.Mutex
	topics    map[string][][]Record
	committed map[string]int64 // group/topic/partition -> next offset
	grew      chan struct{}    // closed and replaced on every write
}

// NewMem returns a log with the given topics and partition counts.
func NewMem(partitions map[string]int) *Mem {
	m := &Mem{topics: map[string][][]Record{}, committed: map[string]int64{}, grew: make(chan struct{})}
	for t, n := range partitions {
		m.topics[t] = make([][]Record, n)
	}
	return m
}

// Write appends recs, stamping Offset, Partition and a zero Time.
func (m *Mem) Write(ctx context.Context, recs ...Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		parts, ok := m.topics[r.Topic]
		if !ok {
			return fmt.Errorf("unknown topic %q", r.Topic)
		}
		if len(r.Key) > 0 {
			// kafka-go's Hash balancer: abs(int32(fnv1a) % n).
			h := fnv.New32a()
			h.Write(r.Key)
			p := int32(h.Sum32()) % int32(len(parts))
			r.Partition = int(max(p, -p))
		} else if r.Partition < 0 || r.Partition >= len(parts) {
			return fmt.Errorf("topic %q has no partition %d", r.Topic, r.Partition)
		}
		if r.Time.IsZero() {
			r.Time = time.Now()
		}
		r.Offset = int64(len(parts[r.Partition]))
		parts[r.Partition] = append(parts[r.Partition], r)
	}
	close(m.grew)
	m.grew = make(chan struct{})
	return nil
}

// Records returns a copy of every record of a topic partition.
func (m *Mem) Records(topic string, partition int) []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.topics[topic][partition]...)
}

// Partitions returns the partition count of topic.
func (m *Mem) Partitions(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.topics[topic])
}

// fetch blocks until partition p of topic has a record at off.
func (m *Mem) fetch(ctx context.Context, topic string, p int, off int64) (Record, error) {
	for {
		m.mu.Lock()
		part, grew := m.topics[topic][p], m.grew
		m.mu.Unlock()
		if off < int64(len(part)) {
			return part[off], nil
		}
		select {
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-grew:
		}
	}
}

// Consume runs fn for every partition of topic as the only member of group,
// in one generation that lasts until ctx ends.
func (m *Mem) Consume(ctx context.Context, group, topic string, fn ClaimFunc) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for p := range m.Partitions(topic) {
		c := &memClaim{m: m, group: group, topic: topic, p: p, next: m.Committed(group, topic, p)}
		wg.Go(func() {
			if err := fn(ctx, c); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// Committed returns group's committed offset for a topic partition.
func (m *Mem) Committed(group, topic string, partition int) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.committed[claimKey(group, topic, partition)]
}

func claimKey(group, topic string, p int) string { return fmt.Sprintf("%s/%s/%d", group, topic, p) }

type memClaim struct {
	m     *Mem
	group string
	topic string
	p     int
	next  int64
}

func (c *memClaim) Partition() int { return c.p }

func (c *memClaim) Fetch(ctx context.Context) (Record, error) {
	r, err := c.m.fetch(ctx, c.topic, c.p, c.next)
	if err == nil {
		c.next++
	}
	return r, err
}

func (c *memClaim) Commit(_ context.Context, next int64) error {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	c.m.committed[claimKey(c.group, c.topic, c.p)] = next
	return nil
}

// Reader returns a reader of topic starting at start[p] for each partition
// p (0 when absent).
func (m *Mem) Reader(topic string, start map[int]int64) Reader {
	r := &memReader{m: m, topic: topic, next: make([]int64, m.Partitions(topic))}
	for p, off := range start {
		r.next[p] = off
	}
	return r
}

type memReader struct {
	m     *Mem
	topic string
	next  []int64
	last  int // partition served last, for round-robin fairness
}

func (r *memReader) Fetch(ctx context.Context) (Record, error) {
	for {
		r.m.mu.Lock()
		parts, grew := r.m.topics[r.topic], r.m.grew
		for i := range parts {
			p := (r.last + 1 + i) % len(parts)
			if r.next[p] < int64(len(parts[p])) {
				rec := parts[p][r.next[p]]
				r.next[p]++
				r.last = p
				r.m.mu.Unlock()
				return rec, nil
			}
		}
		r.m.mu.Unlock()
		select {
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-grew:
		}
	}
}

func (r *memReader) Close() error { return nil }
