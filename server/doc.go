// Package server answers the decision API: it validates requests, scores
// every action with the current model, explores as Vowpal Wabbit's
// epsilon-greedy does, answers (the decision is internal/decide's, which
// the Go client's local inference shares), and appends rank, reward and
// activate records to the event log without making the answer wait for
// the broker. It also logs the ranks local inference decided
// ([Server.LogRanks]) and streams what they are decided with
// ([Server.WatchRankSettings]).
//
// The server never learns and never reads the event log; it reaches the
// learner only through a [ModelSource]. Models are swapped atomically, so a
// Rank sees exactly one model version.
//
// The same methods answer gRPC and Personalizer's REST API ([REST]), which
// maps Personalizer's JSON onto the gRPC types. A [Guard] checks API keys
// (stored hashed, compared in constant time) and per-key rate limits for
// both; a server serves one loop and refuses other loops' keys (admin
// keys are taken everywhere).
//
// Rank follows the loop's live configuration ([Config.Configs],
// [Server.WatchConfig]). [Admin] answers the control plane (configuration,
// policy, model export, import and reset, logs, and loops) over REST and
// gRPC; it reaches the configuration topic, the learner and the log only
// through the interfaces it is given.
package server
