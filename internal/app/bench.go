package app

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/client"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/internal/vtcodec"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) (err error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:50051", "gRPC address of the service")
	concurrency := fs.Int("concurrency", 8, "requests in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to send requests")
	qps := fs.Float64("qps", 0, "send at this fixed rate, latency counted from when each request was due (0: as fast as possible)")
	echo := fs.Bool("echo", true, "also measure a plain gRPC echo of the same request, served in this process, and report Rank's share of its QPS")
	serverPID := fs.Int("server-pid", 0, "report the CPU time this local process (the server) spends per request, from /proc")
	dashboardAddr := fs.String("dashboard-addr", "", "dashboard: HTTP address of the server whose dashboard the page polls (with --spawn, the spawned server's)")
	pairs := fs.Int("pairs", 5, "dashboard: how many pairs of runs, page closed and open")
	method := fs.String("call", "rank", "what to call at --addr: rank, stream (Rank over RankStream, one stream per request in flight), "+
		"local (rank in this process with the Go client's local inference, the records sent to the service in LogRanks batches; the run ends when all are sent), echo or transport on a bench --serve-echo process, "+
		"dashboard (Rank at --qps with the dashboard page closed and open, alternating, --pairs times, each run --duration: the --server-pid's CPU in each and the difference; the page's requests made as it makes them, without a browser, to --dashboard-addr), "+
		"pipeline (Rank and Reward until learned: events/s, MB/s, CPU per event of the --pids) reward-to-model (time from each Reward call to the first served model version that learned it), or plain on a bench --serve-plain process")
	serveEcho := fs.String("serve-echo", "", "serve the echo and transport services on this address until interrupted, and measure nothing")
	servePlain := fs.String("serve-plain", "", "serve the plain-protobuf service (a plain grpc-go server: decodes the request with grpc-go's standard protobuf codec, answers an empty RankResponse) on this address until interrupted, and measure nothing")
	actions := fs.Int("actions", 20, "actions per request")
	features := fs.Int("features", 15, "features per action")
	nContext := fs.Int("context", 15, "context features")
	workload := fs.String("workload", "", "seed: the seed's events of 500 features, 10 actions x 45 features and 50 context features (--actions, --features and --context given too win)")
	var brokers string
	brokersVar(fs, &brokers)
	modelAddr := fs.String("model-addr", "", "pipeline, reward-to-model: gRPC address of the learner's ModelService (empty: --addr, as dev serves it)")
	pidList := fs.String("pids", "", "pipeline: role=pid pairs, comma-separated (server=12,joiner=34,...): report each local process's CPU per event")
	spawn := fs.String("spawn", "", "start the loop to measure, each role a process of this binary on loopback ports with its data in a temporary directory, and stop it after: "+
		"dev (one process) or multi (broker, learner, joiner and server); --addr, --model-addr, --kafka-brokers and --pids are then its own")
	rewardWait := fs.Duration("reward-wait", time.Second, "--spawn: the loop's reward wait")
	exportEvery := fs.Duration("model-export-frequency", time.Second, "--spawn: the loop's model export frequency")
	learnTimeout := fs.Duration("learn-timeout", 2*time.Minute, "pipeline, reward-to-model: how long after the last Reward every event must be learned (reward-to-model: in a served model version)")
	var caller callerConfig
	caller.registerFlags(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	switch {
	case *concurrency < 1:
		return errors.New("--concurrency: want at least 1")
	case *duration <= 0:
		return errors.New("--duration: want a positive duration")
	case *qps < 0:
		return errors.New("--qps: want 0 or a positive rate")
	}
	if *serveEcho != "" {
		return serveOn(ctx, *serveEcho, "--serve-echo", "echo and transport", &echoService, stdout)
	}
	if *servePlain != "" {
		return serveOn(ctx, *servePlain, "--serve-plain", "plain-protobuf", &plainService, stdout, grpc.ForceServerCodecV2(vtcodec.Standard()))
	}
	switch *workload {
	case "":
	case "seed":
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, f := range []struct {
			name string
			p    *int
			seed int
		}{{"actions", actions, seedActions}, {"features", features, seedFeatures}, {"context", nContext, seedContext}} {
			if !set[f.name] {
				*f.p = f.seed
			}
		}
	default:
		return fmt.Errorf("--workload %q: want seed or nothing", *workload)
	}
	pids, err := parsePIDs(*pidList)
	if err != nil {
		return err
	}
	dial, err := caller.dialOptions()
	if err != nil {
		return err
	}
	if *spawn != "" {
		s, serr := spawnLoop(ctx, *spawn, *rewardWait, *exportEvery)
		if serr != nil {
			return serr
		}
		defer func() {
			if cerr := s.close(); cerr != nil && err == nil {
				err = fmt.Errorf("--spawn: %w", cerr)
			}
		}()
		*addr, *modelAddr, brokers, pids, *dashboardAddr = s.addr, s.modelAddr, s.brokers, s.pids, s.httpAddr
		for _, p := range s.pids {
			if p.role == "server" || p.role == "dev" {
				*serverPID = p.pid
			}
		}
		var roles []string
		for _, p := range s.pids {
			roles = append(roles, fmt.Sprintf("%s %d", p.role, p.pid))
		}
		fmt.Fprintf(stdout, "spawned %s: %s; reward wait %v, join slack %s, tick interval %s, model export frequency %v\n",
			*spawn, strings.Join(roles, ", "), *rewardWait, spawnJoinSlack, spawnTickInterval, *exportEvery)
	}
	conn, err := grpc.NewClient(*addr, dial...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", *addr, err)
	}
	defer conn.Close()
	req := sim.Request(rand.New(rand.NewPCG(1, 2)), *actions, *features, *nContext)
	var rank func(context.Context) error
	var local *client.Local
	switch *method {
	case "rank", "dashboard":
		client := personalizerv1.NewPersonalizerServiceClient(conn)
		rank = func(ctx context.Context) error {
			_, err := client.Rank(ctx, req)
			return err
		}
	case "stream":
		rank = streamCaller(personalizerv1.NewPersonalizerServiceClient(conn), req, *concurrency)
	case "echo", "transport":
		name := map[string]string{"echo": echoMethod, "transport": transportMethod}[*method]
		rank = func(ctx context.Context) error {
			return conn.Invoke(ctx, name, req, new(personalizerv1.RankRequest))
		}
	case "pipeline", "reward-to-model":
		mconn := conn
		if *modelAddr != "" {
			if mconn, err = grpc.NewClient(*modelAddr, dial...); err != nil {
				return fmt.Errorf("dial %s: %w", *modelAddr, err)
			}
			defer mconn.Close()
		}
		b := &loopBench{client: personalizerv1.NewPersonalizerServiceClient(conn), admin: personalizerv1.NewAdminServiceClient(conn),
			models: eventsv1.NewModelServiceClient(mconn), brokers: splitBrokers(brokers), loop: cmp.Or(caller.Loop, "default"), req: req}
		fmt.Fprintf(stdout, "%s: %d B request (%d actions x %d features, %d context features), %d in flight, %v, %s\n",
			*method, proto.Size(req), *actions, *features, *nContext, *concurrency, *duration, rateString(*qps))
		if *spawn != "" {
			if err := b.warmUp(ctx, stdout, *learnTimeout); err != nil {
				return err
			}
		}
		if *method == "pipeline" {
			return b.runPipeline(ctx, stdout, *concurrency, *duration, *qps, pids, *learnTimeout)
		}
		return b.runRewardToModel(ctx, stdout, *concurrency, *duration, *qps, *learnTimeout)
	case "plain":
		rank = func(ctx context.Context) error {
			return conn.Invoke(ctx, plainMethod, req, new(personalizerv1.RankResponse))
		}
	case "local":
		if local, err = client.NewLocal(ctx, conn, client.LocalConfig{WhenFull: client.Block}); err != nil {
			return err
		}
		defer local.Close(context.Background())
		rank = func(ctx context.Context) error {
			_, err := local.Rank(ctx, req)
			return err
		}
	default:
		return fmt.Errorf("--call %q: want rank, stream, local, echo, transport, plain, dashboard, pipeline or reward-to-model", *method)
	}
	if err := rank(ctx); err != nil {
		return fmt.Errorf("%s: %w", *method, err)
	}
	if *method == "dashboard" {
		switch {
		case *qps <= 0:
			return errors.New("dashboard: --qps: want a fixed rate")
		case *serverPID == 0 || *dashboardAddr == "":
			return errors.New("dashboard: want --server-pid and --dashboard-addr, or --spawn")
		case *pairs < 1:
			return errors.New("dashboard: --pairs: want at least 1")
		}
		return dashboardCost(ctx, stdout, rank, *concurrency, *duration, *qps, *pairs, *serverPID,
			func() *pageClient { return newPageClient(*dashboardAddr, caller.APIKey) })
	}
	var cpu0 time.Duration
	if *serverPID != 0 {
		if cpu0, err = processCPU(*serverPID); err != nil {
			return fmt.Errorf("--server-pid: %w", err)
		}
	}
	own0, err := processCPU(os.Getpid())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d B request (%d actions x %d features, %d context features), %d in flight, %v, %s\n",
		strings.ToUpper((*method)[:1])+(*method)[1:], proto.Size(req), *actions, *features, *nContext, *concurrency, *duration, rateString(*qps))

	r, err := measure(ctx, rank, *concurrency, *duration, *qps)
	if err != nil {
		return fmt.Errorf("%s: %w", *method, err)
	}
	if local != nil { // the run ends when the service has every record
		if err := local.Close(ctx); err != nil {
			return err
		}
		if st := local.Stats(); st.Logged != st.Ranked || st.Dropped+st.Rejected+st.Lost != 0 {
			return fmt.Errorf("local: not every rank was logged: %+v", st)
		}
	}
	own1, err := processCPU(os.Getpid())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-5s %v  bench CPU %.0f µs/request", *method, r, float64((own1-own0).Microseconds())/float64(len(r.lat)))
	if *serverPID != 0 {
		cpu1, err := processCPU(*serverPID)
		if err != nil {
			return fmt.Errorf("--server-pid: %w", err)
		}
		fmt.Fprintf(stdout, "  server CPU %.0f µs/request", float64((cpu1-cpu0).Microseconds())/float64(len(r.lat)))
	}
	fmt.Fprintln(stdout)
	if !*echo || *method != "rank" {
		return nil
	}

	e, err := startEcho()
	if err != nil {
		return err
	}
	defer e.stop()
	econn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial echo: %w", err)
	}
	defer econn.Close()
	call := func(ctx context.Context) error {
		return econn.Invoke(ctx, echoMethod, req, new(personalizerv1.RankRequest))
	}
	if err := call(ctx); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	er, err := measure(ctx, call, *concurrency, *duration, *qps)
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	fmt.Fprintf(stdout, "echo  %v\n", er)
	if *qps == 0 {
		fmt.Fprintf(stdout, "rank/echo QPS %.2f\n", r.qps()/er.qps())
	}
	return nil
}

