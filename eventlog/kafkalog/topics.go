package kafkalog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/segmentio/kafka-go"

	"github.com/open-personalizer/personalizer/eventlog"
)

// TopicSpec names a topic and the partition count to create it with.
type TopicSpec struct {
	Name       string
	Partitions int
	// Config holds topic-level settings to create it with (Kafka's names,
	// e.g. "max.message.bytes", "cleanup.policy").
	Config map[string]string
}

// ConfigTopicSpec returns the spec of [eventlog.ConfigTopic]: one partition,
// so that every role applies configuration changes in one order, and
// compacted, so that the latest configuration of every loop is kept for
// good. retention.ms -1 has no effect on a compacted-only Kafka topic; it is
// there because kfake also applies time retention to compacted topics, and
// would delete a configuration nobody changed for 7 days.
func ConfigTopicSpec() TopicSpec {
	return TopicSpec{
		Name:       eventlog.ConfigTopic,
		Partitions: 1,
		Config:     map[string]string{"cleanup.policy": "compact", "retention.ms": "-1"},
	}
}

// EnsureTopics creates the topics that do not exist yet, with the broker's
// default replication factor. Existing topics are left as they are, even if
// their partition count differs.
func EnsureTopics(ctx context.Context, brokers []string, topics ...TopicSpec) error {
	if len(topics) == 0 {
		return nil
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		if t.Partitions < 1 {
			return fmt.Errorf("topic %s: partitions must be at least 1, got %d", t.Name, t.Partitions)
		}
		// -1 asks for the broker's default replication factor (KIP-464).
		tc := kafka.TopicConfig{Topic: t.Name, NumPartitions: t.Partitions, ReplicationFactor: -1}
		for _, k := range slices.Sorted(maps.Keys(t.Config)) {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: t.Config[k]})
		}
		req.Topics = append(req.Topics, tc)
	}
	resp, err := c.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	var errs []error
	for _, t := range topics {
		if err := resp.Errors[t.Name]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create topic %s: %w", t.Name, err))
		}
	}
	return errors.Join(errs...)
}

// PartitionCount returns the number of partitions of topic.
func PartitionCount(ctx context.Context, brokers []string, topic string) (int, error) {
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	resp, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	for _, t := range resp.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return 0, fmt.Errorf("metadata of %s: %w", topic, t.Error)
		}
		return len(t.Partitions), nil
	}
	return 0, fmt.Errorf("metadata of %s: %w", topic, kafka.UnknownTopicOrPartition)
}

// EndOffsets returns, for every partition of topic, the offset the next
// record will get.
func EndOffsets(ctx context.Context, brokers []string, topic string) (map[int]int64, error) {
	n, err := PartitionCount(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range n {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
	}
	resp, err := c.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	ends := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("end offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		ends[p.Partition] = p.LastOffset
	}
	if len(ends) != n {
		return nil, fmt.Errorf("end offsets of %s: %d of %d partitions answered", topic, len(ends), n)
	}
	return ends, nil
}
