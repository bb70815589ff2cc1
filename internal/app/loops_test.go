package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/open-personalizer/personalizer/client"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// keyedConn dials addr sending key with every call.
func keyedConn(t *testing.T, addr, key string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(client.APIKey(key)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestTwoLoops runs two loops in one dev process, each simulated with its
// own hidden reward model: each learns its own world, from its own events
// only (exact counts, per-loop metrics), and a loop's key is refused on
// every route of the other loop.
func TestTwoLoops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	keyDefault, lineDefault := server.NewKey("default", "web")
	keyShop, lineShop := server.NewKey("shop", "web")
	keyAdmin, lineAdmin := server.NewKey("*", "ops")
	keys, admins := filepath.Join(dir, "keys"), filepath.Join(dir, "admin-keys")
	if err := os.WriteFile(keys, []byte(lineDefault+"\n"+lineShop+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(admins, []byte(lineAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := startTestDev(t, testConfig(t, dir, "--api-keys", keys, "--admin-keys", admins))
	defer d.close()
	addr := d.grpcAddr()

	// Only an admin key creates loops.
	policy := &personalizerv1.Policy{Name: "test", Arguments: "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.01 --cb_type mtr -q ::"}
	svc := &personalizerv1.ServiceConfiguration{RewardWaitTime: durationpb.New(time.Second), RewardAggregation: "earliest",
		ExplorationPercentage: 0.2, ModelExportFrequency: durationpb.New(100 * time.Millisecond), LogRetentionDays: -1, LearningMode: "Online"}
	create := &personalizerv1.CreateLoopRequest{Loop: "shop", Service: svc, Policy: policy}
	if _, err := personalizerv1.NewAdminServiceClient(keyedConn(t, addr, keyDefault)).CreateLoop(ctx, create); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("CreateLoop with a loop key: %v, want PermissionDenied", err)
	}
	if _, err := personalizerv1.NewAdminServiceClient(keyedConn(t, addr, keyAdmin)).CreateLoop(ctx, create); err != nil {
		t.Fatal(err)
	}

	// Two worlds: the simulations' seeds make different hidden reward models.
	const events = 6000
	type result struct {
		res sim.Result
		err error
	}
	run := func(key string, seed uint64) <-chan result {
		c := personalizerv1.NewPersonalizerServiceClient(keyedConn(t, addr, key))
		out := make(chan result, 1)
		go func() {
			res, err := sim.Run(ctx, c, sim.Config{Events: events, Seed: seed, Window: 1000, Concurrency: 4, Rate: 2000}, testWriter{t})
			out <- result{res, err}
		}()
		return out
	}
	rd, rs := run(keyDefault, 21), run(keyShop, 22)
	for name, ch := range map[string]<-chan result{"default": rd, "shop": rs} {
		r := <-ch
		if r.err != nil {
			t.Fatalf("loop %s: %v", name, r.err)
		}
		t.Logf("loop %s: %+v", name, r.res)
		if r.res.RewardLastWindow < r.res.RandomPolicyReward+0.05 {
			t.Errorf("loop %s did not learn its world: last window %.3f, random policy %.3f, best %.3f",
				name, r.res.RewardLastWindow, r.res.RandomPolicyReward, r.res.BestPolicyReward)
		}
	}
	// Each learner learned its own loop's events, exactly.
	shop, _ := d.svc.Commands("shop").(*learner.Learner)
	if shop == nil {
		t.Fatal("no learner for loop shop")
	}
	for name, l := range map[string]*learner.Learner{"default": d.learner, "shop": shop} {
		if err := l.Wait(ctx, func(s learner.Stats) bool { return s.Learned >= events && s.OtherLoops >= events }); err != nil {
			t.Fatalf("loop %s: %v (%+v)", name, err, l.Stats())
		}
		if st := l.Stats(); st.Learned != events || st.Duplicates != 0 || st.OtherLoops != events {
			t.Errorf("loop %s learner: %+v, want %d learned and %d of the other loop skipped", name, st, events, events)
		}
	}
	metrics := scrape(t, d.api.httpLis.Addr().String())
	for _, name := range []string{"default", "shop"} {
		if got := metrics[fmt.Sprintf("personalizer_learner_examples_total{loop=%q}", name)]; got != events {
			t.Errorf("loop %s: personalizer_learner_examples_total %v, want %d", name, got, events)
		}
		if got := metrics[fmt.Sprintf("personalizer_server_model_version{loop=%q}", name)]; got < 1 {
			t.Errorf("loop %s: personalizer_server_model_version %v", name, got)
		}
	}
	if a, b := d.srv.LoopModelInfo("default"), d.srv.LoopModelInfo("shop"); bytes.Equal(a.GetSha256(), b.GetSha256()) || b.GetLoop() != "shop" {
		t.Errorf("the loops' models: %v and %v", a, b)
	}

	// Cross-loop calls are refused on every route.
	shopCtx := metadata.AppendToOutgoingContext(ctx, strings.ToLower(server.LoopHeader), "default")
	api := personalizerv1.NewPersonalizerServiceClient(keyedConn(t, addr, keyShop))
	if _, err := api.Rank(shopCtx, fourActions("cross")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Rank for another loop: %v", err)
	}
	if _, err := api.Reward(shopCtx, &personalizerv1.RewardRequest{EventId: "cross", Value: 1}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Reward for another loop: %v", err)
	}
	adm := personalizerv1.NewAdminServiceClient(keyedConn(t, addr, keyShop))
	if _, err := adm.GetServiceConfiguration(ctx, &personalizerv1.GetServiceConfigurationRequest{Loop: "default"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("GetServiceConfiguration of another loop: %v", err)
	}
	if _, err := adm.ResetModel(ctx, &personalizerv1.ResetModelRequest{Loop: "default"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ResetModel of another loop: %v", err)
	}
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0"
	for _, route := range []struct{ method, path, body string }{
		{"POST", "/rank", `{"contextFeatures":[{"a":"b"}],"actions":[{"id":"x","features":[{"f":1}]}]}`},
		{"POST", "/events/cross/reward", `{"value":1}`},
		{"POST", "/events/cross/activate", ""},
		{"GET", "/configurations/service", ""},
		{"PUT", "/configurations/service", `{}`},
		{"GET", "/configurations/policy", ""},
		{"PUT", "/configurations/policy", `{"name":"x","arguments":"--cb_explore_adf"}`},
		{"DELETE", "/configurations/policy", ""},
		{"GET", "/model", ""},
		{"PUT", "/model", "x"},
		{"DELETE", "/model", ""},
		{"GET", "/model/properties", ""},
		{"GET", "/logs/properties", ""},
		{"DELETE", "/logs", ""},
	} {
		code, body := keyedREST(t, ctx, route.method, base+route.path, route.body, keyShop, "default")
		if code != 403 || !strings.Contains(body, `"InvalidApiAccess"`) {
			t.Errorf("%s %s for another loop: %d %s", route.method, route.path, code, body)
		}
	}
	// The loops share the event log: one loop's logs cannot be deleted alone.
	if code, body := keyedREST(t, ctx, "DELETE", base+"/logs", "", keyShop, ""); code != 503 {
		t.Errorf("DELETE /logs with two loops: %d %s, want 503 OperationNotAllowed", code, body)
	}
	// Its own loop's key reads its own loop's configuration.
	if code, body := keyedREST(t, ctx, "GET", base+"/configurations/service", "", keyShop, ""); code != 200 || !strings.Contains(body, `"modelExportFrequency":"PT0.1S"`) {
		t.Errorf("the shop key reads its loop's configuration: %d %s", code, body)
	}
}

// keyedREST makes a REST call with an API key, naming loop (if not empty),
// and returns the status and the body.
func keyedREST(t *testing.T, ctx context.Context, method, url, body, key, loop string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set(server.KeyHeader, key)
	}
	if loop != "" {
		req.Header.Set(server.LoopHeader, loop)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(out)
}
