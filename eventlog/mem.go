package eventlog

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"
)

// Mem is an in-memory partitioned log with consumer-group commits, for unit
// tests of the roles. It is safe for concurrent use.
type Mem struct {
	// MaxRecordBytes, when positive, is the largest [Record.Size] Write
	// stores; a larger record is rejected with [ErrTooLarge] in a
	// [*RejectedError], as a broker refuses it. Set it while nothing
	// writes.
	MaxRecordBytes int

	mu        sync.Mutex
	topics    map[string][][]Record
	committed map[string]memCommit // group/topic/partition -> next offset
	starts    map[string]int64     // topic/partition -> first offset kept (see Truncate)
	grew      chan struct{}        // closed and replaced on every write
}

type memCommit struct {
	next     int64
	metadata string
}

// NewMem returns a log with the given topics and partition counts.
func NewMem(partitions map[string]int) *Mem {
	m := &Mem{topics: map[string][][]Record{}, committed: map[string]memCommit{}, starts: map[string]int64{}, grew: make(chan struct{})}
	for t, n := range partitions {
		m.topics[t] = make([][]Record, n)
	}
	return m
}

// Write appends recs, stamping Offset, Partition and a zero Time.
func (m *Mem) Write(ctx context.Context, recs ...Record) error {
	return m.write(recs, false)
}

// Direct returns a writer that puts every record, keyed or not, in
// Partition modulo the topic's partition count, as kafkalog's writer does
// with ByPartition.
func (m *Mem) Direct() Writer { return memDirect{m} }

type memDirect struct{ m *Mem }

func (d memDirect) Write(ctx context.Context, recs ...Record) error { return d.m.write(recs, true) }

func (m *Mem) write(recs []Record, direct bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var rejected []Rejected
	for i, r := range recs {
		if m.MaxRecordBytes > 0 && r.Size() > m.MaxRecordBytes {
			rejected = append(rejected, Rejected{Index: i, Err: fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, r.Size(), m.MaxRecordBytes)})
			continue
		}
		parts, ok := m.topics[r.Topic]
		if !ok {
			return fmt.Errorf("unknown topic %q", r.Topic)
		}
		if direct {
			if r.Partition < 0 {
				return fmt.Errorf("negative partition %d", r.Partition)
			}
			r.Partition %= len(parts)
		} else if len(r.Key) > 0 {
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
		// A log stores copies: writers may reuse their buffers.
		r.Key, r.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
		r.Headers = slices.Clone(r.Headers)
		r.Offset = int64(len(parts[r.Partition]))
		parts[r.Partition] = append(parts[r.Partition], r)
	}
	close(m.grew)
	m.grew = make(chan struct{})
	if rejected != nil {
		return &RejectedError{Rejected: rejected}
	}
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

// Truncate deletes the records of a topic partition before offset, as
// retention does: readers skip to the first record kept. Records returns
// them still.
func (m *Mem) Truncate(topic string, partition int, offset int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := fmt.Sprintf("%s/%d", topic, partition)
	m.starts[k] = max(m.starts[k], offset)
}

// fetch blocks until partition p of topic has a record at off or after
// it, and returns the first (the first kept, if off was truncated).
func (m *Mem) fetch(ctx context.Context, topic string, p int, off int64) (Record, error) {
	for {
		m.mu.Lock()
		part, grew := m.topics[topic][p], m.grew
		off = max(off, m.starts[fmt.Sprintf("%s/%d", topic, p)])
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
		c := &memClaim{m: m, group: group, topic: topic, p: p, start: -1}
		if next, meta, ok := m.committedAt(group, topic, p); ok {
			c.start, c.next, c.meta = next, next, meta
		}
		wg.Go(func() {
			if err := fn(ctx, c); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// Committed returns group's committed offset for a topic partition and
// the metadata committed with it (0 and "" when none).
func (m *Mem) Committed(group, topic string, partition int) (next int64, metadata string) {
	next, metadata, _ = m.committedAt(group, topic, partition)
	return next, metadata
}

func (m *Mem) committedAt(group, topic string, partition int) (int64, string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.committed[claimKey(group, topic, partition)]
	return c.next, c.metadata, ok
}

func claimKey(group, topic string, p int) string { return fmt.Sprintf("%s/%s/%d", group, topic, p) }

type memClaim struct {
	m     *Mem
	group string
	topic string
	p     int
	start int64
	meta  string
	next  int64
}

func (c *memClaim) Partition() int { return c.p }

func (c *memClaim) Start() (int64, string) { return c.start, c.meta }

func (c *memClaim) Fetch(ctx context.Context) (Record, error) {
	r, err := c.m.fetch(ctx, c.topic, c.p, c.next)
	if err == nil {
		c.next = r.Offset + 1
	}
	return r, err
}

// Reread implements [Rereader].
func (c *memClaim) Reread(_ context.Context, offset int64) (Reader, error) {
	return &memPartitionReader{m: c.m, topic: c.topic, p: c.p, next: offset}, nil
}

// memPartitionReader reads one partition of a topic.
type memPartitionReader struct {
	m     *Mem
	topic string
	p     int
	next  int64
}

func (r *memPartitionReader) Fetch(ctx context.Context) (Record, error) {
	rec, err := r.m.fetch(ctx, r.topic, r.p, r.next)
	if err == nil {
		r.next = rec.Offset + 1
	}
	return rec, err
}

func (r *memPartitionReader) Close() error { return nil }

func (c *memClaim) Commit(_ context.Context, next int64, metadata string) error {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	c.m.committed[claimKey(c.group, c.topic, c.p)] = memCommit{next: next, metadata: metadata}
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
			r.next[p] = max(r.next[p], r.m.starts[fmt.Sprintf("%s/%d", r.topic, p)])
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
