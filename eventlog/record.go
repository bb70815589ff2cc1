package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Topic names shared by every role.
const (
	// EventsTopic holds rank, reward, activate and tick records, keyed
	// loop/eventId so both halves of an event share a partition.
	EventsTopic = "personalizer.events"
	// JoinedTopic holds one DSJson line per joined event, keyed
	// loop/eventId, in the partition of the events record it came from.
	JoinedTopic = "personalizer.joined"
	// AuditTopic holds one record per outcome the joiner did not learn
	// (late or dangling), keyed loop/eventId.
	AuditTopic = "personalizer.audit"
	// DeadLetterTopic holds the events records the joiner could not
	// decode, unchanged, with [DeadLetterPartitionHeader],
	// [DeadLetterOffsetHeader] and [DeadLetterErrorHeader] added.
	DeadLetterTopic = "personalizer.deadletter"
	// ConfigTopic holds every loop's configuration, a JSON document keyed
	// by the loop's name; a record with a nil value (a tombstone) deletes
	// the loop. It is compacted, so it keeps at least the latest record of
	// every key, and has one partition, so that all roles apply the
	// changes in the same order.
	ConfigTopic = "personalizer.config"
	// EvaluationsTopic holds every loop's offline evaluations, a JSON
	// document keyed loop/id; a tombstone deletes one. Compacted, with one
	// partition, like ConfigTopic.
	EvaluationsTopic = "personalizer.evaluations"
)

// TypeHeader is the record header that names the payload type.
const TypeHeader = "type"

// Payload types carried in [TypeHeader].
const (
	TypeRank     = "rank"
	TypeReward   = "reward"
	TypeActivate = "activate"
	TypeTick     = "tick"
	TypeJoined   = "joined"
	TypeAudit    = "audit"
)

// Headers a dead-lettered record carries besides its own: where it was in
// [EventsTopic] (decimal; absent for a record that never got there), why it
// was dead-lettered, and, when its value was left out because it did not
// fit, how many bytes the value had (decimal).
const (
	DeadLetterPartitionHeader = "dead_letter.partition"
	DeadLetterOffsetHeader    = "dead_letter.offset"
	DeadLetterErrorHeader     = "dead_letter.error"
	DeadLetterSizeHeader      = "dead_letter.size"
)

// DefaultMaxRecordBytes is the default largest record ([Record.Size]) a
// role writes: Kafka's default max.message.bytes (1,048,588) less room for
// the record batch's framing and a margin, so that a record of this size
// is accepted by a broker with default settings.
const DefaultMaxRecordBytes = 1_000_000

// Record is one log record. On write, a record with a key goes to the
// partition its key hashes to; a record without a key goes to Partition.
// Time is the event time; writers set it, readers get it back unchanged.
type Record struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Time      time.Time
}