// rateString says how fast bench sends.
func rateString(qps float64) string {
	if qps > 0 {
		return fmt.Sprintf("at %.0f QPS", qps)
	}
	return "as fast as possible"
}

// benchResult is what one measure run found.
type benchResult struct {
	elapsed time.Duration
	lat     []time.Duration // sorted
}

func (r benchResult) qps() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

func (r benchResult) quantile(p float64) time.Duration {
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

func (r benchResult) String() string {
	return fmt.Sprintf("requests %d  QPS %.0f  latency p50 %v  p90 %v  p99 %v  max %v",
		len(r.lat), r.qps(), r.quantile(0.5), r.quantile(0.9), r.quantile(0.99), r.lat[len(r.lat)-1])
}

// measure calls call from concurrency goroutines for d: each as fast as it
// can when qps is 0, else at qps calls per second in all, each call's
// latency counted from when it was due so that a slow server cannot hide
// its queue. The first error stops the run.
func measure(ctx context.Context, call func(context.Context) error, concurrency int, d time.Duration, qps float64) (benchResult, error) {
	// Calls use ctx itself, not a context with the run's deadline: the
	// server would fail in-flight calls at the deadline.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	end := start.Add(d)
	// due hands out the time each call is due: now, or the next tick.
	due := func() (time.Time, bool) {
		t := time.Now()
		return t, t.Before(end) && ctx.Err() == nil
	}
	if qps > 0 {
		ticks := make(chan time.Time, concurrency)
		go func() {
			defer close(ticks)
			interval := time.Duration(float64(time.Second) / qps)
			for t := start; t.Before(end); t = t.Add(interval) {
				time.Sleep(time.Until(t))
				select {
				case ticks <- t:
				case <-ctx.Done():
					return
				}
			}
		}()
		due = func() (time.Time, bool) {
			t, ok := <-ticks
			return t, ok && ctx.Err() == nil
		}
	}
	var mu sync.Mutex
	var r benchResult
	var firstErr error
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			var mine []time.Duration
			for t, ok := due(); ok; t, ok = due() {
				if err := call(ctx); err != nil {
					mu.Lock()
					if firstErr == nil && ctx.Err() == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					break
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			r.lat = append(r.lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	if firstErr != nil {
		return r, firstErr
	}
	if err := ctx.Err(); err != nil || len(r.lat) == 0 {
		return r, fmt.Errorf("no calls completed: %w", err)
	}
	slices.Sort(r.lat)
	return r, nil
}

// streamCaller returns a call that ranks req over one of up to n
// RankStreams, one request at a time on each.
func streamCaller(client personalizerv1.PersonalizerServiceClient, req *personalizerv1.RankRequest, n int) func(context.Context) error {
	idle := make(chan personalizerv1.PersonalizerService_RankStreamClient, n)
	msg := &personalizerv1.RankStreamRequest{Request: req}
	return func(ctx context.Context) error {
		var stream personalizerv1.PersonalizerService_RankStreamClient
		select {
		case stream = <-idle:
		default:
			var err error
			if stream, err = client.RankStream(ctx); err != nil {
				return err
			}
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		if _, err := stream.Recv(); err != nil {
			return err
		}
		idle <- stream
		return nil
	}
}

// echoMethod is the plain gRPC service bench measures Rank against: it
// answers each request with the request itself, decoded and encoded by the
// same codec Rank's are, and does nothing else.
const echoMethod = "/personalizer.bench.Echo/Echo"

var echoService = grpc.ServiceDesc{
	ServiceName: "personalizer.bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			req := new(personalizerv1.RankRequest)
			if err := dec(req); err != nil {
				return nil, err
			}
			return req, nil
		},
	}},
}

// transportMethod answers every request with an empty message without
// decoding it: what a call costs gRPC alone.
const transportMethod = "/personalizer.bench.Echo/Transport"

func init() {
	echoService.Methods = append(echoService.Methods, grpc.MethodDesc{
		MethodName: "Transport",
		Handler: func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
			return new(personalizerv1.RankRequest), nil
		},
	})
}

// plainMethod is the plain-protobuf server bench measures Rank against:
// a plain grpc-go server, which decodes the request with grpc-go's
// standard protobuf codec (served with it forced, see --serve-plain) and
// answers an empty RankResponse.
const plainMethod = "/personalizer.bench.Plain/Rank"

var plainService = grpc.ServiceDesc{
	ServiceName: "personalizer.bench.Plain",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Rank",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(personalizerv1.RankRequest)); err != nil {
				return nil, err
			}
			return new(personalizerv1.RankResponse), nil
		},
	}},
}

// serveOn serves desc on addr until ctx ends, for bench runs that measure
// it in a process of its own (--call); flag names the flag that asked.
func serveOn(ctx context.Context, addr, flag, what string, desc *grpc.ServiceDesc, stdout io.Writer, opts ...grpc.ServerOption) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	gs := grpc.NewServer(opts...)
	gs.RegisterService(desc, nil)
	fmt.Fprintf(stdout, "%s services on %s (pid %d)\n", what, lis.Addr(), os.Getpid())
	defer context.AfterFunc(ctx, gs.Stop)()
	if err := gs.Serve(lis); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

type echoServer struct {
	addr string
	stop func()
}

// startEcho serves the echo service on a loopback port.
func startEcho() (*echoServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("echo server: %w", err)
	}
	gs := grpc.NewServer()
	gs.RegisterService(&echoService, nil)
	go gs.Serve(lis)
	return &echoServer{addr: lis.Addr().String(), stop: gs.Stop}, nil
}

// processCPU returns the user and system CPU time process pid has used,
// from /proc/pid/stat (Linux; clock ticks of 10 ms).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// fields 14 and 15 (utime, stime) are the 12th and 13th after it.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name, want at least 13", pid, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}
