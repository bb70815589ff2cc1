package joiner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// A [Window] keeps no rank record: when an event's window closes, the
// joiner gets its rank back from the rank cache (recent ranks, decoded as
// they were fetched) or reads the record again from the partition at its
// offset. Windows close in deadline order, which for one wait is rank
// order, so the reads go forward through the partition.

// rankCacheOverhead is what a cached rank costs beyond its record's key
// and value: the decoded RankEvent, its slices and the cache entry.
const rankCacheOverhead = 512

// rankCache holds the recently fetched ranks of a partition, decoded, up
// to a budget of bytes, in offset order; the oldest go first.
type rankCache struct {
	budget int
	size   int
	q      fifo[cachedRank]
}

type cachedRank struct {
	in   Input // its Rank nil once taken
	size int
}

// rankBytes is about what a rank decoded from a record of value holds
// beyond rankCacheOverhead: the value, which its context points into, or
// the context rendered from the request it carried, which is larger than
// the request and in memory of its own.
func rankBytes(value []byte, rank *eventsv1.RankEvent) int {
	return max(len(value), len(rank.GetContext()))
}

// put adds the rank decoded as in, if it fits; value is its [rankBytes].
func (c *rankCache) put(in Input, value int) {
	size := len(in.Key) + value + rankCacheOverhead
	if size > c.budget {
		return
	}
	for c.size+size > c.budget {
		c.size -= c.q.pop().size
	}
	c.q.push(cachedRank{in: in, size: size})
	c.size += size
}

// take returns the rank at offset and forgets it.
func (c *rankCache) take(offset int64) (Input, bool) {
	live := c.q.q[c.q.head:]
	i, ok := slices.BinarySearchFunc(live, offset, func(r cachedRank, off int64) int { return cmp.Compare(r.in.Offset, off) })
	if !ok || live[i].in.Rank == nil {
		return Input{}, false
	}
	r := live[i]
	live[i].in = Input{Offset: offset}
	c.size -= r.size
	live[i].size = 0
	for c.q.len() > 0 && c.q.front().in.Rank == nil {
		c.q.pop()
	}
	return r.in, true
}

// rereadSkip is how many records a rereader reads through to reach a
// later offset before it opens a new reader there instead.
const rereadSkip = 2000

// rereadTimeout bounds one attempt to read a record again.
const rereadTimeout = 30 * time.Second

// rereaders is how many positioned readers a rereader keeps: windows of
// different waits close ranks from as many places in the partition.
const rereaders = 4

// rereader reads records of a partition again, forward from where one of
// its readers is, opening a reader elsewhere only when none is close
// before the offset.
type rereader struct {
	claim eventlog.Claim
	rs    []positioned // the most recently used last
}

type positioned struct {
	r    eventlog.Reader
	next int64 // the offset after the last record r returned
}

// read returns the record at offset, or the first one after it that the
// log still has.
func (rr *rereader) read(ctx context.Context, offset int64) (eventlog.Record, error) {
	k := -1
	for i, p := range rr.rs {
		if p.next <= offset && offset-p.next <= rereadSkip && (k < 0 || p.next > rr.rs[k].next) {
			k = i
		}
	}
	var p positioned
	if k >= 0 {
		p = rr.rs[k]
		rr.rs = slices.Delete(rr.rs, k, k+1)
	} else {
		c, ok := rr.claim.(eventlog.Rereader)
		if !ok {
			return eventlog.Record{}, errNoReread
		}
		r, err := c.Reread(ctx, offset)
		if err != nil {
			return eventlog.Record{}, err
		}
		p = positioned{r: r, next: offset}
		if len(rr.rs) == rereaders {
			rr.rs[0].r.Close()
			rr.rs = slices.Delete(rr.rs, 0, 1)
		}
	}
	for {
		rec, err := p.r.Fetch(ctx)
		if err != nil {
			p.r.Close()
			return rec, err
		}
		p.next = rec.Offset + 1
		if rec.Offset >= offset {
			rr.rs = append(rr.rs, p)
			return rec, nil
		}
	}
}

var errNoReread = errors.New("the log cannot read a partition again")

// close closes the readers.
func (rr *rereader) close() {
	for _, p := range rr.rs {
		p.r.Close()
	}
	rr.rs = nil
}

// resolve fills in the key, rank and trace of each event in out.Joined,
// and the slots of a multi-slot one (counting the rewards that name none
// of them in b.stats), from the cache or by reading its rank record again (in offset order,
// so that the reads go forward). An event whose rank cannot be read back
// (deleted by retention, another record at its offset) is taken out of
// out.Joined and goes to the dead-letter topic as a reference to its
// offset, counted as Unread in b.stats. Reads that fail are retried: the
// partition waits for the log, as it does for fetches. It returns an
// error only once ctx has ended.
func (j *Joiner) resolve(ctx context.Context, p int, w *Window, out *Output, b *batch, cache *rankCache, rr *rereader) error {
	var missing []int
	for i := range out.Joined {
		jd := &out.Joined[i]
		if in, ok := cache.take(jd.Offset); ok {
			b.stats.UnknownSlots += int64(jd.setRank(&in))
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Slice(missing, func(a, b int) bool { return out.Joined[missing[a]].Offset < out.Joined[missing[b]].Offset })
	lost := false
	for _, i := range missing {
		jd := &out.Joined[i]
		var rec eventlog.Record
		var why error
		err := j.retry(ctx, p, "rank record read", func() error {
			rctx, cancel := context.WithTimeout(ctx, rereadTimeout)
			defer cancel()
			var err error
			rec, err = rr.read(rctx, jd.Offset)
			if errors.Is(err, errNoReread) {
				why, err = err, nil
			}
			return err
		}, "offset", jd.Offset)
		if err != nil {
			return err
		}
		in := decode(rec)
		switch {
		case why != nil:
		case rec.Offset != jd.Offset:
			why = fmt.Errorf("the log no longer has it: the next record kept is at offset %d", rec.Offset)
		case in.Kind == Bad:
			why = in.Err
		case !w.IsKey(jd, rec.Key):
			why = fmt.Errorf("the record there has another key, %q", rec.Key)
		case in.Kind != Rank:
			why = fmt.Errorf("the record there is a %s record", rec.Type())
		}
		if why != nil {
			lost = true
			j.unread(b, p, jd, rec, why)
			jd.Offset = -1
			continue
		}
		b.stats.UnknownSlots += int64(jd.setRank(&in))
	}
	if lost {
		out.Joined = slices.DeleteFunc(out.Joined, func(jd Joined) bool { return jd.Offset < 0 })
	}
	return nil
}

// unread dead-letters a reference to the rank of jd, which could not be
// read back (why), and counts it.
func (j *Joiner) unread(b *batch, p int, jd *Joined, rec eventlog.Record, why error) {
	why = fmt.Errorf("rank record at offset %d could not be read back when its window closed: %w", jd.Offset, why)
	j.log.Error("joined event lost: its rank record could not be read back; dead-lettered as a reference", "partition", p, "offset", jd.Offset, "err", why)
	ref := eventlog.Record{Topic: eventlog.EventsTopic, Partition: p, Offset: jd.Offset, Time: jd.Time,
		Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}}
	if rec.Offset == jd.Offset {
		ref.Key = rec.Key
	}
	b.stats.Unread++
	b.add(jd.Offset, eventlog.DeadLetter(ref, why, true, j.cfg.MaxRecordBytes))
}
