package app

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// BenchmarkPipeline measures the whole loop in dev mode: 5 KB Rank
// requests (20 actions x 15 features, 15 context features) and a reward
// each, over gRPC, through the embedded broker, the joiner and the learner,
// until every event is learned. events/s and MB/s (of Rank requests) are
// end to end, so they include one reward window at the end.
func BenchmarkPipeline(b *testing.B) { benchPipeline(b, 20, 15, 15) }

// BenchmarkPipelineSeed is [BenchmarkPipeline] with the seed workload:
// 500 features, 10 actions x 45 and 50 context features (bench --workload
// seed).
func BenchmarkPipelineSeed(b *testing.B) { benchPipeline(b, seedActions, seedFeatures, seedContext) }

func benchPipeline(b *testing.B, actions, features, nContext int) {
	const events = 20000
	var cfg devConfig
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.registerFlags(fs)
	err := parseFlags(fs, []string{
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--broker-addr", "127.0.0.1:0",
		"--data-dir", b.TempDir(), "--reward-wait", "200ms", "--tick-interval", "50ms",
		"--model-export-frequency", "1s",
	}, func(string) string { return "" })
	if err == nil {
		err = cfg.validate()
	}
	if err != nil {
		b.Fatal(err)
	}
	d, err := startDev(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	conn, err := grpc.NewClient(d.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := personalizerv1.NewPersonalizerServiceClient(conn)
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), actions, features, nContext)
	size := proto.Size(req)

	ctx := context.Background()
	var learned int64
	b.ResetTimer()
	for range b.N {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for next.Add(1) <= events {
					resp, err := client.Rank(ctx, req)
					if err == nil {
						_, err = client.Reward(ctx, &personalizerv1.RewardRequest{EventId: resp.GetEventId(), Value: 1})
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		learned += events
		if err := d.learner.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= learned }); err != nil {
			b.Fatal(err)
		}
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(learned)/secs, "events/s")
	b.ReportMetric(float64(learned)*float64(size)/secs/1e6, "MB/s")
	b.ReportMetric(0, "ns/op")
}

// startRankServer serves Rank on a loopback port, its events going to
// memory, and returns the address.
func startRankServer(t *testing.T) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	pub := server.NewPublisher(eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1}), server.BufferLimits{Records: 1 << 16, Bytes: 1 << 30}, 0, log)
	srv := server.New(server.Config{Loop: "bench"}, pub, log, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pub.Run(ctx, time.Second) }()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	personalizerv1.RegisterPersonalizerServiceServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(func() {
		gs.Stop()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return lis.Addr().String()
}

// TestBenchCommand runs personalizer bench against a live server, as fast
// as it can and at a fixed rate.
func TestBenchCommand(t *testing.T) {
	addr := startRankServer(t)
	const result = `requests [1-9][0-9]*  QPS [0-9]+  latency p50 \S+  p90 \S+  p99 \S+  max \S+`
	const cpu = `  bench CPU [0-9]+ µs/request`
	for _, tc := range []struct {
		args []string
		want []string // the output's lines after the first, as regular expressions
	}{
		{
			[]string{"--concurrency", "2", "--server-pid", strconv.Itoa(os.Getpid())},
			[]string{"rank  " + result + cpu + `  server CPU [0-9]+ µs/request`, "echo  " + result, `rank/echo QPS [0-9]+\.[0-9]{2}`},
		},
		{
			[]string{"--concurrency", "4", "--qps", "200"},
			[]string{"rank  " + result + cpu, "echo  " + result},
		},
		{
			[]string{"--echo=false", "--actions", "3"},
			[]string{"rank  " + result + cpu},
		},
		{
			[]string{"--call", "stream", "--concurrency", "3", "--server-pid", strconv.Itoa(os.Getpid())},
			[]string{"stream " + result + cpu + `  server CPU [0-9]+ µs/request`},
		},
		{ // every rank logged before the CPU is read (bench fails otherwise)
			[]string{"--call", "local", "--server-pid", strconv.Itoa(os.Getpid())},
			[]string{"local " + result + cpu + `  server CPU [0-9]+ µs/request`},
		},
	} {
		var out, errOut strings.Builder
		args := append([]string{"bench", "--addr", addr, "--duration", "200ms"}, tc.args...)
		if err := run(context.Background(), args, &out, &errOut, noEnv); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, errOut.String())
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 1+len(tc.want) || !regexp.MustCompile(`^(Rank|Stream|Local): [0-9]+ B request`).MatchString(lines[0]) {
			t.Fatalf("%v: output\n%s", tc.args, out.String())
		}
		for i, re := range tc.want {
			if !regexp.MustCompile("^" + re + "$").MatchString(lines[1+i]) {
				t.Errorf("%v: line %q does not match %q", tc.args, lines[1+i], re)
			}
		}
	}
}

