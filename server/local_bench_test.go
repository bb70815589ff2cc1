package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/client"
	"github.com/open-personalizer/personalizer/internal/sim"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// benchConn serves srv (PersonalizerService and AdminService) on loopback
// TCP and returns a connection to it.
func benchConn(b *testing.B, srv *Server) *grpc.ClientConn {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	Register(gs, srv)
	RegisterAdmin(gs, NewAdmin(srv, AdminConfig{}))
	go gs.Serve(lis)
	b.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// BenchmarkLocalVsRemote ranks the request of BenchmarkRankGRPC (5 KB,
// 20 actions x 15 features, 15 context features, a trained model of the
// default policy), 8 in parallel, in the same process as the server:
// remote through Rank over loopback gRPC; local in the client (Local.Rank)
// with the rank records sent to the server in batches (LogRanks over
// loopback gRPC), checked and queued there as Rank queues its own; the
// benchmark ends after Close has sent the last of them. cpu-µs/op is the
// CPU of the whole process per rank: client, server and, for local, the
// server ingesting the records; ranks/s/core is its inverse.
func BenchmarkLocalVsRemote(b *testing.B) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	b.Run("remote", func(b *testing.B) {
		srv, stop := benchServer(b, req)
		defer stop()
		c := client.New(benchConn(b, srv))
		benchRanks(b, req, c.Rank, func() {})
	})
	b.Run("local", func(b *testing.B) {
		srv, stop := benchServer(b, req)
		defer stop()
		l, err := client.NewLocal(context.Background(), benchConn(b, srv), client.LocalConfig{WhenFull: client.Block})
		if err != nil {
			b.Fatal(err)
		}
		benchRanks(b, req, l.Rank, func() {
			if err := l.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			if st := l.Stats(); st.Logged != st.Ranked || st.Dropped+st.Rejected+st.Lost != 0 {
				b.Fatalf("stats %+v: not every rank was logged", st)
			}
		})
	})
}

func benchRanks(b *testing.B, req *personalizerv1.RankRequest, rank func(context.Context, *personalizerv1.RankRequest) (*personalizerv1.RankResponse, error), end func()) {
	if _, err := rank(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(proto.Size(req)))
	b.SetParallelism(8)
	b.ResetTimer()
	cpu0 := cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := rank(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	end()
	cpu := float64((cpuTime(b) - cpu0).Microseconds()) / float64(b.N)
	b.ReportMetric(cpu, "cpu-µs/op")
	b.ReportMetric(1e6/cpu, "ranks/s/core")
}

// BenchmarkLogRanks is the service's ingest of local inference's records,
// per entry: LogRanks batches of 100 entries of BenchmarkRank's request,
// each handled as the gRPC handler does (the batch split, each request
// copied behind room for its record, decoded into pooled memory, checked,
// its decision checked, its record queued). Unlike BenchmarkRank's, the
// request's decoding is included; scoring is not done.
func BenchmarkLogRanks(b *testing.B) {
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	srv, stop := benchServer(b, req)
	defer stop()
	const n = 100
	var batch personalizerv1.LogRanksRequest
	for i := range n {
		e := &personalizerv1.LoggedRank{Request: proto.CloneOf(req), ModelVersion: "1", LearningMode: "Online"}
		e.Request.EventId = proto.String(fmt.Sprint("event-", i))
		for a := range req.Actions {
			e.Ranking, e.Probabilities = append(e.Ranking, uint32(a)), append(e.Probabilities, 1/float32(len(req.Actions)))
		}
		batch.Entries = append(batch.Entries, e)
	}
	wire, err := proto.Marshal(&batch)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wire) / n))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	logged := 0
	for logged < b.N {
		r := request{msg: new(personalizerv1.LogRanksRequest), split: true}
		if r.Unmarshal(wire); r.err != nil {
			b.Fatal(r.err)
		}
		if _, err := srv.logRanks(context.Background(), r.entries); err != nil {
			b.Fatal(err)
		}
		logged += n
	}
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(logged), "cpu-µs/op")
}
