// Package learner trains a loop's model the way Vowpal Wabbit's
// cb_explore_adf (ccb_explore_adf for a multi-slot policy) does, online
// from personalizer.joined ([Learner]) and offline from a DSJson file
// ([Train]) or a range of the joined log (a policy change's retrain), and
// publishes model versions that servers pull ([Store], [Service]).
//
// One learner runs per loop. It checkpoints its model together with the
// offsets it has learned up to, so a restart neither loses nor repeats an
// example, and it drops joined events whose id it has already learned.
// A model version is published only once its checkpoint is written, so
// no server ever holds a version that a restart cannot give back; when
// the checkpoint cannot be written the learner keeps learning in memory
// and retries, it never stops for it. The learner never writes to the
// event log.
//
// The model belongs to the goroutine of [Learner.Run], and nothing else
// touches it: resets and imports ([Learner.Reset], [Learner.Import],
// which [Service] passes on from ModelService) and the loop's live
// configuration ([Config.Configs]: export frequency and policy) are
// carried out there, one at a time, between joined events. Version
// numbers only increase, whatever replaced the model; every version says
// when its model was created (the first model, the last reset, import or
// policy change) and how many examples it learned since.
//
// A policy change retrains: a new model of the new policy learns the
// joined events of the retrain window ([Config.RetrainWindow]) up to
// where the live learner stands, with a dedupe set of its own, and is
// swapped in only when done. Meanwhile the old model keeps serving and
// live learning waits; a retrain that fails changes nothing and is tried
// again later.
//
// One trainer does all the learning but the live learner's: an [Engine]
// reads DSJson lines from a source of [Examples], parses them into
// events (in a goroutine of its own, while another learns), predicts and
// learns them with one model as VW does (or only predicts, with Test),
// keeps VW's counts ([Counts], [Summary]) and tells a [Report] of every
// line, of the best pass and of the summary. The sources are
// [FileExamples] (a DSJson file, gzip-compressed or not) and
// [JoinedExamples] (one loop's records of personalizer.joined between
// two sets of offsets, without repeats). [Train] is the engine on a file
// with VW's progress table, -p predictions and model files as its
// report; a policy change's retrain is the engine on the joined log with
// progress logging and [Stats.RetrainLearned] as its report. Offline
// evaluation is meant to be another report on the same sources (IPS and
// SNIPS estimates of a policy from each [Step]'s event, label and
// prediction), not another reader or another training loop. The live
// learner ([Learner.Run]) learns record by record between commands and
// shares with [JoinedExamples] only the filter on the loop and the
// dedupe.
package learner
