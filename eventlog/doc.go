// Package eventlog owns the record type that every role reads and writes,
// the small interfaces over a partitioned log, and [Mem], an in-memory log
// for unit tests.
//
// eventlog imports only the standard library. Kafka lives behind these types
// in [github.com/open-personalizer/personalizer/eventlog/kafkalog], the only
// package that imports a Kafka client.
package eventlog
