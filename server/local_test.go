package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/client"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// localEnv is a server with its AdminService over bufconn, its records in
// an in-memory log, and a connection to it.
type localEnv struct {
	srv  *Server
	mem  *eventlog.Mem
	conn *grpc.ClientConn
	// drain stops the publisher once it has written every record queued.
	drain func()
}

// records returns the events logged, after draining the publisher.
func (e *localEnv) records() []eventlog.Record {
	e.drain()
	var recs []eventlog.Record
	for p := range e.mem.Partitions(eventlog.EventsTopic) {
		recs = append(recs, e.mem.Records(eventlog.EventsTopic, p)...)
	}
	return recs
}

// newLocalEnv serves a server of cfg (Loop set here); opts are more
// server options (interceptors).
func newLocalEnv(t testing.TB, cfg Config, opts ...grpc.ServerOption) *localEnv {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 4})
	pub := NewPublisher(mem, BufferLimits{Records: 1 << 16, Bytes: 1 << 30}, 0, log)
	cfg.Loop = "test"
	srv := New(cfg, pub, log, func() time.Time { return testNow })
	ctx, cancel := context.WithCancel(context.Background())
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(ctx, time.Second) }()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(opts...)
	Register(gs, srv)
	RegisterAdmin(gs, NewAdmin(srv, AdminConfig{}))
	go gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	drain := sync.OnceFunc(func() { cancel(); <-pubDone })
	t.Cleanup(func() {
		conn.Close()
		srv.Shutdown()
		gs.Stop()
		drain()
	})
	return &localEnv{srv: srv, mem: mem, conn: conn, drain: drain}
}

// trainedModel is a model of policy args that learned from reqs, as a
// published version v.
func trainedModel(t testing.TB, args string, reqs []*personalizerv1.RankRequest, v uint64) *eventsv1.GetModelResponse {
	t.Helper()
	m := bandit.NewModel(mustParse(t, args))
	var ev bandit.Event
	var pred bandit.Prediction
	for i, req := range reqs {
		ev.Reset()
		features.Build(&ev, req.GetContextFeatures(), req.GetActions())
		ev.SetLabel(i%len(req.Actions), -1+float32(v%3)/2, 0.5)
		m.Learn(&ev, &pred)
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return versionOf(buf.Bytes(), v)
}

// localRequests are n requests of 2 to 8 actions, some excluded, some
// deferred, each with its event id.
func localRequests(n int, seed uint64) []*personalizerv1.RankRequest {
	r := rand.New(rand.NewPCG(seed, 7))
	reqs := make([]*personalizerv1.RankRequest, n)
	for i := range reqs {
		req := sim.Request(r, 2+r.IntN(7), 1+r.IntN(4), 1+r.IntN(4))
		if i%5 == 0 {
			req.ExcludedActions = []string{req.Actions[r.IntN(len(req.Actions))].GetId()}
		}
		req.DeferActivation = i%7 == 0
		req.EventId = proto.String(fmt.Sprintf("e-%d-%d", seed, i))
		reqs[i] = req
	}
	return reqs
}

func newLocal(t testing.TB, conn grpc.ClientConnInterface, cfg client.LocalConfig) *client.Local {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := client.NewLocal(ctx, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestLocalMatchesRemote: 10,000 requests get the same answer (ranking,
// probabilities, model version) from local inference as from the
// service's Rank, with the same model and event ids, in every learning
// mode and before the first model; and each local rank's record, sent
// through LogRanks, is byte for byte the record Rank logged for it.
func TestLocalMatchesRemote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		mode  eventsv1.LearningMode
		model bool
		n     int
	}{
		{"online", eventsv1.LearningMode_LEARNING_MODE_ONLINE, true, 10_000},
		{"apprentice", eventsv1.LearningMode_LEARNING_MODE_APPRENTICE, true, 500},
		{"logging only", eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY, true, 500},
		{"before the first model", eventsv1.LearningMode_LEARNING_MODE_ONLINE, false, 500},
	}
	for k, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newLocalEnv(t, Config{LearningMode: tt.mode})
			if tt.model {
				if err := e.srv.Load(trainedModel(t, bandit.DefaultPolicy, localRequests(200, 99), 3)); err != nil {
					t.Fatal(err)
				}
			}
			l := newLocal(t, e.conn, client.LocalConfig{})
			remote := client.New(e.conn)
			ctx := context.Background()
			reqs := localRequests(tt.n, uint64(k))
			for i, req := range reqs {
				want, err := remote.Rank(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := l.Rank(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, want) {
					t.Fatalf("request %d: local\n%v\nremote\n%v", i, got, want)
				}
				if tt.model && want.GetModelVersion() != "3" {
					t.Fatalf("model version %q, want 3", want.GetModelVersion())
				}
			}
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if st := l.Stats(); st != (client.LocalStats{Ranked: int64(tt.n), Logged: int64(tt.n)}) {
				t.Errorf("stats %+v, want %d ranked and logged", st, tt.n)
			}
			byKey := map[string][][]byte{}
			for _, rec := range e.records() {
				byKey[string(rec.Key)] = append(byKey[string(rec.Key)], rec.Value)
			}
			if len(byKey) != tt.n {
				t.Fatalf("%d events logged, want %d", len(byKey), tt.n)
			}
			for key, vs := range byKey {
				if len(vs) != 2 || !bytes.Equal(vs[0], vs[1]) {
					t.Fatalf("event %s: %d records, the local one unlike Rank's", key, len(vs))
				}
			}
		})
	}
}

