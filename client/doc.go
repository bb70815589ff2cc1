// Package client is the Go client of the decision service: Rank, Reward,
// Activate, and RankBatch, which ranks many requests over one RankStream;
// and [Local], which ranks in the caller's process (local inference) and
// sends the rank records to the service in batches.
//
// Rank gives every request an event id before the first attempt, so a
// retried Rank carries the same id and the service, which seeds its
// exploration with the id, gives the same answer and logs one event.
// [Client] depends only on the generated API in proto/personalizer/v1;
// [Local] decides with the server's own code (internal/decide, with
// bandit and loop), so that its answers are the service's.
package client
