package server

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/open-personalizer/personalizer/eventlog"
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

// Undecodable request bodies: wire-format garbage, and well-formed messages
// with a string that is not UTF-8.
var (
	malformed        = []byte{0x12, 0x7f, 0x0a}             // field 2, 127 bytes long, 1 there
	rankBadActionID  = []byte{0x12, 0x03, 0x0a, 0x01, 0xff} // actions[0].id "\xff"
	eventIDNotUTF8   = []byte{0x0a, 0x02, 0xc3, 0x28}       // event_id "\xc3("
	streamBadEventID = []byte{0x0a, 0x03, 0x22, 0x01, 0xff} // request.event_id "\xff"
	validRankBytes   = []byte{0x12, 0x03, 0x0a, 0x01, 'a'}  // one action, "a"
)

// TestUndecodableRequests sends requests that do not decode to a server
// registered by [Register]: each is answered InvalidArgument naming the
// message (grpc-go alone answers Internal), passes through the unary
// interceptors like any call, and the server goes on answering.
func TestUndecodableRequests(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	srv := New(Config{Loop: "test"}, NewPublisher(eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1}), BufferLimits{Records: 100, Bytes: 1 << 30}, 0, log), log, time.Now)
	var mu sync.Mutex
	var seen []string // method and code of each call the unary interceptor saw
	intercept := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		mu.Lock()
		seen = append(seen, info.FullMethod+" "+status.Code(err).String())
		mu.Unlock()
		return resp, err
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.UnaryInterceptor(intercept))
	Register(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := context.Background()

	const prefix = "the request is not a valid "
	tests := []struct {
		method string
		body   []byte
		msg    string
	}{
		{personalizerv1.PersonalizerService_Rank_FullMethodName, malformed, prefix + "personalizer.v1.RankRequest message: proto: cannot parse invalid wire-format data"},
		{personalizerv1.PersonalizerService_Rank_FullMethodName, rankBadActionID, prefix + "personalizer.v1.RankRequest message: string field contains invalid UTF-8"},
		{personalizerv1.PersonalizerService_Reward_FullMethodName, eventIDNotUTF8, prefix + "personalizer.v1.RewardRequest message: string field contains invalid UTF-8"},
		{personalizerv1.PersonalizerService_Activate_FullMethodName, malformed, prefix + "personalizer.v1.ActivateRequest message: proto: cannot parse invalid wire-format data"},
		{personalizerv1.PersonalizerService_Activate_FullMethodName, eventIDNotUTF8, prefix + "personalizer.v1.ActivateRequest message: string field contains invalid UTF-8"},
	}
	var want []string
	for _, tt := range tests {
		var out []byte
		err := conn.Invoke(ctx, tt.method, tt.body, &out)
		// protobuf's errors put a space or, to keep callers from matching
		// them, a no-break space after "proto:", chosen per binary.
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || strings.ReplaceAll(st.Message(), "\u00a0", " ") != tt.msg {
			t.Errorf("%s(% x): %v, want InvalidArgument %q", tt.method, tt.body, err, tt.msg)
		}
		want = append(want, tt.method+" InvalidArgument")
	}
	for _, body := range [][]byte{malformed, streamBadEventID} {
		stream, err := conn.NewStream(ctx, &personalizerv1.PersonalizerService_ServiceDesc.Streams[0], personalizerv1.PersonalizerService_RankStream_FullMethodName)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(body); err != nil {
			t.Fatal(err)
		}
		var out []byte
		err = stream.RecvMsg(&out)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message()[:len(prefix)] != prefix {
			t.Errorf("RankStream(% x): %v, want InvalidArgument", body, err)
		}
	}
	// Still serving.
	var out []byte
	if err := conn.Invoke(ctx, personalizerv1.PersonalizerService_Rank_FullMethodName, validRankBytes, &out); err != nil {
		t.Fatalf("a valid Rank after the bad ones: %v", err)
	}
	want = append(want, personalizerv1.PersonalizerService_Rank_FullMethodName+" OK")
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, want) {
		t.Errorf("the interceptor saw %q, want %q", seen, want)
	}
}
