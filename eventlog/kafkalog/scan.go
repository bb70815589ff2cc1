package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/open-personalizer/personalizer/eventlog"
)

// scanMaxBytes bounds one fetch of [Inspector.Scan]: a scan often needs a
// few records only (a search stops at its record), and the broker sends
// up to this much whatever the range asked for.
const scanMaxBytes = 256 << 10

// Partition returns the partition, of n, that a [Writer] writes a record
// keyed key to (kafka-go's Hash, as Sarama's: FNV-1a of the key).
func Partition(key []byte, n int) int {
	var h kafka.Hash
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return h.Balance(kafka.Message{Key: key}, parts...)
}

// Scan calls fn with each stored record of partition p of topic whose
// offset is in [from, to) and below the partition's high watermark, in
// offset order, until fn returns false. Records the log no longer has
// (retention) are skipped. It reads with plain fetches of up to 256 KiB:
// nothing is committed, nothing read ahead, and it never waits for
// records to come.
func (i *Inspector) Scan(ctx context.Context, topic string, p int, from, to int64, fn func(eventlog.Record) bool) error {
	for off := from; off < to; {
		resp, err := i.c.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: p, Offset: off,
			MinBytes: 1, MaxBytes: scanMaxBytes, MaxWait: logTimesMaxWait})
		if err == nil {
			err = resp.Error
		}
		if errors.Is(err, kafka.OffsetOutOfRange) && resp != nil && resp.LogStartOffset > off {
			off = resp.LogStartOffset // deleted by retention meanwhile
			continue
		}
		if err != nil {
			return fmt.Errorf("fetch %s/%d at %d: %w", topic, p, off, err)
		}
		start := off
		for {
			r, err := resp.Records.ReadRecord()
			if err != nil {
				break // io.EOF, or a batch the response cut short: fetch again from off
			}
			if r.Offset < off {
				continue // a fetch returns whole batches
			}
			if r.Offset >= to {
				return nil
			}
			rec, err := scannedRecord(topic, p, r)
			if err != nil {
				return fmt.Errorf("read %s/%d at %d: %w", topic, p, r.Offset, err)
			}
			off = r.Offset + 1
			if !fn(rec) {
				return nil
			}
		}
		if off >= resp.HighWatermark { // a fetch there would wait for records
			return nil
		}
		if off == start {
			return fmt.Errorf("fetch %s/%d at %d: no record came back below the high watermark %d", topic, p, off, resp.HighWatermark)
		}
	}
	return nil
}

// scannedRecord copies a fetched record of partition p of topic.
func scannedRecord(topic string, p int, r *kafka.Record) (eventlog.Record, error) {
	rec := eventlog.Record{Topic: topic, Partition: p, Offset: r.Offset, Time: r.Time}
	var err error
	if r.Key != nil {
		if rec.Key, err = protocol.ReadAll(r.Key); err != nil {
			return rec, err
		}
	}
	if r.Value != nil {
		if rec.Value, err = protocol.ReadAll(r.Value); err != nil {
			return rec, err
		}
	}
	for _, h := range r.Headers {
		rec.Headers = append(rec.Headers, eventlog.Header{Key: h.Key, Value: h.Value})
	}
	return rec, nil
}

// OffsetAt returns the offset of the first record of partition p of
// topic whose timestamp is at or after t (see [OffsetsAt]), or -1 when
// it has none, over the inspector's connections.
func (i *Inspector) OffsetAt(ctx context.Context, topic string, p int, t time.Time) (int64, error) {
	if t.UnixMilli() <= 0 {
		t = time.UnixMilli(0)
	}
	resp, err := i.c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.TimeOffsetOf(p, t)}}})
	if err != nil {
		return 0, fmt.Errorf("offset of %s/%d at %v: %w", topic, p, t, err)
	}
	off := int64(-1)
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return 0, fmt.Errorf("offset of %s/%d at %v: %w", topic, p, t, po.Error)
		}
		// No record at or after t: kafka-go files the answer -1 as
		// LastOffset and leaves Offsets empty.
		for o := range po.Offsets {
			if o >= 0 && (off < 0 || o < off) {
				off = o
			}
		}
	}
	return off, nil
}

// PartitionCounts returns the partition count of each of topics, in one
// metadata request.
func (i *Inspector) PartitionCounts(ctx context.Context, topics ...string) (map[string]int, error) {
	resp, err := i.c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("metadata of %v: %w", topics, err)
	}
	n := make(map[string]int, len(topics))
	for _, t := range resp.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("metadata of %s: %w", t.Name, t.Error)
		}
		n[t.Name] = len(t.Partitions)
	}
	for _, t := range topics {
		if n[t] == 0 {
			return nil, fmt.Errorf("metadata of %s: %w", t, kafka.UnknownTopicOrPartition)
		}
	}
	return n, nil
}

// EndOffset returns the end offset of partition p of topic: where its
// next record will go.
func (i *Inspector) EndOffset(ctx context.Context, topic string, p int) (int64, error) {
	resp, err := i.c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(p)}}})
	if err != nil {
		return 0, fmt.Errorf("end offset of %s/%d: %w", topic, p, err)
	}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return 0, fmt.Errorf("end offset of %s/%d: %w", topic, p, po.Error)
		}
		return po.LastOffset, nil
	}
	return 0, fmt.Errorf("end offset of %s/%d: no answer", topic, p)
}
