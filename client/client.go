package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Client calls the decision service. It is safe for concurrent use.
type Client struct {
	pc    personalizerv1.PersonalizerServiceClient
	retry Retry
}

// Retry is how a [Client] retries calls that failed for a reason that may
// pass: the service unavailable or its event buffer full.
type Retry struct {
	Attempts int           // total attempts per call; 1 disables retries
	Backoff  time.Duration // wait before the second attempt, doubled each time
	Max      time.Duration // longest wait between attempts
}

// DefaultRetry makes up to 4 attempts over about a second.
var DefaultRetry = Retry{Attempts: 4, Backoff: 100 * time.Millisecond, Max: time.Second}

// Option configures a [Client].
type Option interface{ apply(*Client) }

type optionFunc func(*Client)

func (f optionFunc) apply(c *Client) { f(c) }

// WithRetry replaces [DefaultRetry].
func WithRetry(r Retry) Option { return optionFunc(func(c *Client) { c.retry = r }) }

// New returns a client over cc, a connection from grpc.NewClient.
func New(cc grpc.ClientConnInterface, opts ...Option) *Client {
	c := &Client{pc: personalizerv1.NewPersonalizerServiceClient(cc), retry: DefaultRetry}
	for _, o := range opts {
		o.apply(c)
	}
	c.retry.Attempts = max(c.retry.Attempts, 1)
	return c
}

// Rank ranks req's actions. A request without an event id gets a new one
// first, so that retries reuse it; req itself is not modified.
func (c *Client) Rank(ctx context.Context, req *personalizerv1.RankRequest) (*personalizerv1.RankResponse, error) {
	req = withEventID(req)
	var resp *personalizerv1.RankResponse
	err := c.do(ctx, func(ctx context.Context) (err error) {
		resp, err = c.pc.Rank(ctx, req)
		return err
	})
	return resp, err
}

// Reward reports value, in [-1, 1], for the event eventID.
func (c *Client) Reward(ctx context.Context, eventID string, value float32) error {
	return c.do(ctx, func(ctx context.Context) error {
		_, err := c.pc.Reward(ctx, &personalizerv1.RewardRequest{EventId: eventID, Value: value})
		return err
	})
}

// Activate activates the deferred event eventID, single- or multi-slot.
func (c *Client) Activate(ctx context.Context, eventID string) error {
	return c.do(ctx, func(ctx context.Context) error {
		_, err := c.pc.Activate(ctx, &personalizerv1.ActivateRequest{EventId: eventID})
		return err
	})
}

// MultiSlotRank fills req's slots, each with an action no earlier slot
// took and the slot does not exclude; only a multi-slot loop answers it.
// A request without an event id gets a new one first, so that retries
// reuse it; req itself is not modified.
func (c *Client) MultiSlotRank(ctx context.Context, req *personalizerv1.MultiSlotRankRequest) (*personalizerv1.MultiSlotRankResponse, error) {
	if req.EventId == nil {
		req = &personalizerv1.MultiSlotRankRequest{
			ContextFeatures: req.ContextFeatures,
			Actions:         req.Actions,
			Slots:           req.Slots,
			EventId:         proto.String(rand.Text()),
			DeferActivation: req.DeferActivation,
		}
	}
	var resp *personalizerv1.MultiSlotRankResponse
	err := c.do(ctx, func(ctx context.Context) (err error) {
		resp, err = c.pc.MultiSlotRank(ctx, req)
		return err
	})
	return resp, err
}

// MultiSlotReward reports rewards, each a slot's id and a value in
// [-1, 1], for the multi-slot event eventID. A slot no call rewards gets
// the loop's default reward.
func (c *Client) MultiSlotReward(ctx context.Context, eventID string, rewards ...*personalizerv1.SlotReward) error {
	return c.do(ctx, func(ctx context.Context) error {
		_, err := c.pc.MultiSlotReward(ctx, &personalizerv1.MultiSlotRewardRequest{EventId: eventID, Rewards: rewards})
		return err
	})
}

// RankBatch ranks every request over one RankStream and returns the
// responses in request order. If the stream breaks for a reason worth
// retrying, the requests not yet answered are sent again on a new stream,
// with the same event ids. An invalid request fails the batch; the
// responses before it are returned with the error.
func (c *Client) RankBatch(ctx context.Context, reqs []*personalizerv1.RankRequest) ([]*personalizerv1.RankResponse, error) {
	reqs = append([]*personalizerv1.RankRequest(nil), reqs...)
	for i, r := range reqs {
		reqs[i] = withEventID(r)
	}
	resps := make([]*personalizerv1.RankResponse, 0, len(reqs))
	err := c.do(ctx, func(ctx context.Context) error {
		return c.stream(ctx, reqs[len(resps):], &resps)
	})
	return resps, err
}

// stream sends reqs on one stream and appends the responses to resps.
func (c *Client) stream(ctx context.Context, reqs []*personalizerv1.RankRequest, resps *[]*personalizerv1.RankResponse) error {
	if len(reqs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the sender if the receiver fails first
	st, err := c.pc.RankStream(ctx)
	if err != nil {
		return err
	}
	sendErr := make(chan error, 1)
	go func() {
		for _, r := range reqs {
			if err := st.Send(&personalizerv1.RankStreamRequest{Request: r}); err != nil {
				sendErr <- err // the receiver sees why from Recv
				return
			}
		}
		sendErr <- st.CloseSend()
	}()
	for range reqs {
		resp, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return status.Error(codes.Unavailable, "rank stream ended early")
			}
			return err
		}
		*resps = append(*resps, resp.GetResponse())
	}
	return <-sendErr
}

// do runs call until it succeeds, fails for good, or runs out of attempts.
func (c *Client) do(ctx context.Context, call func(context.Context) error) error {
	wait := c.retry.Backoff
	for attempt := 1; ; attempt++ {
		err := call(ctx)
		if err == nil || attempt >= c.retry.Attempts || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (giving up retrying after: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, c.retry.Max)
	}
}

// retryable reports errors that a later attempt may not meet: the service
// or the connection is away, or the event buffer is full.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// withEventID returns req with an event id: req itself if it has one, else
// a shallow copy (a deep clone of a large request costs more than the
// call) that shares everything but the id.
func withEventID(req *personalizerv1.RankRequest) *personalizerv1.RankRequest {
	if req.EventId != nil {
		return req
	}
	return &personalizerv1.RankRequest{
		ContextFeatures: req.ContextFeatures,
		Actions:         req.Actions,
		ExcludedActions: req.ExcludedActions,
		EventId:         proto.String(rand.Text()),
		DeferActivation: req.DeferActivation,
	}
}