// TestLocalModelSwapIsAtomic: while the service swaps model versions,
// every local answer is the one its reported model version gives, with
// the settings in force: the model and its version swap together.
func TestLocalModelSwapIsAtomic(t *testing.T) {
	t.Parallel()
	e := newLocalEnv(t, Config{})
	train := localRequests(100, 42)
	versions := map[string]*decide.Model{}
	load := func(v uint64) {
		mv := trainedModel(t, bandit.DefaultPolicy, train[:int(v)*10], v)
		m, err := decide.LoadModel(mv.GetData(), mv.GetInfo().GetSha256(), v)
		if err != nil {
			t.Fatal(err)
		}
		versions[m.Version] = m
		if err := e.srv.Load(mv); err != nil {
			t.Fatal(err)
		}
	}
	load(1)
	l := newLocal(t, e.conn, client.LocalConfig{Buffer: 1 << 16})
	defer l.Close(context.Background())
	ctx := context.Background()
	reqs := localRequests(500, 5)
	type answer struct {
		i    int
		resp *personalizerv1.RankResponse
	}
	answers := make([][]answer, 2)
	var swapped atomic.Bool
	var wg sync.WaitGroup
	for w := range answers {
		wg.Go(func() { // ranks until the last swap, and once more through reqs
			stop := math.MaxInt
			for i := w; i < stop; i += len(answers) {
				resp, err := l.Rank(ctx, reqs[i%len(reqs)])
				if err != nil {
					t.Error(err)
					return
				}
				answers[w] = append(answers[w], answer{i % len(reqs), resp})
				if stop == math.MaxInt && swapped.Load() {
					stop = i + len(reqs)
				}
			}
		})
	}
	for v := uint64(2); v <= 9; v++ {
		load(v)
		if err := l.WaitModel(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	swapped.Store(true)
	wg.Wait()
	set := e.srv.def.live.Load().set
	var sc decide.Scratch
	seen := map[string]int{}
	for _, as := range answers {
		for _, a := range as {
			m := versions[a.resp.GetModelVersion()]
			if m == nil {
				t.Fatalf("request %d: model version %q was never published", a.i, a.resp.GetModelVersion())
			}
			seen[m.Version]++
			req := reqs[a.i]
			d, err := sc.Decide(req, req.SizeVT(), req.GetEventId(), &set, m)
			if err != nil {
				t.Fatal(err)
			}
			if want := d.Response(req); !proto.Equal(a.resp, want) {
				t.Fatalf("request %d answered\n%v\nbut version %s gives\n%v", a.i, a.resp, m.Version, want)
			}
		}
	}
	t.Logf("answers per model version: %v", seen)
	if l.ModelVersion() != "9" {
		t.Errorf("model version %q after the swaps, want 9", l.ModelVersion())
	}
}

// TestLocalRefusesBadChecksum: a model version whose bytes do not match
// its SHA-256 is refused and counted; the client fetches it again and
// uses it once it arrives intact. decide.LoadModel refuses it too.
func TestLocalRefusesBadChecksum(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	corrupt := 1 // exports to damage
	e := newLocalEnv(t, Config{}, grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod != personalizerv1.AdminService_ExportModel_FullMethodName {
			return h(srv, ss)
		}
		mu.Lock()
		damage := corrupt > 0
		corrupt--
		mu.Unlock()
		return h(srv, &damaging{ServerStream: ss, on: damage})
	}))
	mv := trainedModel(t, bandit.DefaultPolicy, localRequests(20, 1), 4)
	if err := e.srv.Load(mv); err != nil {
		t.Fatal(err)
	}
	l := newLocal(t, e.conn, client.LocalConfig{Backoff: time.Millisecond})
	defer l.Close(context.Background())
	if st := l.Stats(); st.ModelErrors != 1 || l.ModelVersion() != "4" {
		t.Errorf("after one damaged export: %d model errors, version %q; want 1 and 4", st.ModelErrors, l.ModelVersion())
	}
	bad := bytes.Clone(mv.GetData())
	bad[len(bad)/2] ^= 1
	if _, err := decide.LoadModel(bad, mv.GetInfo().GetSha256(), 4); !errors.Is(err, decide.ErrChecksum) {
		t.Errorf("LoadModel of damaged bytes: %v, want ErrChecksum", err)
	}
}

