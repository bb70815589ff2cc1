package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// BenchmarkServerInterceptors measures what the unary interceptors add to
// a successful Rank call when the log is at Info, as in production.
func BenchmarkServerInterceptors(b *testing.B) {
	log := slog.New(slog.NewJSONHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	unary, _ := ServerInterceptors(log, prometheus.NewRegistry())
	info := &grpc.UnaryServerInfo{FullMethod: personalizerv1.PersonalizerService_Rank_FullMethodName}
	h := grpc.UnaryHandler(func(ctx context.Context, req any) (any, error) { return req, nil })
	for i := len(unary) - 1; i >= 0; i-- { // chained as grpc.ChainUnaryInterceptor does
		next, ic := h, unary[i]
		h = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, next) }
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}})
	req := &personalizerv1.RankRequest{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestLogLines checks the one line per call: a successful call is logged
// only at Debug, a failed one at Info or above, with its duration either
// way.
func TestLogLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		level slog.Level
		want  []string // method/code of the lines
	}{
		{slog.LevelInfo, []string{"Check/NotFound"}},
		{slog.LevelDebug, []string{"Check/OK", "Check/NotFound"}},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: tt.level}))
			unary, stream := ServerInterceptors(log, prometheus.NewRegistry())
			lis := bufconn.Listen(1 << 20)
			srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
			healthpb.RegisterHealthServer(srv, health.NewServer())
			go srv.Serve(lis)
			conn, err := grpc.NewClient("passthrough:///bufnet",
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			client := healthpb.NewHealthClient(conn)
			if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
				t.Fatalf("Check(nope) = %v, want NotFound", err)
			}
			conn.Close()
			srv.GracefulStop() // every call has finished, and logged

			var got []string
			for l := range strings.Lines(logs.String()) {
				var e struct {
					Msg    string
					Method string `json:"grpc.method"`
					Code   string `json:"grpc.code"`
					Start  string `json:"grpc.start_time"`
					Millis string `json:"grpc.time_ms"`
				}
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatal(err)
				}
				if ms, err := strconv.ParseFloat(e.Millis, 64); e.Msg != "finished call" || e.Start == "" || err != nil || ms <= 0 {
					t.Errorf("log line %s: want a finished call with start time and duration", l)
				}
				got = append(got, e.Method+"/"+e.Code)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("lines for %v, want %v", got, tt.want)
			}
		})
	}
}
