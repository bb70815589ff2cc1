package server

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/internal/vtcodec"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// Register registers s as g's PersonalizerService. A request that does not
// decode (malformed protobuf, or a string that is not UTF-8) is answered
// InvalidArgument naming the message, where grpc-go answers Internal for
// any codec error: the fault is the caller's. That holds for the unary
// methods and for every message RankStream receives.
//
// grpc-go reports a codec error itself, as Internal, before the handler
// can return anything else, so the handlers Register installs receive each
// message as a [request], which takes the bytes from any proto codec
// without failing, and decode it themselves with the process's "proto"
// codec. A unary request that does not decode is refused inside the
// interceptors, so that the call is authenticated, rate limited, logged
// and counted like any other. Rank requests are decoded by vtcodec's
// decoder (into pooled [vtcodec.Blocks]) from a copy of their bytes, which
// the rank record then carries.
func Register(g grpc.ServiceRegistrar, s *Server) {
	desc := decoding(personalizerv1.PersonalizerService_ServiceDesc)
	for i := range desc.Methods {
		switch desc.Methods[i].MethodName {
		case "Rank":
			desc.Methods[i].Handler = rankHandler
		case "LogRanks":
			desc.Methods[i].Handler = logRanksHandler
		}
	}
	g.RegisterService(desc, s)
}

// rankHandler is Rank's handler: it decodes the request as [decoding]'s
// handlers do, keeping the bytes it decoded it from, which the rank record
// then carries as they are, into pooled memory, which it hands on once the
// call has its answer (the answer's strings point into the bytes, not into
// that memory).
func rankHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	bl := rankBlocks.Get().(*vtcodec.Blocks)
	defer putBlocks(bl)
	r := request{msg: new(personalizerv1.RankRequest), blocks: bl}
	if err := dec(&r); err != nil { // the transport failed; grpc-go has answered
		return nil, err
	}
	s := srv.(*Server)
	handler := func(ctx context.Context, req any) (any, error) {
		if r.err != nil {
			return nil, r.err
		}
		m := req.(*personalizerv1.RankRequest)
		if m != r.msg { // an interceptor replaced it: these are not its bytes
			return s.Rank(ctx, m)
		}
		return s.rankWire(ctx, m, r.wire)
	}
	if interceptor == nil {
		return handler(ctx, r.msg)
	}
	return interceptor(ctx, r.msg, &grpc.UnaryServerInfo{Server: srv, FullMethod: personalizerv1.PersonalizerService_Rank_FullMethodName}, handler)
}

// logRanksHandler is LogRanks' handler: it decodes the batch as
// [decoding]'s handlers do, except that each entry's request is left as
// the bytes it came in, copied behind room for its rank record
// ([withRoom]); [Server.logRanks] decodes them one by one and the records
// carry them as they are. The LogRanksRequest the interceptors see has
// no entries (unless the batch was one SplitLogRanks does not take, which
// the codec decodes whole).
func logRanksHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	r := request{msg: new(personalizerv1.LogRanksRequest), split: true}
	if err := dec(&r); err != nil { // the transport failed; grpc-go has answered
		return nil, err
	}
	s := srv.(*Server)
	handler := func(ctx context.Context, req any) (any, error) {
		if r.err != nil {
			return nil, r.err
		}
		m := req.(*personalizerv1.LogRanksRequest)
		if m != r.msg { // an interceptor replaced it: these are not its entries
			return s.LogRanks(ctx, m)
		}
		return s.logRanks(ctx, r.entries)
	}
	if interceptor == nil {
		return handler(ctx, r.msg)
	}
	return interceptor(ctx, r.msg, &grpc.UnaryServerInfo{Server: srv, FullMethod: personalizerv1.PersonalizerService_LogRanks_FullMethodName}, handler)
}

// putBlocks hands bl on to the next request, unless a rare large request
// grew it: that must not hold its memory for good.
func putBlocks(bl *vtcodec.Blocks) {
	if bl.Features() <= keepBlocksFeatures {
		rankBlocks.Put(bl)
	}
}

// keepBlocksFeatures is the most features a request's decoded memory may
// have room for to be kept for the next request (about 100 bytes each).
const keepBlocksFeatures = 1 << 12

// rankBlocks is the memory Rank requests are decoded into.
var rankBlocks = sync.Pool{New: func() any { return new(vtcodec.Blocks) }}

// RegisterAdmin registers a as g's AdminService, decoding requests as
// [Register] does. Calls must pass the same [Guard] as a's: its
// Authenticate (and Limit) interceptors put the caller's key in the
// context, which decides the loops a call may address.
func RegisterAdmin(g grpc.ServiceRegistrar, a *Admin) {
	g.RegisterService(decoding(personalizerv1.AdminService_ServiceDesc), &adminService{a: a})
}

