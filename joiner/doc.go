// Package joiner turns the event log into learnable examples. For each
// partition of personalizer.events it follows every rank until its reward
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
//   - Every rank is judged by the join rules in force when it was made: its
//     record carries the loop's reward wait, default reward and aggregation
//     (RankEvent.rules), so that a configuration change never alters
//     how an earlier rank is joined, nor a replay. A record without rules
//     (from before they were logged) gets the joiner's [Rules]; so does a
//     record whose rules are invalid (a wait not in (0, 30 days], an
//     unknown aggregation, a default reward outside [-1, 1]), counted as
//     BadRules. Backward, Slack and MaxSkew are the joiner's, for all.
//   - An outcome (reward or activation) joins its rank if it is stamped less
//     than the rank's reward wait after the rank and less than Backward
//     before it, and arrives before the watermark passes the window's end.
//     Others are audited: late if their rank is known, dangling if no rank
//     came within Backward of the outcome's time. Neither is ever learned.
//     An outcome that comes before its rank cannot know the rank's wait:
//     it waits Backward past its own time, as the wait does not matter to
//     whether a rank still to come can take it.
//   - A window closes when the watermark reaches rank time + its reward
//     wait; with waits differing per rank, windows close in deadline
//     order, not rank order. Rewards combine with the rank's [Aggregation];
//     none gives its default reward. A deferred rank is learnable only if
//     an activation joined it. Apprentice ranks learn 1 if the model chose
//     the baseline (the first eligible action), else 0, the real reward
//     kept as the original; LoggingOnly ranks are written but not
//     learnable. A rank with rules is learnable by the mode it logged (the
//     one in force when it was made); one without is not learnable if it
//     logged another mode than the joiner's.
//   - A multi-slot rank (a --ccb_explore_adf loop's) is joined slot by
//     slot: a reward names its slot (RewardEvent.slot_id), and when the
//     window closes each slot combines the rewards that name it with the
//     rank's aggregation, or gets its default reward; Apprentice judges
//     each slot by its own baseline; an activation activates every slot.
//     A reward that names no slot of the request (or none) is counted as
//     UnknownSlots and left out of the line. The window keeps a reward's
//     slot as [SlotHash] of its id, in an outcome entry of its own, so
//     that single-slot events keep what they cost.
//   - A repeated rank (same key) and a repeated outcome (same id) count
//     once while their event is remembered: until Backward after its
//     window, after its latest late outcome, or after the window the
//     repeated rank would have had.
//
// run.go is the shell: per claimed partition one goroutine fetches, one
// owns the window, one writes and commits. An input offset is committed
// only after everything the records before it produced is acknowledged,
// and only as far back as open state needs ([Window.Checkpoint]): the
// first record of an event still pending or remembered, or of an outcome
// still waiting for its rank. How long an event is remembered follows
// from its own record (its rank time and wait, its outcomes' times) and
// Backward; the joiner's own wait enters only for records without valid
// rules. A resumed window therefore rebuilds the same state from the same
// records whatever rules they carry, and a rank with a long wait holds
// the committed offset back until it is forgotten. The commit metadata
// carries the watermark there and how far output was written, so the
// next owner replays from the committed offset, rebuilds exactly the
// same state and suppresses what was already written. A rebalance
// repeats nothing; a crash repeats what was written after the last
// commit, byte for byte, and the learner drops the repeats by key. A
// record that does not decode goes to personalizer.deadletter with its
// partition and offset, and the partition goes on.
//
// The window keeps about 140 bytes per pending event, not its rank record:
// when the window closes, the shell takes the rank from a bounded cache of
// recently fetched ranks ([Config.RankCache]) or reads the record again
// from the partition at its offset ([eventlog.Rereader]), forward through
// the partition since windows close in about rank order, checks its key
// against the hash the window kept, and writes the line from it. A rank
// that cannot be read back (retention deleted it, another record is at
// its offset) is counted as Unread and dead-lettered as a reference; the
// partition goes on. A multi-slot rank is checked and rendered as it is
// decoded, each time: its request must decode and its slot decisions fit
// it, else it is a record that does not decode.
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
