// Package bandit is a contextual-bandit learner that learns exactly like
// Vowpal Wabbit 9.11.2 run with --cb_explore_adf: the same feature hashing
// (--hash strings or all), interactions (-q, --cubic, --interactions, with
// wildcards), update rules (adaptive, normalized, invariant and plain SGD,
// --l1, --l2), cb_type reductions (mtr, ips, dr), exploration (epsilon-greedy,
// --first, --softmax, --squarecb, --bag) and progressive loss, so that its
// predictions match VW's event by event.
//
// It owns the example representation ([Event], [Example]), the DSJson reader
// ([DSJSONParser], single- and multi-slot lines), learning policies
// ([ParsePolicy]), models ([Model]: predict, learn, save, load, dump as
// text) and action sampling ([SampleIndex]).
//
// Invariants: bandit performs no I/O (models are written to and read from the
// io.Writer and io.Reader it is given), starts no goroutines and never reads
// the clock; it is deterministic given its inputs: the same events in the
// same order give the same models bit for bit, whether or not events were
// prepared ([Event.Prepare]) on another goroutine. It imports only the
// standard library. Learning and scoring allocate nothing per event once
// their scratch memory ([Prediction], reused [Event]s) has grown. A [Model]
// may be read by many goroutines at once ([Model.Predict], [Model.WriteTo],
// [Model.Clone]) as long as none of them calls [Model.Learn] on it.
package bandit
