package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/learner"
	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	"github.com/open-personalizer/personalizer/server"
)

// joinerGroup is the joiners' consumer group.
const joinerGroup = "personalizer-joiner"

// kafkaLogs is a loop's logs in Kafka, for the admin API: Personalizer's
// logs are the joined events, which personalizer.joined holds (with what
// was not learned in personalizer.audit and .deadletter); the events in
// personalizer.events are the joiner's input.
type kafkaLogs struct {
	brokers []string
	loops   *loop.Registry
}

// The topics that DELETE /logs empties and logRetentionDays bounds.
var logTopics = []string{eventlog.JoinedTopic, eventlog.AuditTopic, eventlog.DeadLetterTopic}

func (k kafkaLogs) LogProperties(ctx context.Context, _ string) (from, to time.Time, err error) {
	from, to, err = kafkalog.LogTimes(ctx, k.brokers, eventlog.JoinedTopic)
	if errors.Is(err, eventlog.ErrNoRecords) {
		err = fmt.Errorf("%w: %w", server.ErrNoLogs, err)
	}
	return from, to, err
}

// DeleteLogs deletes the joined, audit and dead-letter records up to now,
// and the events the joiners have committed (joined): an event still in
// a reward window stays, so that deleting logs never loses a join.
func (k kafkaLogs) DeleteLogs(ctx context.Context, name string) error {
	// The topics hold every loop's events; Kafka deletes by offset, not
	// by key, so one loop's cannot go alone.
	if loops := k.loops.Loops(); len(loops) > 1 {
		return status.Errorf(codes.FailedPrecondition, "the event log is shared by %d loops: deleting loop %q's events alone is not supported", len(loops), name)
	}
	var errs []error
	for _, topic := range logTopics {
		errs = append(errs, kafkalog.DeleteRecords(ctx, k.brokers, topic, nil))
	}
	committed, err := kafkalog.CommittedOffsets(ctx, k.brokers, joinerGroup, eventlog.EventsTopic)
	if err == nil && len(committed) > 0 {
		err = kafkalog.DeleteRecords(ctx, k.brokers, eventlog.EventsTopic, committed)
	}
	return errors.Join(append(errs, err)...)
}

func (k kafkaLogs) SetRetention(ctx context.Context, days int32) error {
	d := time.Duration(days) * 24 * time.Hour
	var errs []error
	for _, topic := range append([]string{eventlog.EventsTopic}, logTopics...) {
		errs = append(errs, kafkalog.SetRetention(ctx, k.brokers, topic, d))
	}
	return errors.Join(errs...)
}

// localModels resets and imports the models of the learners in this
// process (dev): those its ModelService serves.
type localModels struct{ svc *learner.Service }

func (m localModels) learner(name string) (learner.Commands, error) {
	if l := m.svc.Commands(name); l != nil {
		return l, nil
	}
	return nil, status.Errorf(codes.Unavailable, "loop %q has no learner in this process yet", name)
}

func (m localModels) ResetModel(ctx context.Context, name string) (*eventsv1.ModelInfo, error) {
	l, err := m.learner(name)
	if err != nil {
		return nil, err
	}
	return l.Reset(ctx)
}

func (m localModels) ImportModel(ctx context.Context, name string, data []byte) (*eventsv1.ModelInfo, error) {
	l, err := m.learner(name)
	if err != nil {
		return nil, err
	}
	info, err := l.Import(ctx, data)
	if errors.Is(err, learner.ErrBadModel) {
		err = fmt.Errorf("%w: %w", server.ErrInvalidModel, err)
	}
	return info, err
}
