package vtcodec

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// fullRequest sets every field of a RankRequest, every kind of feature
// value included.
func fullRequest() *personalizerv1.RankRequest {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	req.ContextFeatures = append(req.ContextFeatures, &personalizerv1.Namespace{Features: []*personalizerv1.Feature{
		{Name: "mobile", Value: &personalizerv1.Feature_BoolValue{BoolValue: true}},
		{Name: "novalue"},
		{Name: "ünïcode", Value: &personalizerv1.Feature_StringValue{StringValue: "\"q\"\\\n"}},
		{Name: "negative", Value: &personalizerv1.Feature_NumberValue{NumberValue: -1e-300}},
	}})
	req.ExcludedActions = []string{"action-3", "action-7"}
	req.EventId = proto.String("event-1")
	req.DeferActivation = true
	return req
}

func registered(t *testing.T) encoding.CodecV2 {
	t.Helper()
	c := encoding.GetCodecV2("proto")
	if _, ok := c.(Codec); !ok {
		t.Fatalf("codec registered as proto is %T, want vtcodec.Codec", c)
	}
	return c
}

// TestRoundTrip: what the codec marshals, it and protobuf unmarshal to an
// equal message, and it unmarshals what protobuf marshals.
func TestRoundTrip(t *testing.T) {
	c := registered(t)
	req := fullRequest()
	data, err := c.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var viaProto personalizerv1.RankRequest
	if err := proto.Unmarshal(data.Materialize(), &viaProto); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&viaProto, req) {
		t.Errorf("protobuf decodes the codec's encoding to\n%v\nwant\n%v", &viaProto, req)
	}
	var got personalizerv1.RankRequest
	if err := c.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, req) {
		t.Errorf("round trip gives\n%v\nwant\n%v", &got, req)
	}
	std, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var fromProto personalizerv1.RankRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(std)}, &fromProto); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&fromProto, req) {
		t.Errorf("codec decodes protobuf's encoding to\n%v\nwant\n%v", &fromProto, req)
	}
}

// TestUnmarshalOwnsData: the decoded strings stay intact when gRPC reuses
// its buffers (here: overwrites them), and the message is replaced, not
// merged into.
func TestUnmarshalOwnsData(t *testing.T) {
	c := registered(t)
	req := fullRequest()
	std, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	half := len(std) / 2
	first, second := append([]byte(nil), std[:half]...), append([]byte(nil), std[half:]...)
	got := &personalizerv1.RankRequest{Actions: []*personalizerv1.Action{{Id: "stale"}}, EventId: proto.String("stale")}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(first), mem.SliceBuffer(second)}, got); err != nil {
		t.Fatal(err)
	}
	clear(first)
	clear(second)
	if !proto.Equal(got, req) {
		t.Errorf("after the input buffers changed, the message is\n%v\nwant\n%v", got, req)
	}
}

// TestEvents round-trips an event record type, bytes fields included.
func TestEvents(t *testing.T) {
	c := registered(t)
	mv := &eventsv1.GetModelResponse{
		Info: &eventsv1.ModelInfo{Version: 7, Sha256: []byte{1, 2, 3}, Examples: 99},
		Data: []byte("model bytes"),
	}
	data, err := c.Marshal(mv)
	if err != nil {
		t.Fatal(err)
	}
	var got eventsv1.GetModelResponse
	if err := c.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, mv) {
		t.Errorf("round trip gives %v, want %v", &got, mv)
	}
}

// TestRankStream round-trips the RankStream wrapper, whose request gets
// the Rank decoder.
func TestRankStream(t *testing.T) {
	c := registered(t)
	for _, m := range []*personalizerv1.RankStreamRequest{{Request: fullRequest()}, {}} {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var got personalizerv1.RankStreamRequest
		if err := c.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, m) {
			t.Errorf("round trip gives\n%v\nwant\n%v", &got, m)
		}
	}
}

