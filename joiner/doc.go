// Package joiner turns the event log into learnable examples. For each
// partition of personalizer.events it holds every rank until its reward
// window closes, by event time, applies Personalizer's reward rules, and
// writes one DSJson line per rank to personalizer.joined, in the same
// partition number.
//
// join.go is the pure state machine ([Window]): no I/O, no goroutines, no
// clock. Time is the records' timestamps; the watermark is the newest
// record time of the partition minus [Rules.Slack], moved on idle
// partitions by tick records the joiner writes. The same records give the
// same output, byte for byte.
//
// The rules, as [Window] applies them:
//   - An outcome (reward or activation) joins its rank if it is stamped less
//     than RewardWait after the rank and less than Backward before it, and
//     arrives before the watermark passes the window's end. Others are
//     audited: late if their rank is known, dangling if no rank came within
//     Backward of the outcome's time. Neither is ever learned.
//   - A window closes when the watermark reaches rank time + RewardWait.
//     Rewards combine with the loop's [Aggregation]; none gives
//     DefaultReward. A deferred rank is learnable only if an activation
//     joined it. Apprentice ranks learn 1 if the model chose the baseline
//     (the first eligible action), else 0, the real reward kept as the
//     original; LoggingOnly ranks and ranks of another mode than the loop's
//     are written but not learnable.
//   - A repeated rank (same key) and a repeated outcome (same id) count
//     once while their event is remembered: until Backward after its
//     window, or after its latest late outcome.
//
// run.go is the shell: per claimed partition one goroutine fetches, one
// owns the window, one writes and commits. An input offset is committed
// only after everything the records before it produced is acknowledged,
// and only as far back as open state needs ([Window.Checkpoint]): the
// first record of an event still pending or remembered, or of an outcome
// still waiting for its rank. The commit metadata carries the watermark
// there and how far output was written, so the next owner replays from the
// committed offset, rebuilds exactly the same state and suppresses what was
// already written. A rebalance repeats nothing; a crash repeats what was
// written after the last commit, byte for byte, and the learner drops the
// repeats by key. A record that does not decode goes to
// personalizer.deadletter with its partition and offset, and the partition
// goes on.
//
// The joiner never reads the wall clock inside the join: now only stamps
// tick records and paces commits.
//
// A rank record's W3C trace context (its traceparent header) rides along
// with the event; when the window closes, the shell records the joiner's
// span as a child of it and gives the joined line that span's context, so
// the learner's span joins the same trace. With a tracer provider the
// header names the joiner's span, which differs from one replay to the
// next; the line itself does not.
package joiner