// decoding returns desc with handlers that decode each request as a
// [request] (see [Register]).
func decoding(desc grpc.ServiceDesc) *grpc.ServiceDesc {
	// desc is a copy: the generated one stays as it is
	desc.Methods = slices.Clone(desc.Methods)
	for i, md := range desc.Methods {
		handler, method := md.Handler, &grpc.UnaryServerInfo{FullMethod: "/" + desc.ServiceName + "/" + md.MethodName}
		desc.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			var req any
			var decErr error
			resp, err := handler(srv, ctx, func(m any) error {
				req = m
				r := request{msg: m}
				if err := dec(&r); err != nil { // the transport failed; grpc-go has answered
					return err
				}
				decErr = r.err
				return decErr
			}, interceptor)
			if decErr == nil || interceptor == nil {
				return resp, err
			}
			info := *method
			info.Server = srv
			return interceptor(ctx, req, &info, func(context.Context, any) (any, error) { return nil, decErr })
		}
	}
	desc.Streams = slices.Clone(desc.Streams)
	for i, sd := range desc.Streams {
		handler := sd.Handler
		desc.Streams[i].Handler = func(srv any, stream grpc.ServerStream) error {
			return handler(srv, decodingStream{stream})
		}
	}
	return &desc
}

// decodingStream decodes each message it receives as a [request]: one that
// does not decode is an InvalidArgument error of RecvMsg, and the stream's
// handler ends the call with it.
type decodingStream struct{ grpc.ServerStream }

func (s decodingStream) RecvMsg(m any) error {
	r := request{msg: m}
	if err := s.ServerStream.RecvMsg(&r); err != nil {
		return err
	}
	return r.err
}

// request receives a message's bytes from a gRPC codec and decodes them
// into msg with the process's "proto" codec, keeping a decoding error in
// err (as InvalidArgument) instead of failing. Any proto codec hands it
// the bytes: it is a legacy message (Reset, String, ProtoMessage) with an
// Unmarshal method, which proto.Unmarshal calls with the bytes instead of
// decoding them itself.
type request struct {
	msg any
	err error
	// blocks, for a RankRequest: decode it into these from wire, a copy of
	// its bytes after room for its record (withRoom)
	blocks *vtcodec.Blocks
	wire   []byte
	// split, for a LogRanksRequest: leave its entries' requests encoded,
	// in entries (see [Server.logRanks]), the message without entries
	split   bool
	entries []vtcodec.LoggedRank
}

func (r *request) Reset()         { r.err = nil }
func (r *request) String() string { return fmt.Sprintf("undecoded %T", r.msg) }
func (*request) ProtoMessage()    {}

// Unmarshal decodes b into r.msg. b is a buffer gRPC reuses: the codec
// copies what the message keeps (vtcodec copies the whole of b), a
// RankRequest with blocks is decoded from a copy of b behind room for its
// rank record (withRoom), kept in wire, and a LogRanksRequest to split
// has each entry's request copied so.
func (r *request) Unmarshal(b []byte) error {
	var err error
	if m, ok := r.msg.(*personalizerv1.RankRequest); ok && r.blocks != nil {
		r.wire = withRoom(b)
		err = r.blocks.Unmarshal(r.wire[recordRoom:], m) // m's strings may point into r.wire
	} else if m, ok := r.msg.(*personalizerv1.LogRanksRequest); ok && r.split {
		r.entries, err = splitEntries(b, m)
	} else {
		err = encoding.GetCodecV2(grpcproto.Name).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, r.msg)
	}
	if err != nil {
		name := "request"
		if pm, ok := r.msg.(proto.Message); ok {
			name = string(pm.ProtoReflect().Descriptor().FullName())
		}
		r.err = status.Errorf(codes.InvalidArgument, "the request is not a valid %s message: %v", name, err)
	}
	return nil
}

// splitEntries returns the entries of b, a LogRanks batch, as
// [Server.logRanks] takes them: each request's bytes copied behind room
// for its record. A batch [vtcodec.SplitLogRanks] does not take is
// decoded into m by the codec, and its requests encoded.
func splitEntries(b []byte, m *personalizerv1.LogRanksRequest) ([]vtcodec.LoggedRank, error) {
	entries, ok := vtcodec.SplitLogRanks(b, nil)
	if !ok {
		if err := encoding.GetCodecV2(grpcproto.Name).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, m); err != nil {
			return nil, err
		}
		return encodeEntries(m)
	}
	for i := range entries {
		entries[i].Request = withRoom(entries[i].Request)
	}
	return entries, nil
}
