// Package client is the Go client of the decision service: Rank, Reward,
// Activate, and RankBatch, which ranks many requests over one RankStream.
//
// Rank gives every request an event id before the first attempt, so a
// retried Rank carries the same id and the service, which seeds its
// exploration with the id, gives the same answer and logs one event.
// client depends only on the generated API in proto/personalizer/v1.
package client
