package learner

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

var _ Commands = (*Learner)(nil)

// fakeCommands answers every command with info and err, and keeps the
// data it was given.
type fakeCommands struct {
	info *eventsv1.ModelInfo
	err  error
	data []byte
}

func (f *fakeCommands) Reset(context.Context) (*eventsv1.ModelInfo, error) { return f.info, f.err }

func (f *fakeCommands) Rollback(context.Context, uint64) (*eventsv1.ModelInfo, error) {
	return f.info, f.err
}

func (f *fakeCommands) Import(_ context.Context, data []byte) (*eventsv1.ModelInfo, error) {
	f.data = data
	return f.info, f.err
}

// serveModels serves svc over bufconn and returns a client.
func serveModels(t *testing.T, svc *Service) eventsv1.ModelServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	eventsv1.RegisterModelServiceServer(gs, svc)
	go gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
	})
	return eventsv1.NewModelServiceClient(conn)
}

// TestServiceCommands checks how ResetModel and ImportModel answer.
func TestServiceCommands(t *testing.T) {
	t.Parallel()
	info := &eventsv1.ModelInfo{Loop: "loop", Version: 7}
	tests := []struct {
		name    string
		cmds    Commands
		loop    string
		code    codes.Code
		message string
	}{
		{"published", &fakeCommands{info: info}, "loop", codes.OK, ""},
		{"no commands", nil, "loop", codes.Unimplemented, "this learner takes no model commands"},
		{"another loop", &fakeCommands{info: info}, "other", codes.NotFound, `unknown loop "other"`},
		{"bad model", &fakeCommands{err: fmt.Errorf("import: %w: read model: file is truncated", ErrBadModel)}, "loop", codes.InvalidArgument, "import: bad model file: read model: file is truncated"},
		{"checkpoint failing", &fakeCommands{err: fmt.Errorf("reset: %w: disk full", errNotPublished)}, "loop", codes.Unavailable, "the learner cannot write its checkpoint; the model is unchanged"},
		{"timed out", &fakeCommands{err: fmt.Errorf("the learner did not answer: %w", context.DeadlineExceeded)}, "loop", codes.DeadlineExceeded, ""},
		{"other failure", &fakeCommands{err: errors.New("secret internals")}, "loop", codes.Internal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := serveModels(t, NewService("loop", NewStore(), tt.cmds))
			check := func(rpc string, got *eventsv1.ModelInfo, err error) {
				t.Helper()
				if st := status.Convert(err); st.Code() != tt.code || (tt.message != "" && st.Message() != tt.message) {
					t.Errorf("%s: %v, want %v %q", rpc, err, tt.code, tt.message)
				}
				if tt.code == codes.OK && !proto.Equal(got, info) {
					t.Errorf("%s: info %v, want %v", rpc, got, info)
				}
			}
			reset, err := c.ResetModel(t.Context(), &eventsv1.ResetModelRequest{Loop: tt.loop})
			check("ResetModel", reset.GetInfo(), err)
			imported, err := c.ImportModel(t.Context(), &eventsv1.ImportModelRequest{Loop: tt.loop, Data: []byte("model")})
			check("ImportModel", imported.GetInfo(), err)
			if f, ok := tt.cmds.(*fakeCommands); ok && tt.code == codes.OK && string(f.data) != "model" {
				t.Errorf("Import got %q", f.data)
			}
		})
	}

	t.Run("shut down", func(t *testing.T) {
		t.Parallel()
		svc := NewService("loop", NewStore(), &fakeCommands{info: info})
		c := serveModels(t, svc)
		svc.Shutdown()
		if _, err := c.ResetModel(t.Context(), &eventsv1.ResetModelRequest{Loop: "loop"}); status.Code(err) != codes.Unavailable {
			t.Errorf("ResetModel after Shutdown: %v, want Unavailable", err)
		}
	})
}

