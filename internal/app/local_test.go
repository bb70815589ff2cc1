package app

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/client"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/joiner"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// TestLocalLearnedOnce ranks with local inference against `personalizer
// dev` and rewards every event; the answer to the first LogRanks batch is
// lost (the call succeeds, the client sees Unavailable), so the client
// sends it again. Every rank is still joined and learned exactly once:
// the joiner counts the batch sent twice as duplicate ranks.
func TestLocalLearnedOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a bound for failures, not a wait
	defer cancel()
	d, _ := startTestDev(t, testConfig(t, t.TempDir()))
	var calls atomic.Int64
	loseFirst := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method == personalizerv1.PersonalizerService_LogRanks_FullMethodName && calls.Add(1) == 1 && err == nil {
			return status.Error(codes.Unavailable, "the answer was lost")
		}
		return err
	}
	conn, err := grpc.NewClient(d.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUnaryInterceptor(loseFirst))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const events, batch = 600, 50
	l, err := client.NewLocal(ctx, conn, client.LocalConfig{MaxBatch: batch, FlushInterval: time.Hour, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := range events {
		req := sim.Request(r, 4, 3, 3)
		req.EventId = proto.String(fmt.Sprint("local-", i))
		resp, err := l.Rank(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Reward(ctx, resp.GetEventId(), float32(i%2)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st != (client.LocalStats{Ranked: events, Logged: events, Retries: 1}) {
		t.Errorf("local stats %+v, want %d ranked and logged, 1 retry", st, events)
	}
	if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= events }); err != nil {
		t.Fatalf("waiting for %d learned events: %v (stats %+v)", events, err, d.learner.Stats())
	}
	if err := d.joiner.Wait(ctx, func(c joiner.Stats) bool { return c.Emitted >= events }); err != nil {
		t.Fatalf("waiting for %d joined events: %v (counters %+v)", events, err, d.joiner.Counters())
	}
	if st := d.learner.Stats(); st.Learned != events || st.Duplicates != 0 || st.Malformed != 0 || st.NotLearnable != 0 {
		t.Errorf("learner stats %+v, want exactly %d learned", st, events)
	}
	if c := d.joiner.Counters(); c.Emitted != events || c.Learnable != events || c.DuplicateRanks != batch || c.Undecodable != 0 {
		t.Errorf("joiner counters %+v, want %d emitted and learnable, %d duplicate ranks", c, events, batch)
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	// Every rank logged twice or once, and every reward once.
	if ps := d.pub.Stats(); ps.Written != 2*events+batch || ps.Refused != 0 || ps.Lost != 0 {
		t.Errorf("publisher stats %+v, want %d written", ps, 2*events+batch)
	}
}

// TestLocalNeedsLoopKey: local inference's calls are authorised as Rank
// is: without a key or with another loop's key WatchRankSettings and
// LogRanks are refused; with the loop's key a Local ranks and its records
// are logged in the loop.
func TestLocalNeedsLoopKey(t *testing.T) {
	t.Parallel()
	a, la := server.NewKey("A", "")
	b, lb := server.NewKey("B", "")
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte(la+"\n"+lb+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	s := startSecure(t, "A", mem, "--api-keys", keys)
	c := s.client(t, nil)
	entry := &personalizerv1.LoggedRank{Request: rankReq("x"), Ranking: []uint32{0, 1}, Probabilities: []float32{0.5, 0.5}, LearningMode: "Online"}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no key", context.Background(), codes.Unauthenticated},
		{"loop B's key", keyed(b), codes.PermissionDenied},
	} {
		if _, err := c.LogRanks(tt.ctx, &personalizerv1.LogRanksRequest{Entries: []*personalizerv1.LoggedRank{entry}}); status.Code(err) != tt.want {
			t.Errorf("LogRanks, %s: %v, want %v", tt.name, err, tt.want)
		}
		st, err := c.WatchRankSettings(tt.ctx, &personalizerv1.WatchRankSettingsRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != tt.want {
			t.Errorf("WatchRankSettings, %s: %v, want %v", tt.name, err, tt.want)
		}
	}
	conn, err := grpc.NewClient(s.api.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(client.APIKey(a)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a bound for failures, not a wait
	defer cancel()
	l, err := client.NewLocal(ctx, conn, client.LocalConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Rank(ctx, rankReq("e1")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st != (client.LocalStats{Ranked: 1, Logged: 1}) {
		t.Errorf("stats %+v, want 1 ranked and logged", st)
	}
	r := mem.Reader(eventlog.EventsTopic, nil)
	rec, err := r.Fetch(ctx)
	if err != nil || string(rec.Key) != "A/e1" {
		t.Errorf("logged %q, %v; want A/e1", rec.Key, err)
	}
}