// Size returns the bytes of rec that count against a record size limit:
// its key, its value and its headers' keys and values.
func (r *Record) Size() int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Header returns the value of the first header named key, or nil.
func (r *Record) Header(key string) []byte {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

// Type returns the record's [TypeHeader] value.
func (r *Record) Type() string { return string(r.Header(TypeHeader)) }

// TraceparentHeader is the W3C trace context header. A rank record written
// while its call was traced carries it, and so does the joined line made
// from it, so that the joiner's and the learner's spans join the Rank's
// trace.
const TraceparentHeader = "traceparent"

// HeaderCarrier is a record's headers as OpenTelemetry's
// propagation.TextMapCarrier (through a pointer, as
// (*HeaderCarrier)(&rec.Headers)), so that trace context travels in records
// without this package depending on OpenTelemetry.
type HeaderCarrier []Header

// Get returns the value of the first header named key, or "".
func (c *HeaderCarrier) Get(key string) string {
	for _, h := range *c {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set replaces the value of the first header named key, or adds the header.
func (c *HeaderCarrier) Set(key, value string) {
	for i, h := range *c {
		if h.Key == key {
			(*c)[i].Value = []byte(value)
			return
		}
	}
	*c = append(*c, Header{Key: key, Value: []byte(value)})
}

// Keys returns the header names.
func (c *HeaderCarrier) Keys() []string {
	keys := make([]string, len(*c))
	for i, h := range *c {
		keys[i] = h.Key
	}
	return keys
}

// Writer appends records. Write returns once every record is acknowledged,
// or with an error, in which case any of them may or may not be stored,
// except for a [*RejectedError]: then every record but the rejected ones
// is stored, and writing those again would fail again. Once Write returned
// nil or a *RejectedError the caller may reuse the records' memory.
type Writer interface {
	Write(ctx context.Context, recs ...Record) error
}

// DeadLetter returns the copy of rec to write to [DeadLetterTopic] because
// it could not be used (why): its key, time and headers, with
// [DeadLetterErrorHeader] added, and [DeadLetterPartitionHeader] and
// [DeadLetterOffsetHeader] when it was read from a log (fromLog). Its
// value is copied when the copy fits in maxBytes and why is not
// [ErrTooLarge]; otherwise the copy is a reference: no value, and
// [DeadLetterSizeHeader] says how large it was. The copy goes to rec's
// partition.
func DeadLetter(rec Record, why error, fromLog bool, maxBytes int) Record {
	reason := why.Error()
	if len(reason) > maxReasonBytes {
		reason = reason[:maxReasonBytes]
	}
	hs := append(make([]Header, 0, len(rec.Headers)+4), rec.Headers...)
	if fromLog {
		hs = append(hs,
			Header{Key: DeadLetterPartitionHeader, Value: strconv.AppendInt(nil, int64(rec.Partition), 10)},
			Header{Key: DeadLetterOffsetHeader, Value: strconv.AppendInt(nil, rec.Offset, 10)})
	}
	hs = append(hs, Header{Key: DeadLetterErrorHeader, Value: []byte(reason)})
	dl := Record{Topic: DeadLetterTopic, Partition: rec.Partition, Key: rec.Key, Value: rec.Value, Headers: hs, Time: rec.Time}
	if dl.Size() > maxBytes || errors.Is(why, ErrTooLarge) {
		dl.Value = nil
		dl.Headers = append(dl.Headers, Header{Key: DeadLetterSizeHeader, Value: strconv.AppendInt(nil, int64(len(rec.Value)), 10)})
	}
	return dl
}

// maxReasonBytes bounds the error text a dead letter carries.
const maxReasonBytes = 1024

// ErrTooLarge is why a record over the log's size limit is rejected.
var ErrTooLarge = errors.New("record too large")

// ErrNoRecords reports that the topics asked about hold no records, so the
// times of their first and last records are undefined.
var ErrNoRecords = errors.New("no records")

// RejectedError reports records a log refused for good (too large, or
// invalid for the broker), while it stored every other record of the
// same Write.
type RejectedError struct {
	Rejected []Rejected // in the order of the records given to Write
}

// Rejected is one refused record: its index in the records given to
// Write, and why.
type Rejected struct {
	Index int
	Err   error
}

func (e *RejectedError) Error() string {
	if len(e.Rejected) == 1 {
		return fmt.Sprintf("record %d rejected: %v", e.Rejected[0].Index, e.Rejected[0].Err)
	}
	return fmt.Sprintf("%d records rejected, first (record %d): %v", len(e.Rejected), e.Rejected[0].Index, e.Rejected[0].Err)
}

// Claim is one partition of a topic owned by one group member for one
// generation of the group. Fetch returns records in offset order starting at
// the group's committed offset. Commit stores next as the offset to resume
// from, with metadata for whoever resumes there; it covers every earlier
// offset of the partition.
type Claim interface {
	Partition() int
	// Start returns the committed offset Fetch starts from and the
	// metadata committed with it; offset -1 and "" when the group has
	// committed nothing for the partition (Fetch then starts at the
	// earliest record).
	Start() (offset int64, metadata string)
	Fetch(ctx context.Context) (Record, error)
	Commit(ctx context.Context, next int64, metadata string) error
}

// Rereader is a [Claim] that can read its partition again from any
// offset, as the joiner does to get back a rank record it did not keep.
type Rereader interface {
	// Reread returns a reader of the claim's partition from offset. Records
	// the log no longer has (deleted by retention) are skipped: the first
	// record may have a later offset.
	Reread(ctx context.Context, offset int64) (Reader, error)
}

// ClaimFunc handles one claim until its context ends (the generation ended
// or the consumer stopped) or it fails.
type ClaimFunc func(ctx context.Context, c Claim) error

// Reader reads records of one topic from chosen offsets, all partitions
// merged; records of one partition come in offset order.
type Reader interface {
	Fetch(ctx context.Context) (Record, error)
	Close() error
}
