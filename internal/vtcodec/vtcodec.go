// Package vtcodec replaces gRPC's "proto" codec with a faster one for the
// personalizer's messages. It marshals them with the code vtprotobuf
// generated (no reflection) and decodes Rank requests (alone, on a stream
// or in a LogRanks batch) with a decoder that
// allocates in blocks (see unmarshalRank); everything else goes through the
// standard codec. [SplitLogRanks] splits a LogRanks batch into its entries
// with their requests left encoded, for a server that decodes them one by
// one and keeps their bytes. Decoding is exactly proto.Unmarshal's, UTF-8 checks
// included (vtprotobuf's generated unmarshalling skips them, so it is not
// used). Import the package for its side effect, in main packages and
// tests: the codec is registered for every client and server of the
// process.
//
// A decoded Rank request's strings share one buffer the request owns: it is
// copied from gRPC's pooled buffers, never reused, and lives as long as any
// of those strings does.
package vtcodec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func init() {
	standard = encoding.GetCodecV2(proto.Name)
	encoding.RegisterCodecV2(Codec{fallback: standard})
}

// standard is grpc-go's own "proto" codec, which this package's replaces.
var standard encoding.CodecV2

// Standard returns grpc-go's own "proto" codec (proto.Marshal and
// proto.Unmarshal), which the package replaced: for measuring against.
func Standard() encoding.CodecV2 { return standard }

// Message is what vtprotobuf generates for the size and marshal features.
type Message interface {
	SizeVT() int
	MarshalToSizedBufferVT(dst []byte) (int, error)
}

// Codec is the gRPC codec this package registers under the name "proto".
type Codec struct {
	fallback encoding.CodecV2 // for messages without generated code
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return proto.Name }

// Marshal implements encoding.CodecV2.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(Message)
	if !ok {
		return c.fallback.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, fmt.Errorf("marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// UnmarshalRank decodes b into m as the codec does, without copying b
// first: m's strings may point into b, which must not change afterwards.
func UnmarshalRank(b []byte, m *personalizerv1.RankRequest) error { return unmarshalRank(b, m) }

// Unmarshal implements encoding.CodecV2. For Rank requests, Materialize
// copies into a new buffer, which the request's strings then point into.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *personalizerv1.RankRequest:
		return unmarshalRank(data.Materialize(), m)
	case *personalizerv1.RankStreamRequest:
		return unmarshalRankStream(data.Materialize(), m)
	case *personalizerv1.LogRanksRequest:
		return unmarshalLogRanks(data.Materialize(), m)
	}
	return c.fallback.Unmarshal(data, v)
}