// TestBenchEchoProcess serves the echo services as bench --serve-echo does
// and measures them with --call, as a separate process would.
func TestBenchEchoProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	served := make(chan error, 1)
	go func() { served <- run(ctx, []string{"bench", "--serve-echo", "127.0.0.1:0"}, w, io.Discard, noEnv) }()
	first, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, r)
	m := regexp.MustCompile(`^echo and transport services on (\S+) \(pid [0-9]+\)\n$`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("first line %q", first)
	}
	const result = `requests [1-9][0-9]*  QPS [0-9]+  latency p50 \S+  p90 \S+  p99 \S+  max \S+  bench CPU [0-9]+ µs/request  server CPU [0-9]+ µs/request`
	for _, call := range []string{"echo", "transport"} {
		var out strings.Builder
		args := []string{"bench", "--addr", m[1], "--call", call, "--duration", "100ms", "--server-pid", strconv.Itoa(os.Getpid())}
		if err := run(ctx, args, &out, io.Discard, noEnv); err != nil {
			t.Fatalf("%s: %v", call, err)
		}
		want := fmt.Sprintf("^%s: 4859 B request .*\n%-5s %s\n$", strings.ToUpper(call[:1])+call[1:], call, result)
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("--call %s: output\n%s\nwant %s", call, out.String(), want)
		}
	}
	err = run(ctx, []string{"bench", "--addr", m[1], "--call", "rank", "--duration", "100ms"}, io.Discard, io.Discard, noEnv)
	if status.Code(errors.Unwrap(err)) != codes.Unimplemented {
		t.Errorf("rank on the echo process: %v, want Unimplemented", err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("--serve-echo returned %v after its context ended", err)
	}
	w.Close()
}

// TestBenchPlainProcess serves the plain-protobuf server as bench
// --serve-plain does and measures it with --call plain.
func TestBenchPlainProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r, w := io.Pipe()
	served := make(chan error, 1)
	go func() { served <- run(ctx, []string{"bench", "--serve-plain", "127.0.0.1:0"}, w, io.Discard, noEnv) }()
	first, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, r)
	m := regexp.MustCompile(`^plain-protobuf services on (\S+) \(pid [0-9]+\)\n$`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("first line %q", first)
	}
	var out strings.Builder
	args := []string{"bench", "--addr", m[1], "--call", "plain", "--duration", "100ms", "--server-pid", strconv.Itoa(os.Getpid())}
	if err := run(ctx, args, &out, io.Discard, noEnv); err != nil {
		t.Fatal(err)
	}
	want := "^Plain: 4859 B request .*\nplain requests [1-9][0-9]*  QPS [0-9]+  latency p50 \\S+  p90 \\S+  p99 \\S+  max \\S+  bench CPU [0-9]+ µs/request  server CPU [0-9]+ µs/request\n$"
	if !regexp.MustCompile(want).MatchString(out.String()) {
		t.Errorf("--call plain: output\n%s\nwant %s", out.String(), want)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("--serve-plain returned %v after its context ended", err)
	}
	w.Close()
}

func TestBenchCommandErrors(t *testing.T) {
	addr := startRankServer(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--qps", "-1"}, "--qps"},
		{[]string{"--concurrency", "0"}, "--concurrency"},
		{[]string{"--duration", "0s"}, "--duration"},
		{[]string{"--server-pid", "-3"}, "--server-pid"},
		{[]string{"--actions", "0"}, "rank"}, // the server refuses a request without actions
		{[]string{"--call", "bogus"}, `--call "bogus"`},
		{[]string{"--call", "dashboard"}, "dashboard: --qps: want a fixed rate"},
		{[]string{"--call", "dashboard", "--qps", "10"}, "dashboard: want --server-pid and --dashboard-addr, or --spawn"},
		{[]string{"--call", "dashboard", "--qps", "10", "--server-pid", "1", "--dashboard-addr", "x", "--pairs", "0"}, "dashboard: --pairs"},
		{[]string{"--serve-echo", "127.0.0.1:-1"}, "--serve-echo"},
		{[]string{"--serve-plain", "127.0.0.1:-1"}, "--serve-plain"},
	} {
		args := append([]string{"bench", "--addr", addr, "--duration", "100ms"}, tc.args...)
		err := run(context.Background(), args, io.Discard, io.Discard, noEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one about %s", tc.args, err, tc.want)
		}
	}
}
