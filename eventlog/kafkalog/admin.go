package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/open-personalizer/personalizer/eventlog"
)

// adminClient returns a kafka-go client of brokers and the function that
// closes its connections.
func adminClient(brokers []string) (*kafka.Client, func()) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}, tr.CloseIdleConnections
}

// logTimesMaxWait bounds a fetch of a record that should be there; it only
// matters if the partition was emptied after its offsets were listed.
const logTimesMaxWait = 100 * time.Millisecond

// LogTimes returns the time of the earliest and of the latest stored record
// over every partition of topics: the time of the record at each
// partition's log start offset and of the one before its end offset, so
// with CreateTime timestamps "earliest" means first in the log, which need
// not be the smallest time. Empty partitions are skipped; when every
// partition is empty it returns [eventlog.ErrNoRecords].
func LogTimes(ctx context.Context, brokers []string, topics ...string) (first, last time.Time, err error) {
	c, done := adminClient(brokers)
	defer done()
	found := false
	for _, topic := range topics {
		n, err := PartitionCount(ctx, brokers, topic)
		if err != nil {
			return time.Time{}, time.Time{}, err
		}
		starts, err := listPartitionOffsets(ctx, c, topic, n, kafka.FirstOffset)
		if err != nil {
			return time.Time{}, time.Time{}, err
		}
		ends, err := listPartitionOffsets(ctx, c, topic, n, kafka.LastOffset)
		if err != nil {
			return time.Time{}, time.Time{}, err
		}
		for p := range n {
			if starts[p] >= ends[p] {
				continue
			}
			t0, ok, err := recordTime(ctx, c, topic, p, starts[p], ends[p], true, fetchMaxBytes)
			if err != nil {
				return time.Time{}, time.Time{}, err
			}
			if !ok {
				continue // emptied since its offsets were listed
			}
			t1, ok, err := recordTime(ctx, c, topic, p, ends[p]-1, ends[p], false, fetchMaxBytes)
			if err != nil {
				return time.Time{}, time.Time{}, err
			}
			if !ok {
				t1 = t0
			}
			if !found || t0.Before(first) {
				first = t0
			}
			if !found || t1.After(last) {
				last = t1
			}
			found = true
		}
	}
	if !found {
		return time.Time{}, time.Time{}, eventlog.ErrNoRecords
	}
	return first, last, nil
}

// recordTime fetches partition p of topic at off, up to maxBytes, and
// returns the time of the first record at or after off (earliest) or of
// the last record before end (not earliest). A fetch returns whole batches,
// at least one whatever maxBytes, so records before off may come too, and
// compaction may have removed off itself. ok is false if no such record is
// stored any more.
func recordTime(ctx context.Context, c *kafka.Client, topic string, p int, off, end int64, earliest bool, maxBytes int64) (t time.Time, ok bool, err error) {
	// Two tries: records deleted between listing the offsets and this
	// fetch move the start once.
	for range 2 {
		resp, err := c.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: p, Offset: off,
			MinBytes: 1, MaxBytes: maxBytes, MaxWait: logTimesMaxWait,
		})
		if err == nil {
			err = resp.Error
		}
		if errors.Is(err, kafka.OffsetOutOfRange) && earliest && resp.LogStartOffset > off && resp.LogStartOffset < resp.HighWatermark {
			off = resp.LogStartOffset
			continue
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			return time.Time{}, false, nil
		}
		if err != nil {
			return time.Time{}, false, fmt.Errorf("fetch %s/%d at %d: %w", topic, p, off, err)
		}
		for {
			r, err := resp.Records.ReadRecord()
			if err != nil {
				// io.EOF, or a batch the response cut short.
				return t, ok, nil
			}
			if r.Offset < off || r.Offset >= end {
				continue
			}
			t, ok = r.Time, true
			if earliest {
				return t, ok, nil
			}
		}
	}
	return time.Time{}, false, nil
}

// listPartitionOffsets returns the offsets of partitions 0 to n-1 of topic
// at ts, kafka.FirstOffset or kafka.LastOffset.
func listPartitionOffsets(ctx context.Context, c *kafka.Client, topic string, n int, ts int64) (map[int]int64, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range n {
		req.Topics[topic] = append(req.Topics[topic], kafka.OffsetRequest{Partition: p, Timestamp: ts})
	}
	resp, err := c.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("offsets of %s: %w", topic, err)
	}
	offs := make(map[int]int64, n)
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		if ts == kafka.FirstOffset {
			offs[p.Partition] = p.FirstOffset
		} else {
			offs[p.Partition] = p.LastOffset
		}
	}
	if len(offs) != n {
		return nil, fmt.Errorf("offsets of %s: %d of %d partitions answered", topic, len(offs), n)
	}
	return offs, nil
}

