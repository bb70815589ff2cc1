// Package server answers the decision API: it validates requests, scores
// every action with the current model, explores as Vowpal Wabbit's
// epsilon-greedy does, answers, and appends rank, reward and activate
// records to the event log without making the answer wait for the broker.
//
// The server never learns and never reads the event log; it reaches the
// learner only through a [ModelSource]. Models are swapped atomically, so a
// Rank sees exactly one model version.
package server
