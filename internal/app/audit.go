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

// A backward search for a rank reads the last auditFirstChunk records of
// the partition, then each time twice as many before them, up to
// auditMaxChunk at a time: a recent event costs little, an old one few
// fetches more than reading forward would.
const (
	auditFirstChunk = 1_000
	auditMaxChunk   = 64_000
)

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
// searched backwards from the end of its partition in growing chunks, or
// forwards from at when it is set; the joined line
// forwards from the first joined record of the rank's time; the audits
// from auditLookBehind before it. A lookup takes about 7 round trips to
// the broker besides the fetches of its scans.
func (k kafkaDecisions) FindDecision(ctx context.Context, key string, at time.Time) (*server.DecisionRecords, error) {
	counts, err := k.insp.PartitionCounts(ctx, eventlog.EventsTopic, eventlog.JoinedTopic, eventlog.AuditTopic)
	if err != nil {
		return nil, err
	}
	p := kafkalog.Partition([]byte(key), counts[eventlog.EventsTopic])
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
		from, err := k.insp.OffsetAt(ctx, eventlog.EventsTopic, p, at)
		if err != nil {
			return nil, err
		}
		if from >= 0 {
			if err := k.insp.Scan(ctx, eventlog.EventsTopic, p, from, from+k.scan, find); err != nil {
				return nil, err
			}
		}
		where = fmt.Sprintf("at most %d records of %s partition %d from %s", k.scan, eventlog.EventsTopic, p, at.UTC().Format(time.RFC3339Nano))
	} else {
		end, err := k.insp.EndOffset(ctx, eventlog.EventsTopic, p)
		if err != nil {
			return nil, err
		}
		// Records before the log start are skipped by Scan; chunks
		// below it read nothing.
		for to, chunk := end, int64(auditFirstChunk); rank == nil && to > 0 && end-to < k.scan; chunk = min(2*chunk, auditMaxChunk) {
			from := max(0, to-chunk, end-k.scan)
			if err := k.insp.Scan(ctx, eventlog.EventsTopic, p, from, to, find); err != nil {
				return nil, err
			}
			to = from
		}
		where = fmt.Sprintf("the last %d records of %s partition %d", min(end, k.scan), eventlog.EventsTopic, p)
	}
	if rank == nil {
		return nil, fmt.Errorf("%w: searched %s (--audit-scan-records %d; ?at=, a time at or before the rank, searches forwards from there)", server.ErrUnknownEvent, where, k.scan)
	}
	recs := &server.DecisionRecords{Rank: *rank}

	// The joiner writes an event's lines to the same partition number.
	err = k.scanFrom(ctx, eventlog.JoinedTopic, p%counts[eventlog.JoinedTopic], rank.Time, func(rec eventlog.Record) bool {
		if string(rec.Key) == key {
			recs.Joined = &rec
			return false
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	err = k.scanFrom(ctx, eventlog.AuditTopic, p%counts[eventlog.AuditTopic], rank.Time.Add(-auditLookBehind), func(rec eventlog.Record) bool {
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
		err := k.insp.Scan(ctx, eventlog.EventsTopic, p, from, from+k.scan, func(rec eventlog.Record) bool {
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

// scanFrom scans at most k.scan records of partition p of topic from the
// first of time t.
func (k kafkaDecisions) scanFrom(ctx context.Context, topic string, p int, t time.Time, fn func(eventlog.Record) bool) error {
	from, err := k.insp.OffsetAt(ctx, topic, p, t)
	if err != nil || from < 0 {
		return err
	}
	return k.insp.Scan(ctx, topic, p, from, from+k.scan, fn)
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

func (m localModels) ListModels(ctx context.Context, name string) ([]*eventsv1.ModelInfo, error) {
	resp, err := m.svc.ListModels(ctx, &eventsv1.ListModelsRequest{Loop: name})
	if err != nil {
		return nil, err
	}
	return resp.GetModels(), nil
}