// DeleteRecords deletes the records of topic before offset before[p] in
// each partition p named (Kafka's DeleteRecords: the log start offset
// moves, and readers below it continue from it). A nil before deletes every
// record of every partition, up to the end offset it has when the broker
// handles the request. An offset at or below the log start deletes
// nothing. An offset past a partition's end is refused with
// kafka.OffsetOutOfRange, and the other partitions are still deleted; a
// partition the topic does not have fails the call with
// kafka.UnknownTopicOrPartition before anything is deleted.
//
// kafka-go v0.4 has no DeleteRecords, so this sends franz-go's kmsg request
// through a short-lived kgo client, which routes each partition to its
// leader; errors are reported as kafka-go's kafka.Error codes, like the rest
// of this package's.
func DeleteRecords(ctx context.Context, brokers []string, topic string, before map[int]int64) error {
	n, err := PartitionCount(ctx, brokers, topic)
	if err != nil {
		return err
	}
	if before == nil {
		before = make(map[int]int64, n)
		for p := range n {
			before[p] = -1 // the high watermark, when the broker gets the request
		}
	} else {
		// kgo would wait for metadata to show a partition that is not
		// there until its retry timeout.
		for p, off := range before {
			if p < 0 || p >= n {
				return fmt.Errorf("delete records of %s/%d: %w", topic, p, kafka.UnknownTopicOrPartition)
			}
			if off < 0 {
				return fmt.Errorf("delete records of %s/%d: offset must not be negative, got %d", topic, p, off)
			}
		}
	}
	if len(before) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return fmt.Errorf("delete records of %s: %w", topic, err)
	}
	defer cl.Close()

	req := kmsg.NewPtrDeleteRecordsRequest()
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMillis = int32(max(time.Until(dl).Milliseconds(), 1))
	}
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topic
	for _, p := range slices.Sorted(maps.Keys(before)) {
		rp := kmsg.NewDeleteRecordsRequestTopicPartition()
		rp.Partition = int32(p)
		rp.Offset = before[p]
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	// kgo splits the request by partition leader and merges the answers.
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("delete records of %s: %w", topic, err)
	}
	answers := map[int]error{}
	outOfRange := false
	for _, t := range resp.Topics {
		if t.Topic != topic {
			continue
		}
		for _, p := range t.Partitions {
			answers[int(p.Partition)] = nil
			if p.ErrorCode != 0 {
				err := kafka.Error(p.ErrorCode)
				answers[int(p.Partition)] = err
				outOfRange = outOfRange || errors.Is(err, kafka.OffsetOutOfRange)
			}
		}
	}
	// Kafka deletes nothing and succeeds for an offset below the log
	// start; kfake refuses it as out of range. Both mean the records are
	// gone, which is what the caller asked for.
	var starts map[int]int64
	if outOfRange {
		c, done := adminClient(brokers)
		starts, err = listPartitionOffsets(ctx, c, topic, n, kafka.FirstOffset)
		done()
		if err != nil {
			return fmt.Errorf("delete records of %s: %w", topic, err)
		}
	}
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(before)) {
		err, ok := answers[p]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("delete records of %s/%d: partition missing from the answer", topic, p))
		case errors.Is(err, kafka.OffsetOutOfRange) && before[p] >= 0 && before[p] <= starts[p]:
		case err != nil:
			errs = append(errs, fmt.Errorf("delete records of %s/%d before %d: %w", topic, p, before[p], err))
		}
	}
	return errors.Join(errs...)
}

// retentionConfig is Kafka's topic setting of how long records are kept.
const retentionConfig = "retention.ms"

// SetRetention sets how long the broker keeps the records of topic
// (retention.ms, through IncrementalAlterConfigs). A negative d keeps them
// forever (-1); otherwise d is rounded down to milliseconds and must be at
// least one. The broker deletes whole expired segments on its own schedule,
// so records may outlive d for a while.
func SetRetention(ctx context.Context, brokers []string, topic string, d time.Duration) error {
	ms := int64(-1)
	if d >= 0 {
		if ms = d.Milliseconds(); ms < 1 {
			return fmt.Errorf("retention of %s must be at least 1ms, or negative for forever, got %v", topic, d)
		}
	}
	c, done := adminClient(brokers)
	defer done()
	resp, err := c.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{
			ResourceType: kafka.ResourceTypeTopic,
			ResourceName: topic,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{
				Name: retentionConfig, Value: strconv.FormatInt(ms, 10), ConfigOperation: kafka.ConfigOperationSet,
			}},
		}},
	})
	if err != nil {
		return fmt.Errorf("set retention of %s: %w", topic, err)
	}
	for _, r := range resp.Resources {
		if r.ResourceName == topic {
			if r.Error != nil {
				return fmt.Errorf("set retention of %s: %w", topic, r.Error)
			}
			return nil
		}
	}
	return fmt.Errorf("set retention of %s: topic missing from the answer", topic)
}

