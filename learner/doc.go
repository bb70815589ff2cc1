// Package learner trains a loop's model the way Vowpal Wabbit's
// cb_explore_adf does, online from personalizer.joined ([Learner]) and
// offline from a DSJson file ([Train]), and publishes model versions that
// servers pull ([Store], [Service]).
//
// One learner runs per loop. It checkpoints its model together with the
// offsets it has learned up to, so a restart neither loses nor repeats an
// example, and it drops joined events whose id it has already learned.
// A model version is published only once its checkpoint is written, so
// no server ever holds a version that a restart cannot give back; when
// the checkpoint cannot be written the learner keeps learning in memory
// and retries, it never stops for it. The learner never writes to the
// event log.
package learner