// TestLogRanks: a LogRanks batch decodes as proto.Unmarshal decodes it,
// whether the fast path takes it (entries with and without a request) or
// leaves it to proto.Unmarshal (an entry's request given twice, an
// unknown field, a truncated batch).
func TestLogRanks(t *testing.T) {
	c := registered(t)
	entry := &personalizerv1.LoggedRank{Request: fullRequest(), Ranking: []uint32{2, 0, 1}, Probabilities: []float32{0.8, 0.1, 0.1},
		ModelVersion: "7", LearningMode: "Online"}
	m := &personalizerv1.LogRanksRequest{Entries: []*personalizerv1.LoggedRank{entry, {Ranking: []uint32{0}}, entry}}
	data, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b := data.Materialize()
	e, _ := proto.Marshal(entry)
	twice := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), append(slices.Clone(e), e...))
	unknown := protowire.AppendVarint(protowire.AppendTag(slices.Clone(b), 9, protowire.VarintType), 1)
	for name, in := range map[string][]byte{"batch": b, "request twice": twice, "unknown field": unknown, "truncated": b[:len(b)-3], "empty": nil} {
		var want, got personalizerv1.LogRanksRequest
		wantErr := proto.Unmarshal(in, &want)
		gotErr := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(in)}, &got)
		if (gotErr == nil) != (wantErr == nil) || wantErr == nil && !proto.Equal(&got, &want) {
			t.Errorf("%s: decodes to %v, %v; proto.Unmarshal: %v, %v", name, &got, gotErr, &want, wantErr)
		}
	}
	var got personalizerv1.LogRanksRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil || !proto.Equal(&got, m) {
		t.Errorf("round trip gives %v, %v", &got, err)
	}
}

