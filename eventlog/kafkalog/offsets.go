package kafkalog

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/segmentio/kafka-go"
)

// OffsetsAt returns, for every partition of topic, the offset of its first
// record whose timestamp is at or after t, or its end offset (where the next
// record will go) when it has none: reading every partition from there reads
// exactly the records of time t onwards. The learner retrains a new policy
// from OffsetsAt(now - retrain window).
//
// The end offsets are listed before the records are looked up by time, so
// that a record appended in between, which is newer than t, is not skipped.
// Times before the Unix epoch are taken as the epoch: Kafka gives negative
// timestamps special meanings.
func OffsetsAt(ctx context.Context, brokers []string, topic string, t time.Time) (map[int]int64, error) {
	ends, err := EndOffsets(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	if t.UnixMilli() <= 0 {
		// kafka-go sends the zero time as 0 too.
		t = time.UnixMilli(0)
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range ends {
		req.Topics[topic] = append(req.Topics[topic], kafka.TimeOffsetOf(p, t))
	}
	resp, err := c.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("offsets of %s at %v: %w", topic, t, err)
	}
	offsets := maps.Clone(ends)
	answered := 0
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("offset of %s/%d at %v: %w", topic, p.Partition, t, p.Error)
		}
		if _, ok := ends[p.Partition]; !ok {
			return nil, fmt.Errorf("offsets of %s at %v: answer for unknown partition %d", topic, t, p.Partition)
		}
		answered++
		// A partition with no record at or after t answers offset -1,
		// which kafka-go files as LastOffset, leaving Offsets empty: its
		// end offset stands.
		for off := range p.Offsets {
			if off >= 0 && off < offsets[p.Partition] {
				offsets[p.Partition] = off
			}
		}
	}
	if answered != len(ends) {
		return nil, fmt.Errorf("offsets of %s at %v: %d of %d partitions answered", topic, t, answered, len(ends))
	}
	return offsets, nil
}
