package client

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// flaky fails the first failures calls of each method with code, then
// answers, and records the event ids it saw.
type flaky struct {
	personalizerv1.UnimplementedPersonalizerServiceServer
	code     codes.Code
	failures int

	mu    sync.Mutex
	calls map[string]int
	ids   []string
}

func (f *flaky) fail(method, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
	f.ids = append(f.ids, id)
	if f.calls[method] <= f.failures {
		return status.Error(f.code, "not now")
	}
	return nil
}

func answer(req *personalizerv1.RankRequest) *personalizerv1.RankResponse {
	return &personalizerv1.RankResponse{EventId: req.GetEventId(), RewardActionId: req.GetActions()[0].GetId()}
}

func (f *flaky) Rank(_ context.Context, req *personalizerv1.RankRequest) (*personalizerv1.RankResponse, error) {
	if err := f.fail("rank", req.GetEventId()); err != nil {
		return nil, err
	}
	return answer(req), nil
}

func (f *flaky) Reward(_ context.Context, req *personalizerv1.RewardRequest) (*personalizerv1.RewardResponse, error) {
	return &personalizerv1.RewardResponse{}, f.fail("reward", req.GetEventId())
}

func (f *flaky) Activate(_ context.Context, req *personalizerv1.ActivateRequest) (*personalizerv1.ActivateResponse, error) {
	return &personalizerv1.ActivateResponse{}, f.fail("activate", req.GetEventId())
}

func (f *flaky) MultiSlotRank(_ context.Context, req *personalizerv1.MultiSlotRankRequest) (*personalizerv1.MultiSlotRankResponse, error) {
	if err := f.fail("multislot", req.GetEventId()); err != nil {
		return nil, err
	}
	return &personalizerv1.MultiSlotRankResponse{EventId: req.GetEventId()}, nil
}

func (f *flaky) MultiSlotReward(_ context.Context, req *personalizerv1.MultiSlotRewardRequest) (*personalizerv1.MultiSlotRewardResponse, error) {
	return &personalizerv1.MultiSlotRewardResponse{}, f.fail("multislot reward", req.GetEventId())
}

// RankStream answers in order; while failures remain, each stream fails
// after answering two requests.
func (f *flaky) RankStream(st personalizerv1.PersonalizerService_RankStreamServer) error {
	for n := 0; ; n++ {
		in, err := st.Recv()
		if err != nil {
			return nil
		}
		req := in.GetRequest()
		if req.GetEventId() == "bad" {
			return status.Error(codes.InvalidArgument, "bad request")
		}
		if n == 2 {
			if err := f.fail("stream", req.GetEventId()); err != nil {
				return err
			}
		}
		if err := st.Send(&personalizerv1.RankStreamResponse{Response: answer(req)}); err != nil {
			return err
		}
	}
}

func newClient(t *testing.T, srv *flaky) *Client {
	t.Helper()
	srv.calls = map[string]int{}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	personalizerv1.RegisterPersonalizerServiceServer(gs, srv)
	go gs.Serve(lis)
	cc, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); gs.Stop() })
	return New(cc, WithRetry(Retry{Attempts: 3, Backoff: time.Millisecond, Max: time.Millisecond}))
}

func request(id string) *personalizerv1.RankRequest {
	req := &personalizerv1.RankRequest{Actions: []*personalizerv1.Action{{Id: "a"}, {Id: "b"}}}
	if id != "" {
		req.EventId = proto.String(id)
	}
	return req
}

func TestRankRetriesWithTheSameEventID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		code  codes.Code
		fails int
		calls int
		ok    bool
	}{
		{"unavailable twice", codes.Unavailable, 2, 3, true},
		{"buffer full twice", codes.ResourceExhausted, 2, 3, true},
		{"unavailable too often", codes.Unavailable, 5, 3, false},
		{"invalid is not retried", codes.InvalidArgument, 1, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := &flaky{code: tt.code, failures: tt.fails}
			c := newClient(t, srv)
			req := request("")
			resp, err := c.Rank(context.Background(), req)
			if (err == nil) != tt.ok || srv.calls["rank"] != tt.calls {
				t.Fatalf("err %v after %d calls, want ok=%v after %d", err, srv.calls["rank"], tt.ok, tt.calls)
			}
			for _, id := range srv.ids {
				if id == "" || id != srv.ids[0] {
					t.Fatalf("attempts used event ids %q, want one id", srv.ids)
				}
			}
			if req.EventId != nil {
				t.Error("Rank modified the caller's request")
			}
			if tt.ok && resp.GetEventId() != srv.ids[0] {
				t.Errorf("response event id %q, want %q", resp.GetEventId(), srv.ids[0])
			}
		})
	}
}