// damaging flips a bit in the middle of the first chunk it sends, if on.
type damaging struct {
	grpc.ServerStream
	on bool
}

func (d *damaging) SendMsg(m any) error {
	if r, ok := m.(*personalizerv1.ExportModelResponse); ok && d.on && len(r.Chunk) > 0 {
		r.Chunk = bytes.Clone(r.Chunk)
		r.Chunk[len(r.Chunk)/2] ^= 1
		d.on = false
	}
	return d.ServerStream.SendMsg(m)
}

// TestLocalBufferFull: with LogRanks held up, ranks beyond what the batch
// in flight and the buffer hold are dropped and counted (Drop answers
// them, Fail refuses them, Block waits until the call's context ends),
// and the rest are logged once the service answers.
func TestLocalBufferFull(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		full   client.WhenFull
		ranked int64
	}{
		{"drop", client.Drop, 22},
		{"fail", client.Fail, 15},
		{"block", client.Block, 15},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			arrived, release := make(chan struct{}, 10), make(chan struct{})
			e := newLocalEnv(t, Config{}, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if info.FullMethod == personalizerv1.PersonalizerService_LogRanks_FullMethodName {
					arrived <- struct{}{}
					<-release
				}
				return h(ctx, req)
			}))
			l := newLocal(t, e.conn, client.LocalConfig{Buffer: 10, MaxBatch: 5, FlushInterval: time.Hour, WhenFull: tt.full})
			ctx := context.Background()
			reqs := localRequests(22, 3)
			for _, req := range reqs[:5] { // the batch the flusher sends
				if _, err := l.Rank(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
			<-arrived
			for _, req := range reqs[5:15] { // the buffer
				if _, err := l.Rank(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
			canceled, cancel := context.WithCancel(ctx)
			cancel()
			for _, req := range reqs[15:] {
				_, err := l.Rank(canceled, req)
				switch want := map[client.WhenFull]codes.Code{client.Drop: codes.OK, client.Fail: codes.ResourceExhausted, client.Block: codes.Canceled}[tt.full]; {
				case tt.full == client.Block && !errors.Is(err, context.Canceled), tt.full != client.Block && status.Code(err) != want:
					t.Fatalf("Rank with the buffer full: %v, want %v", err, want)
				}
			}
			close(release)
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if st := l.Stats(); st != (client.LocalStats{Ranked: tt.ranked, Logged: 15, Dropped: 7}) {
				t.Errorf("stats %+v, want %d ranked, 15 logged, 7 dropped", st, tt.ranked)
			}
		})
	}
}

// TestLocalCloseEndsWait: Close ends a Rank waiting for room (Block)
// with ErrClosed, and counts the records it could not send before its
// context ended as lost.
func TestLocalCloseEndsWait(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}, 10), make(chan struct{})
	defer close(release)
	e := newLocalEnv(t, Config{}, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == personalizerv1.PersonalizerService_LogRanks_FullMethodName {
			arrived <- struct{}{}
			<-release
		}
		return h(ctx, req)
	}))
	l := newLocal(t, e.conn, client.LocalConfig{Buffer: 10, MaxBatch: 5, FlushInterval: time.Hour, WhenFull: client.Block})
	ctx := context.Background()
	reqs := localRequests(16, 4)
	for i, req := range reqs[:15] {
		if _, err := l.Rank(ctx, req); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			<-arrived // the flusher holds the first five; the buffer takes ten
		}
	}
	waiting := make(chan error)
	go func() {
		_, err := l.Rank(ctx, reqs[15])
		waiting <- err
	}()
	gaveUp, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Close(gaveUp); err == nil || err.Error() != "local inference: 15 rank records were not sent" {
		t.Errorf("Close: %v", err)
	}
	if err := <-waiting; !errors.Is(err, client.ErrClosed) {
		t.Errorf("Rank waiting for room when Close came: %v, want ErrClosed", err)
	}
	if st := l.Stats(); st != (client.LocalStats{Ranked: 15, Lost: 15, Dropped: 1}) {
		t.Errorf("stats %+v, want 15 ranked and lost, 1 dropped", st)
	}
}