// TestSplitLogRanks: a batch SplitLogRanks takes holds, entry by entry,
// what proto.Unmarshal decodes (each request's bytes decoding to the
// entry's request), in the usual encoding and in the others proto allows
// (ranking and probabilities unpacked or split in runs, a string given
// twice); a batch it does not take is one it need not (an entry's request
// twice, an unknown field) or one proto.Unmarshal refuses.
func TestSplitLogRanks(t *testing.T) {
	entry := &personalizerv1.LoggedRank{Request: fullRequest(), Ranking: []uint32{2, 0, 1}, Probabilities: []float32{0.8, 0.1, 0.1},
		ModelVersion: "7", LearningMode: "Online"}
	b, err := proto.Marshal(&personalizerv1.LogRanksRequest{Entries: []*personalizerv1.LoggedRank{
		entry, {Ranking: []uint32{0}, Probabilities: []float32{1}}, {Request: &personalizerv1.RankRequest{}}, entry}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := proto.Marshal(entry.GetRequest())
	field := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	var odd []byte // ranking unpacked and in two runs, probabilities unpacked, the model version twice
	odd = protowire.AppendVarint(field(odd, 2, protowire.VarintType), 2)
	odd = protowire.AppendBytes(field(odd, 2, protowire.BytesType), protowire.AppendVarint(protowire.AppendVarint(nil, 0), 1<<33+1))
	for _, p := range []float32{0.5, 0.25, 0.25} {
		odd = protowire.AppendFixed32(field(odd, 3, protowire.Fixed32Type), math.Float32bits(p))
	}
	odd = protowire.AppendString(field(odd, 4, protowire.BytesType), "1")
	odd = protowire.AppendBytes(field(odd, 1, protowire.BytesType), req)
	odd = protowire.AppendString(field(odd, 4, protowire.BytesType), "2")
	batch := func(entries ...[]byte) []byte {
		var b []byte
		for _, e := range entries {
			b = protowire.AppendBytes(field(b, 1, protowire.BytesType), e)
		}
		return b
	}
	e, _ := proto.Marshal(entry)
	takes := map[string][]byte{"batch": b, "odd encodings": batch(odd, e), "empty": nil}
	refuses := map[string][]byte{
		"request twice":      batch(append(slices.Clone(e), e...)),
		"unknown field":      batch(protowire.AppendVarint(field(slices.Clone(e), 9, protowire.VarintType), 1)),
		"truncated":          b[:len(b)-3],
		"packed probability": batch(protowire.AppendBytes(field(nil, 3, protowire.BytesType), []byte{1, 2, 3})),
		"not UTF-8":          batch(protowire.AppendString(field(nil, 5, protowire.BytesType), "\xff")),
		"not an entry":       protowire.AppendVarint(field(nil, 1, protowire.VarintType), 1),
	}
	for name, in := range takes {
		var want personalizerv1.LogRanksRequest
		if err := proto.Unmarshal(in, &want); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		split, ok := SplitLogRanks(in, nil)
		if !ok {
			t.Errorf("%s: not taken", name)
			continue
		}
		var got personalizerv1.LogRanksRequest
		for _, s := range split {
			e := &personalizerv1.LoggedRank{Ranking: s.Ranking, Probabilities: s.Probabilities, ModelVersion: s.ModelVersion, LearningMode: s.LearningMode}
			if s.Request != nil {
				e.Request = new(personalizerv1.RankRequest)
				if err := proto.Unmarshal(s.Request, e.Request); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
			got.Entries = append(got.Entries, e)
		}
		if !proto.Equal(&got, &want) {
			t.Errorf("%s: split into\n%v\nproto.Unmarshal gives\n%v", name, &got, &want)
		}
	}
	for name, in := range refuses {
		if _, ok := SplitLogRanks(in, nil); ok {
			t.Errorf("%s: taken", name)
		}
	}
}

// TestRankAsProto: for input the fast decoder does not take (unknown
// fields, a known field with another wire type, repeated singular fields,
// invalid UTF-8), decoding is proto.Unmarshal's: the same message or an
// error.
func TestRankAsProto(t *testing.T) {
	c := registered(t)
	std, err := proto.Marshal(fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	feature := func(name string) []byte { // a context namespace with one feature
		f := protowire.AppendTag(nil, 1, protowire.BytesType)
		f = protowire.AppendString(f, name)
		f = protowire.AppendTag(f, 3, protowire.Fixed64Type)
		f = protowire.AppendFixed64(f, 0x3ff0000000000000)
		ns := protowire.AppendTag(nil, 2, protowire.BytesType)
		ns = protowire.AppendBytes(ns, f)
		return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), ns)
	}
	for name, data := range map[string][]byte{
		"unknown field":     protowire.AppendVarint(protowire.AppendTag(std, 99, protowire.VarintType), 7),
		"defer as bytes":    protowire.AppendString(protowire.AppendTag(std, 5, protowire.BytesType), "x"),
		"event id twice":    protowire.AppendString(protowire.AppendTag(std, 4, protowire.BytesType), "second"),
		"valid UTF-8":       append(slices.Clone(std), feature("ünïcode")...),
		"invalid UTF-8":     append(slices.Clone(std), feature("bad\xff")...),
		"truncated":         std[:len(std)-3],
		"zero field number": append(slices.Clone(std), 0x00, 0x01),
		"varint too long":   append(protowire.AppendTag(slices.Clone(std), 5, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
	} {
		t.Run(name, func(t *testing.T) {
			var want personalizerv1.RankRequest
			wantErr := proto.Unmarshal(data, &want)
			var got personalizerv1.RankRequest
			err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &got)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("error %v, proto.Unmarshal's %v", err, wantErr)
			}
			if err == nil && !proto.Equal(&got, &want) {
				t.Errorf("decoded\n%v\nproto.Unmarshal\n%v", &got, &want)
			}
		})
	}
}

// FuzzRank holds the codec's decoding of any input to proto.Unmarshal's.
func FuzzRank(f *testing.F) {
	std, err := proto.Marshal(fullRequest())
	if err != nil {
		f.Fatal(err)
	}
	small, err := proto.Marshal(sim.Request(rand.New(rand.NewPCG(3, 4)), 2, 2, 2))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(std)
	f.Add(small)
	f.Add([]byte{})
	c := Codec{}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want personalizerv1.RankRequest
		wantErr := proto.Unmarshal(data, &want)
		var got personalizerv1.RankRequest
		err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &got)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("error %v, proto.Unmarshal's %v", err, wantErr)
		}
		if err == nil && !proto.Equal(&got, &want) {
			t.Errorf("decoded\n%v\nproto.Unmarshal\n%v", &got, &want)
		}
	})
}