// Retention returns how long the broker keeps the records of topic
// (retention.ms, through DescribeConfigs), its own setting or the broker's
// default; negative means forever.
func Retention(ctx context.Context, brokers []string, topic string) (time.Duration, error) {
	c, done := adminClient(brokers)
	defer done()
	resp, err := c.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeTopic,
			ResourceName: topic,
			ConfigNames:  []string{retentionConfig},
		}},
	})
	if err != nil {
		return 0, fmt.Errorf("retention of %s: %w", topic, err)
	}
	for _, r := range resp.Resources {
		if r.ResourceName != topic {
			continue
		}
		if r.Error != nil {
			return 0, fmt.Errorf("retention of %s: %w", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName != retentionConfig {
				continue
			}
			ms, err := strconv.ParseInt(e.ConfigValue, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("retention of %s: %s %q: %w", topic, retentionConfig, e.ConfigValue, err)
			}
			if ms < 0 {
				return -1, nil
			}
			return time.Duration(ms) * time.Millisecond, nil
		}
	}
	return 0, fmt.Errorf("retention of %s: %s missing from the answer", topic, retentionConfig)
}

// CommittedOffsets returns the offsets consumer group has committed for
// topic's partitions; a partition without a commit is left out (all of
// them for a group that does not exist).
func CommittedOffsets(ctx context.Context, brokers []string, group, topic string) (map[int]int64, error) {
	n, err := PartitionCount(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	c, done := adminClient(brokers)
	defer done()
	parts := make([]int, n)
	for p := range n {
		parts[p] = p
	}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err == nil {
		err = resp.Error
	}
	out := make(map[int]int64, n)
	if errors.Is(err, kafka.GroupIdNotFound) { // kfake's answer for a group that never committed
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s on %s: %w", group, topic, err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("committed offset of group %s on %s/%d: %w", group, topic, p.Partition, p.Error)
		}
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// Inspector reads partitions' offsets and record times for the lag
// sampler, over one client whose connections it keeps between calls, so
// that a sample every few seconds opens no new connection. It is safe for
// concurrent use; Close releases its connections.
type Inspector struct {
	c    *kafka.Client
	done func()
}

// NewInspector returns an inspector of brokers.
func NewInspector(brokers []string) *Inspector {
	c, done := adminClient(brokers)
	return &Inspector{c: c, done: done}
}

// Close closes the inspector's connections.
func (i *Inspector) Close() { i.done() }

// Bounds are a partition's log start offset (its first stored record) and
// its end offset (where the next record will go).
type Bounds struct{ Start, End int64 }

// Bounds returns the bounds of every partition of topic.
func (i *Inspector) Bounds(ctx context.Context, topic string) (map[int]Bounds, error) {
	resp, err := i.c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	n := -1
	for _, t := range resp.Topics {
		if t.Name == topic {
			if t.Error != nil {
				return nil, fmt.Errorf("metadata of %s: %w", topic, t.Error)
			}
			n = len(t.Partitions)
		}
	}
	if n < 0 {
		return nil, fmt.Errorf("metadata of %s: %w", topic, kafka.UnknownTopicOrPartition)
	}
	starts, err := listPartitionOffsets(ctx, i.c, topic, n, kafka.FirstOffset)
	if err != nil {
		return nil, err
	}
	ends, err := listPartitionOffsets(ctx, i.c, topic, n, kafka.LastOffset)
	if err != nil {
		return nil, err
	}
	out := make(map[int]Bounds, n)
	for p := range n {
		out[p] = Bounds{Start: starts[p], End: ends[p]}
	}
	return out, nil
}

// RecordTime returns the time of the record at offset off of partition p
// of topic, or of the first one after it that is stored (compaction or
// retention may have removed off), before end. ok is false when there is
// none. One fetch of one batch, the one holding off.
func (i *Inspector) RecordTime(ctx context.Context, topic string, p int, off, end int64) (t time.Time, ok bool, err error) {
	return recordTime(ctx, i.c, topic, p, off, end, true, 1)
}