// TestLogRanksRejectsBadEntries: an invalid entry fails LogRanks with
// InvalidArgument naming it; the entries before it are logged, it and the
// ones after it are not. The same holds over gRPC (each request decoded
// from the bytes it came in) and called directly (the requests encoded).
func TestLogRanksRejectsBadEntries(t *testing.T) {
	t.Parallel()
	e := newLocalEnv(t, Config{})
	pc := personalizerv1.NewPersonalizerServiceClient(e.conn)
	good := func(id string) *personalizerv1.LoggedRank {
		return &personalizerv1.LoggedRank{Request: &personalizerv1.RankRequest{Actions: actions(3), EventId: proto.String(id)},
			Ranking: []uint32{1, 0, 2}, Probabilities: []float32{0.5, 0.25, 0.25}, ModelVersion: "2", LearningMode: "Online"}
	}
	tests := []struct {
		name  string
		edit  func(*personalizerv1.LoggedRank)
		field string
	}{
		{"no event id", func(e *personalizerv1.LoggedRank) { e.Request.EventId = nil }, "entries[1].request.event_id"},
		{"no request", func(e *personalizerv1.LoggedRank) { e.Request = nil }, "entries[1].request.event_id"},
		{"a request that does not decode", func(e *personalizerv1.LoggedRank) { e.Request.Actions[0].Id = "a\xff" }, "entries[1].request"},
		{"no actions", func(e *personalizerv1.LoggedRank) { e.Request.Actions = nil }, "entries[1].request.actions"},
		{"bad feature", func(e *personalizerv1.LoggedRank) {
			e.Request.ContextFeatures = []*personalizerv1.Namespace{ns("", num("x", math.NaN()))}
		}, "entries[1].request.context_features[0].features[0].number_value"},
		{"too few ranked", func(e *personalizerv1.LoggedRank) { e.Ranking = e.Ranking[:2] }, "entries[1].ranking"},
		{"an action twice", func(e *personalizerv1.LoggedRank) { e.Ranking[2] = 1 }, "entries[1].ranking[2]"},
		{"no such action", func(e *personalizerv1.LoggedRank) { e.Ranking[0] = 3 }, "entries[1].ranking[0]"},
		{"excluded action ranked", func(e *personalizerv1.LoggedRank) { e.Request.ExcludedActions = []string{"aA"} }, "entries[1].ranking"},
		{"negative probability", func(e *personalizerv1.LoggedRank) { e.Probabilities[1] = -0.25 }, "entries[1].probabilities[1]"},
		{"NaN probability", func(e *personalizerv1.LoggedRank) { e.Probabilities[0] = float32(math.NaN()) }, "entries[1].probabilities[0]"},
		{"probabilities not summing to 1", func(e *personalizerv1.LoggedRank) { e.Probabilities[0] = 0.4 }, "entries[1].probabilities"},
		{"unknown learning mode", func(e *personalizerv1.LoggedRank) { e.LearningMode = "Sometimes" }, "entries[1].learning_mode"},
		{"bad model version", func(e *personalizerv1.LoggedRank) { e.ModelVersion = "v2" }, "entries[1].model_version"},
	}
	calls := map[string]func(context.Context, *personalizerv1.LogRanksRequest) (*personalizerv1.LogRanksResponse, error){
		"grpc": func(ctx context.Context, req *personalizerv1.LogRanksRequest) (*personalizerv1.LogRanksResponse, error) {
			return pc.LogRanks(ctx, req)
		},
		"direct": e.srv.LogRanks,
	}
	for how, call := range calls {
		for i, tt := range tests {
			bad := good(fmt.Sprint("bad-", how, i))
			tt.edit(bad)
			_, err := call(context.Background(), &personalizerv1.LogRanksRequest{Entries: []*personalizerv1.LoggedRank{good(fmt.Sprint("ok-", how, i)), bad, good(fmt.Sprint("after-", how, i))}})
			st, _ := status.FromError(err)
			var field string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
					field = br.GetFieldViolations()[0].GetField()
				}
			}
			if st.Code() != codes.InvalidArgument || field != tt.field {
				t.Errorf("%s, %s: %v (field %q), want InvalidArgument on %s", how, tt.name, err, field, tt.field)
			}
		}
	}
	var keys []string
	for _, rec := range e.records() {
		keys = append(keys, string(rec.Key))
	}
	if len(keys) != len(calls)*len(tests) {
		t.Errorf("logged %q, want the %d entries before the bad ones", keys, len(calls)*len(tests))
	}
	for _, k := range keys {
		if !bytes.HasPrefix([]byte(k), []byte("test/ok-")) {
			t.Errorf("logged %s", k)
		}
	}
}