// TestFallback: messages without generated fast code go through the
// standard codec.
func TestFallback(t *testing.T) {
	c := registered(t)
	msg := &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}
	if _, ok := any(msg).(Message); ok {
		t.Fatal("health messages have vtprotobuf code; pick another message for this test")
	}
	data, err := c.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var got grpc_health_v1.HealthCheckResponse
	if err := c.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, msg) {
		t.Errorf("round trip gives %v, want %v", &got, msg)
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff})}, &got); err == nil {
		t.Error("unmarshal of a truncated field succeeded")
	}
}

// TestMalformed: bad input is an error, not a panic.
func TestMalformed(t *testing.T) {
	c := registered(t)
	std, err := proto.Marshal(fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{std[:len(std)-1], {0x0a, 0x80}, {0x0a, 0x05, 0x0a}} {
		var got personalizerv1.RankRequest
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &got); err == nil {
			t.Errorf("unmarshal of %d malformed bytes succeeded", len(data))
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	data, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	in := mem.BufferSlice{mem.SliceBuffer(data)}
	for _, c := range []encoding.CodecV2{Codec{}, encoding.GetCodecV2("proto").(Codec).fallback} {
		b.Run(fmt.Sprintf("%T", c), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				var got personalizerv1.RankRequest
				if err := c.Unmarshal(in, &got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// recorder is a PersonalizerService that keeps the requests it gets and
// answers with their action ids.
type recorder struct {
	personalizerv1.UnimplementedPersonalizerServiceServer
	got chan *personalizerv1.RankRequest
}

func (r *recorder) Rank(_ context.Context, req *personalizerv1.RankRequest) (*personalizerv1.RankResponse, error) {
	r.got <- req
	resp := &personalizerv1.RankResponse{EventId: req.GetEventId()}
	for _, a := range req.GetActions() {
		resp.Ranking = append(resp.Ranking, &personalizerv1.RankedAction{Id: a.GetId(), Probability: 0.5})
	}
	return resp, nil
}

// TestOverGRPC: a real client and server on loopback TCP, both with the
// registered codec, exchange a full request and its answer intact.
func TestOverGRPC(t *testing.T) {
	registered(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{got: make(chan *personalizerv1.RankRequest, 1)}
	gs := grpc.NewServer()
	personalizerv1.RegisterPersonalizerServiceServer(gs, rec)
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := fullRequest()
	resp, err := personalizerv1.NewPersonalizerServiceClient(conn).Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-rec.got; !proto.Equal(got, req) {
		t.Errorf("server got\n%v\nwant\n%v", got, req)
	}
	if len(resp.Ranking) != len(req.Actions) || resp.EventId != req.GetEventId() || resp.Ranking[19].Id != "action-19" {
		t.Errorf("response %v", resp)
	}
}

// TestStandard checks that Standard is grpc-go's own codec, not this one.
func TestStandard(t *testing.T) {
	t.Parallel()
	if c := Standard(); c == nil || c.Name() != "proto" {
		t.Fatalf("Standard() = %v", c)
	} else if _, ok := c.(Codec); ok {
		t.Error("Standard() is this package's codec")
	}
}

// TestBlocksReused checks that requests of every size decoded one after
// the other into the same Blocks each decode to what protobuf decodes,
// nothing left over from the one before.
func TestBlocksReused(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	var bl Blocks
	for i := range 200 {
		want := sim.Request(r, 1+r.IntN(20), r.IntN(15), r.IntN(15))
		if i%3 == 0 {
			want = fullRequest()
		}
		if r.IntN(2) == 0 {
			want.ExcludedActions = []string{want.Actions[0].Id}
		}
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got personalizerv1.RankRequest
		if err := bl.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("request %d decoded into reused blocks:\n%v\nwant\n%v", i, &got, want)
		}
	}
	if bl.Features() == 0 {
		t.Error("no features decoded into the blocks")
	}
}
