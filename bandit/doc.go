// Package bandit is a contextual-bandit learner that learns exactly like
// Vowpal Wabbit 9.11.2 run with --cb_explore_adf: the same feature hashing,
// quadratic interactions, update rule, cb_type reductions (mtr, ips, dr),
// epsilon-greedy exploration and progressive loss, so that its predictions
// match VW's event by event.
//
// It owns the example representation ([Event], [Example]), the DSJson reader
// ([DSJSONParser]), learning policies ([ParsePolicy]), models ([Model]: predict,
// learn, save, load) and action sampling ([SampleIndex]).
//
// Invariants: bandit performs no I/O (models are written to and read from the
// io.Writer and io.Reader it is given), starts no goroutines and never reads
// the clock; it is deterministic given its inputs. It imports only the
// standard library. A [Model] may be read by many goroutines at once
// ([Model.Predict], [Model.WriteTo], [Model.Clone]) as long as none of them
// calls [Model.Learn] on it.
package bandit