// TestCheckpointFormat01 resumes from a checkpoint written before the
// format had the model's creation time: the checkpoint's time stands in.
func TestCheckpointFormat01(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	model := freshModel(t, bandit.DefaultPolicy)
	b := []byte("PZCKPT01")
	b = binary.AppendUvarint(b, 4)  // version
	b = binary.AppendUvarint(b, 30) // examples
	b = binary.AppendUvarint(b, 1)  // one partition
	b = binary.AppendUvarint(b, 0)
	b = binary.AppendVarint(b, 31)
	b = binary.AppendUvarint(b, 1) // one key
	b = binary.LittleEndian.AppendUint64(b, 42)
	b = binary.AppendUvarint(b, uint64(len(model)))
	b = append(b, model...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	path := filepath.Join(dir, "checkpoint")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	written := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	if err := os.Chtimes(path, written, written); err != nil {
		t.Fatal(err)
	}
	store := NewStore()
	l, err := New(Config{Loop: testLoop, Policy: bandit.DefaultPolicy, ExportEvery: time.Second, Dir: dir, Remember: 10}, testLogger(), store, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Version != 4 || st.Learned != 30 || st.Examples != 30 || !st.ModelCreated.Equal(written) || st.Policy != bandit.DefaultPolicy {
		t.Errorf("resumed from format 01: %+v", st)
	}
	if info := store.Latest().GetInfo(); info.GetVersion() != 4 || info.GetExamples() != 30 || !info.GetModelCreated().AsTime().Equal(written) {
		t.Errorf("published %v", info)
	}

	// Written again, it is format 02 and keeps all of it.
	if err := l.checkpoint(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := unmarshalCheckpoint(data)
	if err != nil || !strings.HasPrefix(string(data), checkpointMagic) || c.version != 5 || c.examples != 30 || c.learned != 30 ||
		!c.created.Equal(written) || c.configured != bandit.DefaultPolicy || c.offsets[0] != 31 || len(c.seen) != 1 || c.seen[0] != 42 {
		t.Errorf("rewritten checkpoint: %+v, %v", c, err)
	}

	// Without a registry, a checkpoint that follows another policy than
	// the flags is refused, as before.
	l2, err := New(Config{Loop: testLoop, Policy: policyB, ExportEvery: time.Second, Dir: dir, Remember: 10}, testLogger(), NewStore(), time.Now)
	if err == nil || !strings.Contains(err.Error(), "use that policy or remove the checkpoint") {
		t.Errorf("New with another policy: %v, %v", l2, err)
	}
}

// TestServiceServers checks that the servers watching a loop are listed
// with the version each said it serves, while their watches are open.
func TestServiceServers(t *testing.T) {
	t.Parallel()
	svc := NewService("loop", NewStore(), nil)
	c := serveModels(t, svc)
	created := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	watch := func(req *eventsv1.WatchModelRequest) {
		t.Helper()
		stream, err := c.WatchModel(t.Context(), req)
		if err == nil {
			_, err = stream.Header() // sent once the watch is listed
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	watch(&eventsv1.WatchModelRequest{Loop: "loop", Server: "b:1", ServingVersion: 3, ServingCreated: timestamppb.New(created)})
	watch(&eventsv1.WatchModelRequest{Loop: "loop", Server: "a:1"})
	watch(&eventsv1.WatchModelRequest{Loop: "loop"}) // a tool: not listed
	got, err := c.ListServers(t.Context(), &eventsv1.ListServersRequest{Loop: "loop"})
	want := &eventsv1.ListServersResponse{Servers: []*eventsv1.ServerInfo{
		{Server: "a:1"}, {Server: "b:1", Version: 3, Created: timestamppb.New(created)}}}
	if err != nil || !proto.Equal(got, want) {
		t.Errorf("ListServers: %v, %v; want %v", got, err, want)
	}
	if _, err := c.ListServers(t.Context(), &eventsv1.ListServersRequest{Loop: "other"}); status.Code(err) != codes.NotFound {
		t.Errorf("ListServers of another loop: %v, want NotFound", err)
	}

	// A server's newer watch replaces its older one, whose end then
	// leaves it listed; the end of its last watch does not.
	older, newer := &eventsv1.ServerInfo{Server: "c:1", Version: 4}, &eventsv1.ServerInfo{Server: "c:1", Version: 5}
	svc.watching("loop2", older)
	svc.watching("loop2", newer)
	svc.unwatching("loop2", older)
	if got := svc.Servers("loop2"); len(got) != 1 || got[0] != newer {
		t.Errorf("after the older watch ended: %v, want %v", got, newer)
	}
	svc.unwatching("loop2", newer)
	if got := svc.Servers("loop2"); len(got) != 0 {
		t.Errorf("after the last watch ended: %v, want none", got)
	}
}

// TestServiceLiveRewards checks how GetLiveRewards answers.
func TestServiceLiveRewards(t *testing.T) {
	t.Parallel()
	svc := NewService("loop", NewStore(), nil)
	c := serveModels(t, svc)
	since := time.Date(2026, 5, 1, 12, 0, 5, 0, time.UTC)
	if _, err := c.GetLiveRewards(t.Context(), &eventsv1.GetLiveRewardsRequest{Loop: "loop"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("without rewards: %v, want Unimplemented", err)
	}
	answer := &eventsv1.GetLiveRewardsResponse{BucketSeconds: 5, Buckets: []*eventsv1.LiveRewardBucket{{
		Start: timestamppb.New(since), Events: 2, Reward: 0.5, Explored: 0.5,
		Baseline: &eventsv1.LiveEstimate{Value: 1, Interval: &eventsv1.LiveInterval{Lower: 0.25, Upper: 1.75}}, Random: &eventsv1.LiveEstimate{Value: 0.5}}}}
	var asked []time.Time
	svc.ServeRewards(func(loop string, since time.Time) (*eventsv1.GetLiveRewardsResponse, bool) {
		asked = append(asked, since)
		return answer, loop == "loop"
	})
	svc.Add("quiet", NewStore(), nil)
	got, err := c.GetLiveRewards(t.Context(), &eventsv1.GetLiveRewardsRequest{Loop: "loop", Since: timestamppb.New(since)})
	if err != nil || !proto.Equal(got, answer) {
		t.Errorf("GetLiveRewards: %v, %v; want %v", got, err, answer)
	}
	if _, err := c.GetLiveRewards(t.Context(), &eventsv1.GetLiveRewardsRequest{Loop: "quiet"}); status.Code(err) != codes.NotFound {
		t.Errorf("a loop without rewards: %v, want NotFound", err)
	}
	if _, err := c.GetLiveRewards(t.Context(), &eventsv1.GetLiveRewardsRequest{Loop: "other"}); status.Code(err) != codes.NotFound {
		t.Errorf("an unknown loop: %v, want NotFound", err)
	}
	if want := []time.Time{since, {}}; len(asked) != 2 || !asked[0].Equal(want[0]) || !asked[1].IsZero() {
		t.Errorf("asked since %v, want %v", asked, want)
	}
}
