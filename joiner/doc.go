// Package joiner turns the event log into learnable examples. For each
// partition of personalizer.events it holds every rank until its reward
// window closes, by event time, applies Personalizer's reward rules, and
// writes one DSJson line per event to personalizer.joined.
//
// join.go is the pure state machine ([Window]): no I/O, no goroutines, no
// clock; the same input gives the same output. run.go is the shell: fetch,
// join, write, and commit an input offset only once everything before it is
// written and acknowledged. Output is at-least-once; the learner drops
// repeated event ids.
package joiner
