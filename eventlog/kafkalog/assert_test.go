package kafkalog_test

import (
	"context"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

var (
	_ eventlog.Writer = (*kafkalog.Writer)(nil)
	_ eventlog.Reader = (*kafkalog.TopicReader)(nil)
	// The joiner's consumer: eventlog.Mem.Consume minus the group and
	// topic, which a Group carries in its config.
	_ interface {
		Consume(context.Context, eventlog.ClaimFunc) error
	} = (*kafkalog.Group)(nil)
)
