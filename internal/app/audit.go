package app

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	"github.com/open-personalizer/personalizer/server"
)

// defaultAuditScan is the default --audit-scan-records.
const defaultAuditScan = 200_000

func auditScanVar(fs *flag.FlagSet, p *int64) {
	fs.Int64Var(p, "audit-scan-records", defaultAuditScan, "records of one partition a decision audit (GET /events/{eventId}) reads at most in each topic to find an event's records")
}

func validateAuditScan(n int64) error {
	if n < 1 {
		return fmt.Errorf("--audit-scan-records must be at least 1, got %d", n)
	}
	return nil
}

// auditChunk is how many records a backward search for a rank reads at a
// time, from the end of the partition back.
const auditChunk = 10_000

// auditLookBehind is how long before its rank the search for an event's
// audited outcomes starts: an outcome may be stamped before its rank
// (the joiner's --join-backward, 2 minutes by default).
const auditLookBehind = 10 * time.Minute

// kafkaDecisions finds an event's records in Kafka for the decision
// audit. An event's records share a partition number: its rank and
// outcomes in personalizer.events (the partition its key hashes to), its
// joined line and audits in personalizer.joined and .audit (the same
// number, modulo their partition count). Each lookup reads at most scan
// records of each topic.
type kafkaDecisions struct {
	insp *kafkalog.Inspector
	scan int64
}

// FindDecision implements [server.DecisionLog]: the rank record is
// searched backwards from the end of its partition in chunks of
// auditChunk records, or forwards from at when it is set; the joined line
// forwards from the first joined record of the rank's time; the audits
// from auditLookBehind before it.
func (k kafkaDecisions) FindDecision(ctx context.Context, key string, at time.Time) (*server.DecisionRecords, error) {
	insp := k.insp
	events, err := insp.Bounds(ctx, eventlog.EventsTopic)
	if err != nil {
		return nil, err
	}
	p := kafkalog.Partition([]byte(key), len(events))
	b := events[p]
	var rank *eventlog.Record
	find := func(rec eventlog.Record) bool {
		if rec.Type() == eventlog.TypeRank && string(rec.Key) == key {
			rank = &rec
			return false
		}
		return true
	}
	var where string
	if !at.IsZero() {
		from, err := insp.OffsetAt(ctx, eventlog.EventsTopic, p, at, b.End)
		if err != nil {
			return nil, err
		}
		from = max(from, b.Start)
		if err := insp.Scan(ctx, eventlog.EventsTopic, p, from, min(b.End, from+k.scan), find); err != nil {
			return nil, err
		}
		where = fmt.Sprintf("in %d records of %s partition %d from %s", min(b.End, from+k.scan)-from, eventlog.EventsTopic, p, at.UTC().Format(time.RFC3339Nano))
	} else {
		end := b.End
		for rank == nil && end > b.Start && b.End-end < k.scan {
			from := max(b.Start, end-auditChunk, b.End-k.scan)
			if err := insp.Scan(ctx, eventlog.EventsTopic, p, from, end, find); err != nil {
				return nil, err
			}
			end = from
		}
		where = fmt.Sprintf("in the last %d records of %s partition %d", b.End-end, eventlog.EventsTopic, p)
	}
	if rank == nil {
		return nil, fmt.Errorf("%w: searched %s (at most --audit-scan-records %d; ?at= a time at or before the rank searches from there)", server.ErrUnknownEvent, where, k.scan)
	}
	recs := &server.DecisionRecords{Rank: *rank}

	joinedFrom := rank.Time
	err = k.scanFrom(ctx, insp, eventlog.JoinedTopic, p, joinedFrom, func(rec eventlog.Record) bool {
		if string(rec.Key) == key {
			recs.Joined = &rec
			return false
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	err = k.scanFrom(ctx, insp, eventlog.AuditTopic, p, rank.Time.Add(-auditLookBehind), func(rec eventlog.Record) bool {
		if string(rec.Key) == key {
			recs.Audits = append(recs.Audits, rec)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if recs.Joined == nil { // still open: the outcomes so far
		from := rank.Offset + 1
		err := insp.Scan(ctx, eventlog.EventsTopic, p, from, min(b.End, from+k.scan), func(rec eventlog.Record) bool {
			if t := rec.Type(); string(rec.Key) == key && (t == eventlog.TypeReward || t == eventlog.TypeActivate) {
				recs.Outcomes = append(recs.Outcomes, rec)
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// scanFrom scans, in topic's partition for events partition p, at most
// k.scan records from the first of time t.
func (k kafkaDecisions) scanFrom(ctx context.Context, insp *kafkalog.Inspector, topic string, p int, t time.Time, fn func(eventlog.Record) bool) error {
	bounds, err := insp.Bounds(ctx, topic)
	if err != nil {
		return err
	}
	q := p % len(bounds) // as the joiner's writer maps partition numbers
	from, err := insp.OffsetAt(ctx, topic, q, t, bounds[q].End)
	if err != nil {
		return err
	}
	from = max(from, bounds[q].Start)
	return insp.Scan(ctx, topic, q, from, min(bounds[q].End, from+k.scan), fn)
}

// The in-process learners' model history (dev): the ModelService's own
// answers, as a server in another process gets them.

func (m localModels) ModelVersion(ctx context.Context, name string, version uint64) (*eventsv1.GetModelResponse, error) {
	return m.svc.GetModel(ctx, &eventsv1.GetModelRequest{Loop: name, Version: version})
}

func (m localModels) RollbackModel(ctx context.Context, name string, version uint64) (*eventsv1.ModelInfo, error) {
	resp, err := m.svc.RollbackModel(ctx, &eventsv1.RollbackModelRequest{Loop: name, Version: version})
	if err != nil {
		return nil, err
	}
	return resp.GetInfo(), nil
}
