package joiner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// Awkward values for generated requests: JSON escapes, control
// characters, unicode beyond the BMP, and floats at the edges of their
// shortest text.
var (
	oddStrings = []string{"", "plain", `q"b\s`, "tab\tnl\ncr\r", "\x00\x1f\x7f", "ünï©ode ✓", "😀 emoji", "\u2028\u2029", "a:b|c d", "7"}
	oddNumbers = []float64{0, math.Copysign(0, -1), 1, -1, 0.1 + 0.2, 1e21, 1e20, 123456789012345678, 1e-5, 1e-7, 1e-300,
		math.SmallestNonzeroFloat64, math.MaxFloat64, -math.MaxFloat64, -2.2250738585072014e-308, 1.0 / 3, 100, 0.5}
)

func oddFeature(r *rand.Rand, i int) *personalizerv1.Feature {
	name := fmt.Sprintf("%s%d", oddStrings[r.IntN(len(oddStrings))], i) // never empty, never starts with '_'
	switch r.IntN(3) {
	case 0:
		return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_StringValue{StringValue: oddStrings[r.IntN(len(oddStrings))]}}
	case 1:
		return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_NumberValue{NumberValue: oddNumbers[r.IntN(len(oddNumbers))]}}
	}
	return &personalizerv1.Feature{Name: name, Value: &personalizerv1.Feature_BoolValue{BoolValue: r.IntN(2) == 0}}
}

func oddNamespace(r *rand.Rand, name string) *personalizerv1.Namespace {
	ns := &personalizerv1.Namespace{Name: name}
	for i := range r.IntN(5) {
		ns.Features = append(ns.Features, oddFeature(r, i))
	}
	return ns
}

// oddRequest is a sim request made awkward: odd features in the default
// namespace, in unicode namespaces and in actions' unnamed namespaces,
// odd action and event ids, and excluded actions (some named twice).
func oddRequest(r *rand.Rand, i int) *personalizerv1.RankRequest {
	req := sim.Request(r, 1+r.IntN(12), r.IntN(8), r.IntN(10))
	req.EventId = proto.String(fmt.Sprintf("évent \"%d\" ✓", i))
	req.DeferActivation = r.IntN(4) == 0
	if r.IntN(2) == 0 {
		req.ContextFeatures = append(req.ContextFeatures, oddNamespace(r, ""))
	}
	if r.IntN(2) == 0 {
		req.ContextFeatures = append(req.ContextFeatures, oddNamespace(r, "Ünï ns"))
	}
	for k, a := range req.Actions {
		if r.IntN(3) == 0 {
			a.Id = fmt.Sprintf("%s#%d", oddStrings[1+r.IntN(len(oddStrings)-1)], k)
		}
		if r.IntN(2) == 0 {
			a.Features = append(a.Features, oddNamespace(r, ""))
		}
	}
	if n := len(req.Actions); n > 1 {
		for _, k := range r.Perm(n)[:r.IntN(n)] { // never all
			req.ExcludedActions = append(req.ExcludedActions, req.Actions[k].Id)
		}
		if len(req.ExcludedActions) > 0 && r.IntN(3) == 0 {
			req.ExcludedActions = append(req.ExcludedActions, req.ExcludedActions[0])
		}
	}
	return req
}

// oldContext is the context a23dfe7's server logged for req, by its own
// code: the eligible actions, then the DSJson of them.
func oldContext(req *personalizerv1.RankRequest) []byte {
	excluded := make([]bool, len(req.Actions))
	for _, id := range req.ExcludedActions {
		for j, a := range req.Actions {
			if a.Id == id {
				excluded[j] = true
				break
			}
		}
	}
	var eligible []*personalizerv1.Action
	for i, a := range req.Actions {
		if !excluded[i] {
			eligible = append(eligible, a)
		}
	}
	return features.AppendContext(nil, req.ContextFeatures, eligible)
}

