// Package kafkalog implements the [eventlog] interfaces over Kafka with
// kafka-go, and owns the embedded Kafka-protocol broker (kfake) that
// `personalizer dev`, `personalizer broker` and the tests run.
//
// It owns: converting kafka.Message to and from [eventlog.Record]; the
// partitioning rule (a keyed record goes to the partition its key hashes to
// with kafka-go's Hash balancer, a keyless record to [eventlog.Record.Partition],
// and with [WriterConfig.ByPartition] every record to its Partition);
// producer, fetch and consumer-group settings; committing offsets with
// metadata and reading them back when a claim starts; topic creation;
// following a compacted topic ([FollowCompacted], for [eventlog.ConfigTopic]);
// log administration ([LogTimes], [DeleteRecords], [SetRetention]). kafka-go
// has no DeleteRecords, so that one request goes through franz-go's kgo.
//
// kafkalog is the only package of the project that imports kafka-go, kfake or
// franz-go (tests elsewhere inject broker faults through [Broker.Cluster]
// with kfake's own types). It must never commit an offset by itself: offsets move only through
// [eventlog.Claim.Commit], so the joiner decides what is durable. It must never
// run the embedded broker without a data directory, because kfake then keeps
// every record in memory.
package kafkalog