func TestRewardAndActivateRetry(t *testing.T) {
	t.Parallel()
	srv := &flaky{code: codes.Unavailable, failures: 1}
	c := newClient(t, srv)
	if err := c.Reward(context.Background(), "e1", 0.5); err != nil {
		t.Fatal(err)
	}
	if err := c.Activate(context.Background(), "e1"); err != nil {
		t.Fatal(err)
	}
	if srv.calls["reward"] != 2 || srv.calls["activate"] != 2 {
		t.Errorf("calls %v, want 2 of each", srv.calls)
	}
}

// TestMultiSlotRetries: MultiSlotRank retries with the event id it made,
// MultiSlotReward as Reward.
func TestMultiSlotRetries(t *testing.T) {
	t.Parallel()
	srv := &flaky{code: codes.Unavailable, failures: 2}
	c := newClient(t, srv)
	resp, err := c.MultiSlotRank(context.Background(), &personalizerv1.MultiSlotRankRequest{})
	if err != nil || srv.calls["multislot"] != 3 || len(srv.ids) != 3 || srv.ids[0] == "" || srv.ids[1] != srv.ids[0] || srv.ids[2] != srv.ids[0] || resp.GetEventId() != srv.ids[0] {
		t.Fatalf("%v after calls %v with event ids %q (%v)", resp, srv.calls, srv.ids, err)
	}
	if err := c.MultiSlotReward(context.Background(), "e1", &personalizerv1.SlotReward{SlotId: "s", Value: 1}); err != nil || srv.calls["multislot reward"] != 3 {
		t.Errorf("MultiSlotReward after %d calls: %v", srv.calls["multislot reward"], err)
	}
}

func TestRankBatch(t *testing.T) {
	t.Parallel()
	srv := &flaky{code: codes.Unavailable, failures: 2}
	c := newClient(t, srv)
	var reqs []*personalizerv1.RankRequest
	for i := range 10 {
		id := ""
		if i%2 == 0 {
			id = fmt.Sprint("given-", i)
		}
		reqs = append(reqs, request(id))
	}
	resps, err := c.RankBatch(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(resps) != len(reqs) {
		t.Fatalf("%d responses for %d requests", len(resps), len(reqs))
	}
	seen := map[string]bool{}
	for i, resp := range resps {
		if i%2 == 0 && resp.GetEventId() != fmt.Sprint("given-", i) || resp.GetEventId() == "" || seen[resp.GetEventId()] {
			t.Errorf("response %d has event id %q", i, resp.GetEventId())
		}
		seen[resp.GetEventId()] = true
	}
	// Two broken streams, each after two answers: the third stream starts
	// at request 4 with the ids the first stream used.
	if srv.calls["stream"] != 3 {
		t.Errorf("%d streams, want 3", srv.calls["stream"])
	}

	reqs[3] = request("bad")
	resps, err = c.RankBatch(context.Background(), reqs)
	if status.Code(err) != codes.InvalidArgument || len(resps) != 3 {
		t.Errorf("batch with a bad request: %d responses, err %v; want 3 and InvalidArgument", len(resps), err)
	}
}

func TestLoopMetadata(t *testing.T) {
	md, err := Loop("shop").GetRequestMetadata(context.Background())
	if err != nil || len(md) != 1 || md["x-personalizer-loop"] != "shop" {
		t.Fatalf("Loop metadata %v, %v", md, err)
	}
	if Loop("shop").RequireTransportSecurity() {
		t.Error("Loop requires TLS")
	}
}
