package app

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

func noEnv(string) string { return "" }

// TestTrainCommand runs `personalizer train` as a user would, on VW's
// reference data, for both reference learning rates.
func TestTrainCommand(t *testing.T) {
	t.Parallel()
	tests := []struct{ lr, loss, preds string }{
		{"0.001", "average loss = -0.428200", "pmf_mtr_lr0.001.pred.gz"},
		{"0.1", "average loss = -0.580200", "pmf_mtr_lr0.1.pred.gz"},
	}
	for _, tt := range tests {
		t.Run(tt.lr, func(t *testing.T) {
			t.Parallel()
			preds := filepath.Join(t.TempDir(), "preds")
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"train", "--dsjson", "../../testdata/vw/public_train.dsjson.gz",
				"--policy", "--cb_explore_adf --epsilon 0.2 --power_t 0 -l " + tt.lr + " --cb_type mtr -q ::", "-p", preds}, &stdout, &stderr, noEnv)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tt.loss+"\n") {
				t.Errorf("output does not say %q:\n%s", tt.loss, out)
			}
			got, err := os.ReadFile(preds)
			if err != nil {
				t.Fatal(err)
			}
			if want := gunzip(t, "../../testdata/vw/"+tt.preds); !bytes.Equal(got, want) {
				t.Errorf("-p output differs from VW's %s", tt.preds)
			}
		})
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "no command"},
		{[]string{"serve"}, nil, `unknown command "serve"`},
		{[]string{"train"}, nil, "--dsjson"},
		{[]string{"train", "--dsjson", "x", "--policy", "--cb_explore_adf --bogus"}, nil, "--bogus"},
		{[]string{"dev", "--reward-aggregation", "mean"}, nil, "aggregation"},
		{[]string{"dev"}, map[string]string{"PERSONALIZER_REWARD_WAIT": "soon"}, "PERSONALIZER_REWARD_WAIT"},
		{[]string{"dev", "--policy", "--cb_explore_adf --cb_type nope"}, nil, "policy"},
		{[]string{"server", "--kafka-brokers", " , "}, nil, "--kafka-brokers"},
		{[]string{"server", "--learner-addr", ""}, nil, "--learner-addr"},
		{[]string{"server", "--learning-mode", "Sometimes"}, nil, "learning mode"},
		{[]string{"server", "--event-buffer", "0"}, nil, "--event-buffer"},
		{[]string{"server"}, map[string]string{"PERSONALIZER_MAX_MODEL_BYTES": "-1"}, "--max-model-bytes"},
		{[]string{"learner", "--kafka-brokers", ""}, nil, "--kafka-brokers"},
		{[]string{"learner", "--policy", "--cb_explore_adf --cb_type nope"}, nil, "policy"},
		{[]string{"learner", "--model-export-frequency", "0s"}, nil, "export frequency"},
		{[]string{"health", "--addr", ""}, nil, "--addr"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tt.args, &stdout, &stderr, func(k string) string { return tt.env[k] })
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want it to mention %q", tt.args, err, tt.want)
		}
	}
}