// rawMessage sends its bytes as they are, through vtcodec's codec.
type rawMessage struct{ b []byte }

func (m *rawMessage) SizeVT() int { return len(m.b) }
func (m *rawMessage) MarshalToSizedBufferVT(dst []byte) (int, error) {
	return copy(dst[len(dst)-len(m.b):], m.b), nil
}
func (m *rawMessage) Reset()         {}
func (m *rawMessage) String() string { return "raw" }
func (*rawMessage) ProtoMessage()    {}

// TestLogRanksAnyEncoding: a LogRanks batch over gRPC is logged however
// proto encodes it: the usual encoding (each record carrying the request's
// bytes as they came), an entry with an unknown field (the batch decoded
// whole, each request encoded again), and an entry whose request comes
// in two parts (which proto merges); a malformed batch is refused whole.
func TestLogRanksAnyEncoding(t *testing.T) {
	t.Parallel()
	e := newLocalEnv(t, Config{})
	entry := func(id string) *personalizerv1.LoggedRank {
		return &personalizerv1.LoggedRank{Request: &personalizerv1.RankRequest{Actions: actions(3), EventId: proto.String(id)},
			Ranking: []uint32{1, 0, 2}, Probabilities: []float32{0.5, 0.25, 0.25}, ModelVersion: "2", LearningMode: "Online"}
	}
	enc := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	batch := func(entries ...[]byte) []byte {
		var b []byte
		for _, e := range entries {
			b = protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), e)
		}
		return b
	}
	// A request's bytes as its fields come in a different order than
	// proto writes them: the record carries them so.
	reordered := entry("reordered")
	req := enc(reordered.Request)
	reordered.Request = nil
	idField := protowire.AppendString(protowire.AppendTag(nil, 4, protowire.BytesType), "reordered")
	req = append(idField, req[:len(req)-len(idField)]...)
	reorderedEntry := append(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), req), enc(reordered)...)

	unknown := protowire.AppendVarint(protowire.AppendTag(enc(entry("unknown")), 9, protowire.VarintType), 1)
	twoParts := entry("two-parts")
	first := enc(&personalizerv1.LoggedRank{Request: &personalizerv1.RankRequest{Actions: twoParts.Request.Actions[:1]}})
	twoParts.Request.Actions = twoParts.Request.Actions[1:]
	pc := personalizerv1.NewPersonalizerServiceClient(e.conn)
	call := func(b []byte) error {
		return e.conn.Invoke(context.Background(), personalizerv1.PersonalizerService_LogRanks_FullMethodName, &rawMessage{b}, new(personalizerv1.LogRanksResponse))
	}
	if err := call(batch(enc(entry("usual")), reorderedEntry)); err != nil {
		t.Fatal(err)
	}
	if err := call(batch(unknown, append(first, enc(twoParts)...))); err != nil {
		t.Fatal(err)
	}
	if err := call(batch(enc(entry("refused")))[:20]); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a truncated batch: %v, want InvalidArgument", err)
	}
	if _, err := pc.LogRanks(context.Background(), &personalizerv1.LogRanksRequest{}); err != nil {
		t.Errorf("an empty batch: %v", err)
	}
	want := map[string][]byte{
		"test/usual":     enc(entry("usual").Request),
		"test/reordered": req,
		"test/unknown":   enc(entry("unknown").Request),
		"test/two-parts": enc(entry("two-parts").Request),
	}
	recs := e.records()
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for _, rec := range recs {
		var ev eventsv1.RankEvent
		if err := proto.Unmarshal(rec.Value, &ev); err != nil {
			t.Fatal(err)
		}
		if w, ok := want[string(rec.Key)]; !ok || !bytes.Equal(ev.GetRequest(), w) || ev.GetModelVersion() != "2" || len(ev.GetRanking()) != 3 {
			t.Errorf("record %s: %v", rec.Key, &ev)
		}
	}
}
