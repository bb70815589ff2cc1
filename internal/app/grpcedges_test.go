package app

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// rawCodec sends []byte messages as they are, whatever they hold, and
// receives messages into *[]byte: a client that can send anything.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// TestUndecodableGRPCRequests sends requests that do not decode to the
// API as dev and server serve it (their codec, interceptors and log):
// malformed protobuf and invalid UTF-8 get InvalidArgument, each call is
// logged at Info, nothing at ERROR, and the process goes on serving.
func TestUndecodableGRPCRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, _, drain := startTestAPI(t, securityConfig{}, log)
	conn, err := grpc.NewClient(a.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := grpc.ForceCodecV2(rawCodec{})
	tests := []struct {
		method string
		body   []byte
	}{
		{personalizerv1.PersonalizerService_Rank_FullMethodName, []byte{0x12, 0x7f, 0x0a}},                           // actions[0]: 127 bytes long, 1 there
		{personalizerv1.PersonalizerService_Rank_FullMethodName, []byte{0x12, 0x03, 0x0a, 0x01, 0xff}},               // actions[0].id "\xff"
		{personalizerv1.PersonalizerService_Reward_FullMethodName, []byte{0x0a, 0x01, 0xff, 0x15, 0, 0, 0x80, 0x3f}}, // event_id "\xff", value 1
		{personalizerv1.PersonalizerService_Activate_FullMethodName, []byte{0x0a, 0x01, 0xff}},
	}
	var want []string
	for _, tt := range tests {
		var out []byte
		if err := conn.Invoke(ctx, tt.method, tt.body, &out, raw); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s(% x): %v, want InvalidArgument", tt.method, tt.body, err)
		}
		want = append(want, "INFO "+tt.method[len("/personalizer.v1.PersonalizerService/"):]+" InvalidArgument")
	}
	stream, err := conn.NewStream(ctx, &personalizerv1.PersonalizerService_ServiceDesc.Streams[0], personalizerv1.PersonalizerService_RankStream_FullMethodName, raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg([]byte{0x0a, 0x05, 0x12, 0x03, 0x0a, 0x01, 0xff}); err != nil { // request.actions[0].id "\xff"
		t.Fatal(err)
	}
	var out []byte
	if err := stream.RecvMsg(&out); status.Code(err) != codes.InvalidArgument {
		t.Errorf("RankStream: %v, want InvalidArgument", err)
	}
	want = append(want, "INFO RankStream InvalidArgument")
	// Still serving.
	if _, err := personalizerv1.NewPersonalizerServiceClient(conn).Rank(ctx, rankRequest("after")); err != nil {
		t.Fatalf("Rank after the undecodable requests: %v", err)
	}

	drain()
	var got []string
	for _, e := range parseLog(t, logs.String()) {
		if e.Level == "ERROR" {
			t.Errorf("logged at ERROR: %+v", e)
		}
		if e.Msg == "finished call" && e.Method != "" {
			got = append(got, e.Level+" "+e.Method+" "+e.Code)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("finished calls logged %q, want %q", got, want)
	}
}

// TestRankStreamCancel cancels RankStream calls from the client, each
// after an answer: each ends Canceled and is logged at Info, not as an
// Unknown error at ERROR.
func TestRankStreamCancel(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, _, drain := startTestAPI(t, securityConfig{}, log)
	conn, err := grpc.NewClient(a.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := personalizerv1.NewPersonalizerServiceClient(conn)
	// The handler sees the cancellation both as its context ending and as
	// Recv failing; which it notices first varies, so cancel several.
	const streams = 20
	var want []string
	for i := range streams {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := client.RankStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&personalizerv1.RankStreamRequest{Request: rankRequest(fmt.Sprint("stream-", i))}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("Recv after cancel: %v", err)
		}
		want = append(want, "INFO RankStream Canceled")
	}

	drain() // waits for every handler to return
	var got []string
	for _, e := range parseLog(t, logs.String()) {
		if e.Level == "ERROR" {
			t.Errorf("logged at ERROR: %+v", e)
		}
		if e.Msg == "finished call" {
			got = append(got, e.Level+" "+e.Method+" "+e.Code)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("finished calls logged %q, want %d of %q", got, streams, want[0])
	}
}