// TestRemoteModels pulls versions from a learner's ModelService over gRPC,
// as a server in another process does, and refuses a corrupted one.
func TestRemoteModels(t *testing.T) {
	t.Parallel()
	store := learner.NewStore()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	eventsv1.RegisterModelServiceServer(gs, learner.NewService("loop", store, nil))
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	remote := server.NewRemoteModels(eventsv1.NewModelServiceClient(conn), "loop", nil)
	srv := server.New(server.Config{Loop: "loop"}, nil, slog.New(slog.DiscardHandler), time.Now)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	policy, err := bandit.ParsePolicy(bandit.DefaultPolicy)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := bandit.NewModel(policy).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	publish := func(v uint64, data []byte, sum []byte) {
		store.Publish(&eventsv1.GetModelResponse{Info: &eventsv1.ModelInfo{Loop: "loop", Version: v, Sha256: sum}, Data: data})
	}
	good := sha256.Sum256(buf.Bytes())
	publish(1, buf.Bytes(), good[:])
	mv, err := remote.Next(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Load(mv); err != nil || srv.ModelVersion() != 1 {
		t.Fatalf("load version 1: %v (serving %d)", err, srv.ModelVersion())
	}
	publish(2, buf.Bytes(), make([]byte, 32))
	mv, err = remote.Next(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Load(mv); err == nil || !strings.Contains(err.Error(), "checksum") || srv.ModelVersion() != 1 {
		t.Fatalf("corrupt version 2: err %v, serving %d; want a checksum error and version 1 kept", err, srv.ModelVersion())
	}
	if _, err := server.NewRemoteModels(eventsv1.NewModelServiceClient(conn), "other", nil).Next(ctx, 0); err == nil {
		t.Error("a server of another loop got this loop's model")
	}
}

// TestRemoteModelsReconnect stops the learner a server pulls from and
// starts it again on the same address: meanwhile the server keeps its
// model and reports the learner unreachable; then it reconnects by itself
// and takes the next version.
func TestRemoteModelsReconnect(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := learner.NewStore()
	// serve starts a learner's ModelService on addr and returns the
	// address it got.
	var gs *grpc.Server
	serve := func(addr string) string {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		gs = grpc.NewServer()
		eventsv1.RegisterModelServiceServer(gs, learner.NewService("loop", store, nil))
		go gs.Serve(lis)
		t.Cleanup(gs.Stop)
		return lis.Addr().String()
	}
	addr := serve("127.0.0.1:0")
	conn, err := dialLearner(addr, insecure.NewCredentials(), defaultMaxModelBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reachable := make(chan bool, 16)
	asked := make(chan uint64, 1024)
	src := askLog{server.NewRemoteModels(eventsv1.NewModelServiceClient(conn), "loop", func(ok bool) { reachable <- ok }), asked}
	srv := server.New(server.Config{Loop: "loop"}, nil, slog.New(slog.DiscardHandler), time.Now)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.WatchModels(wctx, src) }()
	defer func() { stop(); <-done }()

	expect := func(want bool) {
		t.Helper()
		select {
		case got := <-reachable:
			if got != want {
				t.Fatalf("learner reachable %v, want %v", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("waiting for reachable %v: %v", want, ctx.Err())
		}
	}
	// waitServed waits until WatchModels asks for a version after v: it
	// serves v.
	waitServed := func(v uint64) {
		t.Helper()
		for {
			select {
			case after := <-asked:
				if after == v {
					return
				}
			case <-ctx.Done():
				t.Fatalf("version %d never served (serving %d)", v, srv.ModelVersion())
			}
		}
	}
	publish := func(v uint64) {
		var buf bytes.Buffer
		policy, _ := bandit.ParsePolicy(bandit.DefaultPolicy)
		if _, err := bandit.NewModel(policy).WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(buf.Bytes())
		store.Publish(&eventsv1.GetModelResponse{Info: &eventsv1.ModelInfo{Loop: "loop", Version: v, Sha256: sum[:]}, Data: buf.Bytes()})
	}

	expect(true) // connected before any model exists
	publish(1)
	waitServed(1)
	gs.Stop()
	expect(false)
	if v := srv.ModelVersion(); v != 1 {
		t.Fatalf("serving version %d with the learner away, want 1", v)
	}
	publish(2)
	serve(addr)
	expect(true)
	waitServed(2)
}

// askLog records the version after which a [server.ModelSource] is asked
// for the next one.
type askLog struct {
	server.ModelSource
	asked chan<- uint64
}

func (a askLog) Next(ctx context.Context, after uint64) (*eventsv1.GetModelResponse, error) {
	a.asked <- after
	return a.ModelSource.Next(ctx, after)
}

func gunzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDevStopReport runs `personalizer dev` as a user does and stops it as
// Ctrl-C does: it says what it wrote to Kafka while stopping, what it
// lost, and where the learner stands.
func TestDevStopReport(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--broker-addr", "127.0.0.1:0",
			"--data-dir", t.TempDir(), "--log-level", "error"}, pw, io.Discard, noEnv)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() {
		t.Fatalf("no output: %v", <-done)
	}
	var addr string
	if _, err := fmt.Sscanf(lines.Text(), "personalizer dev: gRPC %s", &addr); err != nil {
		t.Fatalf("first line %q: %v", lines.Text(), err)
	}
	if dash := regexp.MustCompile(`^personalizer dev: dashboard http://127\.0\.0\.1:[0-9]+/$`); !lines.Scan() || !dash.MatchString(lines.Text()) {
		t.Fatalf("second line %q, want the dashboard's address", lines.Text())
	}
	conn, err := grpc.NewClient(strings.TrimSuffix(addr, ","), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := personalizerv1.NewPersonalizerServiceClient(conn).Rank(ctx, &personalizerv1.RankRequest{Actions: []*personalizerv1.Action{{Id: "a"}}}); err != nil {
		t.Fatal(err)
	}
	cancel()
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stop := regexp.MustCompile(`^personalizer dev: stopped; [0-9]+ events written to Kafka while stopping, 0 lost$`)
	learned := regexp.MustCompile(`^personalizer dev: learner at model version [0-9]+, [0-9]+ examples learned in all$`)
	if len(rest) != 2 || !stop.MatchString(rest[0]) || !learned.MatchString(rest[1]) {
		t.Errorf("output after the stop:\n%s", strings.Join(rest, "\n"))
	}
}
