package app

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/learner"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// TestModelHistoryREST lists the kept model versions (--model-history 3)
// over REST: the newest 3, newest first, as the learner's history holds
// them; a loop key sees its own loop's and is refused another's.
func TestModelHistoryREST(t *testing.T) {
	t.Parallel()
	// A bound for failures, not a wait.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	keyDefault, lineDefault := server.NewKey("default", "web")
	keyShop, lineShop := server.NewKey("shop", "web")
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte(lineDefault+"\n"+lineShop+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := startTestDev(t, testConfig(t, dir, "--api-keys", keys, "--model-history", "3"))
	defer d.close()
	client := personalizerv1.NewPersonalizerServiceClient(keyedConn(t, d.grpcAddr(), keyDefault))

	// Rounds of events until the learner has published 4 versions or
	// more (each round publishes one at least), then none is pending.
	total := 0
	for d.store.Latest().GetInfo().GetVersion() < 4 {
		const events = 200
		if _, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: uint64(total + 1), Concurrency: 4}, testWriter{t}); err != nil {
			t.Fatal(err)
		}
		total += events
		if err := d.learner.Wait(ctx, func(learner.Stats) bool {
			return d.store.Latest().GetInfo().GetExamples() >= uint64(total)
		}); err != nil {
			t.Fatal(err)
		}
	}

	type version struct {
		Version          string    `json:"version"`
		CreationTime     time.Time `json:"creationTime"`
		LastModifiedTime time.Time `json:"lastModifiedTime"`
		Examples         uint64    `json:"examples"`
		RollbackOf       string    `json:"rollbackOf,omitempty"`
	}
	latest := d.store.Latest().GetInfo().GetVersion()
	var want struct {
		Versions []version `json:"versions"`
	}
	for v := latest; v > latest-3; v-- {
		mv, err := d.store.Get(v)
		if err != nil {
			t.Fatal(err)
		}
		info := mv.GetInfo()
		want.Versions = append(want.Versions, version{Version: strconv.FormatUint(v, 10), CreationTime: info.GetModelCreated().AsTime(),
			LastModifiedTime: info.GetCreated().AsTime(), Examples: info.GetExamples()})
	}
	wantJSON, _ := json.Marshal(want)
	base := "http://" + d.api.httpLis.Addr().String() + "/personalizer/v1.0"
	if code, body := keyedREST(t, ctx, "GET", base+"/model/history", "", keyDefault, ""); code != 200 || body != string(wantJSON)+"\n" {
		t.Errorf("GET /model/history: %d %s\nwant %s", code, body, wantJSON)
	}
	// gRPC: the same versions.
	resp, err := personalizerv1.NewAdminServiceClient(keyedConn(t, d.grpcAddr(), keyDefault)).ListModelVersions(ctx, &personalizerv1.ListModelVersionsRequest{})
	if err != nil || len(resp.GetVersions()) != len(want.Versions) {
		t.Fatalf("ListModelVersions = %v, %v", resp, err)
	}
	for i, p := range resp.GetVersions() {
		w := want.Versions[i]
		if strconv.FormatUint(p.GetVersion(), 10) != w.Version || p.GetExamples() != w.Examples || !p.GetLastModifiedTime().AsTime().Equal(w.LastModifiedTime) || p.GetRollbackOf() != 0 {
			t.Errorf("ListModelVersions[%d] = %v, want %+v", i, p, w)
		}
	}
	if _, err := personalizerv1.NewAdminServiceClient(keyedConn(t, d.grpcAddr(), keyShop)).ListModelVersions(ctx, &personalizerv1.ListModelVersionsRequest{Loop: "default"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListModelVersions of another loop: %v, want PermissionDenied", err)
	}
	if code, body := keyedREST(t, ctx, "GET", base+"/model/history", "", keyShop, "default"); code != 403 {
		t.Errorf("GET /model/history of another loop: %d %s, want 403", code, body)
	}
	if code, body := keyedREST(t, ctx, "GET", base+"/model/history", "", "", ""); code != 401 {
		t.Errorf("GET /model/history without a key: %d %s, want 401", code, body)
	}
}