// TestRankRequestRendersTheOldLine checks that a rank record carrying its
// request joins to the very DSJson line the record with the rendered
// context (what servers wrote before the request field) joins to: a real
// server with a trained model ranks generated awkward requests, half over
// real gRPC (the record carries the call's bytes) and half called directly
// (it encodes the request); each record, and its old form made from the
// same request and decision, are decoded as the joiner decodes records and
// written with several outcomes.
func TestRankRequestRendersTheOldLine(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	pub := server.NewPublisher(mem, server.DefaultBufferLimits, 0, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pub.Run(ctx, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	srv := server.New(server.Config{Loop: "test"}, pub, log, func() time.Time { return now })

	r := rand.New(rand.NewPCG(11, 12))
	policy, err := bandit.ParsePolicy(bandit.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	m := bandit.NewModel(policy)
	var ev bandit.Event
	var pred bandit.Prediction
	for i := range 200 { // a model whose probabilities are not all alike
		req := oddRequest(r, i)
		ev.Reset()
		features.Build(&ev, req.GetContextFeatures(), req.GetActions())
		ev.SetLabel(i%len(req.Actions), float32(i%3)-1, 0.5)
		m.Learn(&ev, &pred)
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if err := srv.Load(&eventsv1.GetModelResponse{Info: &eventsv1.ModelInfo{Version: 3, Sha256: sum[:], Examples: 200}, Data: buf.Bytes()}); err != nil {
		t.Fatal(err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	server.Register(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := personalizerv1.NewPersonalizerServiceClient(conn)

	const n = 400
	reqs := make(map[string]*personalizerv1.RankRequest, n)
	for i := range n {
		req := oddRequest(r, 1000+i)
		reqs[req.GetEventId()] = req
		call := srv.Rank
		if i%2 == 0 {
			call = func(ctx context.Context, req *personalizerv1.RankRequest) (*personalizerv1.RankResponse, error) {
				return client.Rank(ctx, req)
			}
		}
		if _, err := call(context.Background(), req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}

	reader := mem.Reader(eventlog.EventsTopic, nil)
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	for range n {
		rec, err := reader.Fetch(fctx)
		if err != nil {
			t.Fatal(err)
		}
		var logged eventsv1.RankEvent
		if err := proto.Unmarshal(rec.Value, &logged); err != nil {
			t.Fatal(err)
		}
		req := reqs[logged.EventId]
		if req == nil || len(logged.Request) == 0 || len(logged.Context) != 0 {
			t.Fatalf("record %q: request %d bytes, context %d bytes", logged.EventId, len(logged.Request), len(logged.Context))
		}
		old := proto.CloneOf(&logged)
		old.Request, old.Context = nil, oldContext(req)
		if bound := features.ContextBound(req.ContextFeatures, eligibleOf(req)); bound < len(old.Context) {
			t.Errorf("%q: context bound %d under its %d bytes", logged.EventId, bound, len(old.Context))
		}
		oldValue, err := proto.Marshal(old)
		if err != nil {
			t.Fatal(err)
		}
		oldRec := rec
		oldRec.Value = oldValue
		got, want := decode(rec), decode(oldRec)
		if got.Kind != Rank || want.Kind != Rank {
			t.Fatalf("%q decodes to kinds %v and %v: %v, %v", logged.EventId, got.Kind, want.Kind, got.Err, want.Err)
		}
		for _, jd := range []Joined{
			{Reward: 1, Original: 1, Learnable: true, Outcomes: []Outcome{{Value: 1}}},
			{Reward: -0.25, Original: -0.25, Outcomes: []Outcome{{Value: 0.5}, {Activate: true}, {Value: -1}}},
			{Reward: 0, Original: 0, Learnable: true},
		} {
			jd.Key, jd.Time = string(rec.Key), rec.Time
			newLine, oldLine := jd, jd
			newLine.Rank, oldLine.Rank = got.Rank, want.Rank
			if a, b := AppendDSJSON(nil, &newLine), AppendDSJSON(nil, &oldLine); !bytes.Equal(a, b) {
				t.Fatalf("%q: the line from the request\n%s\ndiffers from the old line\n%s", logged.EventId, a, b)
			}
		}
	}
}

func eligibleOf(req *personalizerv1.RankRequest) []*personalizerv1.Action {
	var eligible []*personalizerv1.Action
	for _, a := range req.Actions {
		if !slices.Contains(req.ExcludedActions, a.Id) {
			eligible = append(eligible, a)
		}
	}
	return eligible
}

// TestRankContextRefuses checks that a rank record whose request the
// joiner cannot render from is bad, with the reason: bytes that are not a
// RankRequest, an excluded id no action has, a ranking that does not index
// the eligible actions one for one, and a context next to the request.
func TestRankContextRefuses(t *testing.T) {
	t.Parallel()
	req := &personalizerv1.RankRequest{Actions: []*personalizerv1.Action{{Id: "a"}, {Id: "b"}}, ExcludedActions: []string{"b"}}
	good, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	req.ExcludedActions = []string{"c"}
	unknown, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	rank := func(request, context []byte, n int) eventlog.Record {
		ev := &eventsv1.RankEvent{Loop: "l", EventId: "e", Request: request, Context: context}
		for i := range n {
			ev.Ranking, ev.Probabilities = append(ev.Ranking, uint32(i)), append(ev.Probabilities, 1/float32(n))
		}
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return eventlog.Record{Key: []byte("l/e"), Value: b, Headers: []eventlog.Header{{Key: eventlog.TypeHeader, Value: []byte(eventlog.TypeRank)}}}
	}
	in := decode(rank(good, nil, 1))
	if in.Kind != Rank || string(in.Rank.Context) != `{"_multi":[{"_tag":"a","i":{"constant":1,"id":"a"}}]}` || in.Rank.Request != nil {
		t.Fatalf("a good request: %+v", in)
	}
	for _, tt := range []struct {
		name string
		rec  eventlog.Record
		want string
	}{
		{"not a request", rank([]byte{0xff, 0xff}, nil, 1), "rank record: request: "},
		{"unknown excluded id", rank(unknown, nil, 1), "rank record: request: excluded_actions[0] names no action"},
		{"ranking too long", rank(good, nil, 2), "rank record: request has 1 eligible actions, the ranking 2"},
		{"context too", rank(good, []byte(`{}`), 1), "rank record: the record carries both a context and a request"},
	} {
		in := decode(tt.rec)
		if in.Kind != Bad || in.Err == nil || !bytes.HasPrefix([]byte(in.Err.Error()), []byte(tt.want)) {
			t.Errorf("%s: %+v, want an error starting %q", tt.name, in, tt.want)
		}
	}
}

// decodedContext is RankContext by decoding the request into messages
// only: the renderer of f7590b6, which the wire renderer must equal.
func decodedContext(ev *eventsv1.RankEvent) ([]byte, error) {
	sc := new(renderScratch)
	return sc.decoded(ev)
}

// sameContext fails t unless RankContext and decodedContext give the
// same context, or the same error, for the rank record of request with
// ranked actions ranked. (A record whose request is empty has none.)
func sameContext(t *testing.T, request []byte, ranked int) {
	t.Helper()
	if len(request) == 0 {
		return
	}
	ev := &eventsv1.RankEvent{Request: request, Ranking: make([]uint32, ranked)}
	got, gerr := RankContext(ev)
	want, werr := decodedContext(ev)
	if !bytes.Equal(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Fatalf("request %x, %d ranked: rendered %q, %v; decoded %q, %v", request, ranked, got, gerr, want, werr)
	}
}

// TestRankContextIsTheDecodedOne checks RankContext (which renders from
// the wire bytes when it can) against rendering the decoded request, over
// awkward requests and what becomes of their bytes cut short anywhere,
// with a byte changed, with the ranking one too long: the same context or
// the same error, never a panic.
func TestRankContextIsTheDecodedOne(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 300 {
		req := oddRequest(r, i)
		wire, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		n := len(eligibleOf(req))
		sameContext(t, wire, n)
		sameContext(t, wire, n+1)
		for range 20 {
			sameContext(t, wire[:r.IntN(len(wire))], n)
			changed := bytes.Clone(wire)
			changed[r.IntN(len(changed))] = byte(r.Uint32())
			sameContext(t, changed, n)
		}
	}
}

// FuzzRankContext is TestRankContextIsTheDecodedOne's check for any bytes.
func FuzzRankContext(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 20 {
		wire, err := proto.Marshal(oddRequest(r, i))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire, uint8(r.IntN(14)))
	}
	f.Add([]byte{0x0a, 0x03, 0x12, 0x01, 0xff}, uint8(0))
	f.Fuzz(func(t *testing.T, request []byte, ranked uint8) { sameContext(t, request, int(ranked)) })
}
