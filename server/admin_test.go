package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

var (
	_ ModelAdmin = (*RemoteModelAdmin)(nil)
	_ ModelAdmin = (*fakeModels)(nil)
	_ LogAdmin   = (*fakeLogs)(nil)
)

// fakeConfigs stores configurations in a registry, as the Kafka-backed
// writer does once it has read its write back.
type fakeConfigs struct {
	reg *loop.Registry
	err error
}

func (f *fakeConfigs) Put(_ context.Context, c *loop.Config) error {
	if f.err != nil {
		return f.err
	}
	f.reg.Set(c)
	return nil
}

func (f *fakeConfigs) Delete(_ context.Context, name string) error {
	f.reg.Delete(name)
	return nil
}

// fakeModels records resets and imports.
// fakeModels publishes what it is asked to srv, as a learner's version
// reaches the servers: a reset as version 9 without examples, an import as
// version 10 of the file.
type fakeModels struct {
	srv     *Server
	fresh   []byte // a model file, published on reset
	mu      sync.Mutex
	resets  []string
	imports [][]byte
}

func (f *fakeModels) publish(name string, data []byte, version, examples uint64) (*eventsv1.ModelInfo, error) {
	mv := versionOf(data, version)
	mv.Info.Loop, mv.Info.Examples = name, examples
	mv.Info.Created, mv.Info.ModelCreated = timestamppb.New(testNow), timestamppb.New(testNow)
	return mv.Info, f.srv.Load(mv)
}

func (f *fakeModels) ResetModel(_ context.Context, name string) (*eventsv1.ModelInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets = append(f.resets, name)
	return f.publish(name, f.fresh, 9, 0)
}

func (f *fakeModels) ImportModel(_ context.Context, name string, data []byte) (*eventsv1.ModelInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.imports = append(f.imports, data)
	return f.publish(name, data, 10, 1)
}

func (f *fakeModels) calls() (resets int, imports [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.resets), slices.Clone(f.imports)
}

// fakeLogs holds a loop's log dates, or none.
type fakeLogs struct {
	mu        sync.Mutex
	from, to  time.Time
	empty     bool
	deleted   []string
	retention []int32
}

func (f *fakeLogs) LogProperties(_ context.Context, _ string) (time.Time, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.empty {
		return time.Time{}, time.Time{}, ErrNoLogs
	}
	return f.from, f.to, nil
}

func (f *fakeLogs) DeleteLogs(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, name)
	return nil
}

func (f *fakeLogs) SetRetention(_ context.Context, days int32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retention = append(f.retention, days)
	return nil
}

// adminEnv is a server of loop "test" following a registry, with its
// REST API (admin routes added) and gRPC API (PersonalizerService and
// AdminService behind the Guard's interceptors).
type adminEnv struct {
	srv    *Server
	reg    *loop.Registry
	mem    *eventlog.Mem
	models *fakeModels
	logs   *fakeLogs
	url    string // REST base URL, with /personalizer
	admin  personalizerv1.AdminServiceClient
	rank   personalizerv1.PersonalizerServiceClient
	// Keys: of loop "test", of loop "other", and an admin key.
	testKey, otherKey, adminKey string
}

// newAdminEnv starts an adminEnv; with keys false, authentication is off.
func newAdminEnv(t *testing.T, keys bool) *adminEnv {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	e := &adminEnv{reg: loop.NewRegistry(loop.Default("test")), models: &fakeModels{},
		logs: &fakeLogs{from: testNow.Add(-48 * time.Hour), to: testNow}}
	e.mem = eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	pub := NewPublisher(e.mem, BufferLimits{Records: 1000, Bytes: 1 << 30}, 0, log)
	e.srv = New(Config{Loop: "test", Configs: e.reg}, pub, log, func() time.Time { return testNow })
	e.models.srv, e.models.fresh = e.srv, modelFile(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { pub.Run(ctx, time.Second) })
	wg.Go(func() { e.srv.WatchConfig(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	gcfg := GuardConfig{Loop: "test"}
	if keys {
		var lt, lo, la string
		e.testKey, lt = NewKey("test", "web")
		e.otherKey, lo = NewKey("other", "")
		e.adminKey, la = NewKey("*", "ops")
		dir := t.TempDir()
		gcfg.KeysFile = writeKeys(t, dir+"/keys", lt, lo)
		gcfg.AdminKeysFile = writeKeys(t, dir+"/admin", la)
	}
	g, err := NewGuard(gcfg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAdmin(e.srv, AdminConfig{Guard: g, Configs: &fakeConfigs{reg: e.reg}, Models: e.models, Logs: e.logs,
		ModelSigningKey: []byte(testSigningKey)})

	rest := NewREST(e.srv, g, 1<<20)
	rest.AddAdmin(a)
	hs := httptest.NewServer(rest)
	t.Cleanup(hs.Close)
	e.url = hs.URL + "/personalizer"

	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(auth.UnaryServerInterceptor(g.Authenticate)),
		grpc.ChainStreamInterceptor(auth.StreamServerInterceptor(g.Authenticate)))
	Register(gs, e.srv)
	RegisterAdmin(gs, a)
	go gs.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); gs.Stop() })
	e.admin = personalizerv1.NewAdminServiceClient(conn)
	e.rank = personalizerv1.NewPersonalizerServiceClient(conn)
	return e
}

// call sends a REST request with key (none if empty) and returns the
// response with its body read.
// exportModel is the file gRPC ExportModel streams for req.
func (e *adminEnv) exportModel(ctx context.Context, req *personalizerv1.ExportModelRequest) ([]byte, error) {
	s, err := e.admin.ExportModel(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m.GetChunk()...)
	}
}

// importModel imports data into loop name with gRPC ImportModel, in two
// chunks.
func (e *adminEnv) importModel(ctx context.Context, name string, data []byte) error {
	s, err := e.admin.ImportModel(ctx)
	if err != nil {
		return err
	}
	s.Send(&personalizerv1.ImportModelRequest{Loop: name, Chunk: data[:len(data)/2]})
	s.Send(&personalizerv1.ImportModelRequest{Chunk: data[len(data)/2:]})
	_, err = s.CloseAndRecv()
	return err
}

func call(t *testing.T, method, url, key, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set(KeyHeader, key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// errorCode returns the code and target of a Personalizer error body.
func errorCode(t *testing.T, body []byte) (code, target string) {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Target  string `json:"target"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not a Personalizer error body (%v): %s", err, body)
	}
	return e.Error.Code, e.Error.Target
}

// modelFile is a model file of the default policy.
func modelFile(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := bandit.NewModel(mustParse(t, bandit.DefaultPolicy)).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// waitConfig waits until the server applies configuration version v.
func waitConfig(t *testing.T, srv *Server, v uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for srv.LoopConfig().Version != v {
		if time.Now().After(deadline) {
			t.Fatalf("configuration version %d not applied; at %d", v, srv.LoopConfig().Version)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAdminREST checks every admin route of both API versions: status,
// JSON names and error bodies.
func TestAdminREST(t *testing.T) {
	t.Parallel()
	for _, v := range RESTVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			e := newAdminEnv(t, true)
			base, key := e.url+"/"+v, e.testKey

			// The service configuration: Personalizer's names, ISO 8601 durations.
			resp, body := call(t, "GET", base+"/configurations/service", key, "")
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("GET service: %d %s", resp.StatusCode, body)
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"rewardWaitTime": "PT10M", "defaultReward": 0.0, "rewardAggregation": "earliest",
				"explorationPercentage": 0.2, "modelExportFrequency": "PT5M", "logMirrorEnabled": false, "logRetentionDays": 90.0,
				"learningMode": "Online", "isAutoOptimizationEnabled": false, "autoOptimizationFrequency": "P28D",
				"isInferenceExplainabilityEnabled": false}
			if !equalJSON(got, want) {
				t.Errorf("GET service = %v, want %v", got, want)
			}

			// PUT then GET: the stored configuration, and the new retention applied.
			put := `{"rewardWaitTime":"PT1H","defaultReward":-0.5,"rewardAggregation":"Sum","explorationPercentage":0.5,
				"modelExportFrequency":"00:01:00","logMirrorEnabled":false,"logRetentionDays":30,"learningMode":"Online",
				"isAutoOptimizationEnabled":false,"autoOptimizationFrequency":"P7D","unknownField":1}`
			resp, body = call(t, "PUT", base+"/configurations/service", key, put)
			if resp.StatusCode != 200 {
				t.Fatalf("PUT service: %d %s", resp.StatusCode, body)
			}
			_, again := call(t, "GET", base+"/configurations/service", key, "")
			if !bytes.Equal(body, again) {
				t.Errorf("PUT answered %s, GET %s", body, again)
			}
			var stored map[string]any
			json.Unmarshal(again, &stored)
			for k, w := range map[string]any{"rewardWaitTime": "PT1H", "defaultReward": -0.5, "rewardAggregation": "sum",
				"explorationPercentage": 0.5, "modelExportFrequency": "PT1M", "logRetentionDays": 30.0,
				"lastConfigurationEditDate": "2026-01-01T00:00:00Z", "autoOptimizationFrequency": "P7D"} {
				if stored[k] != w {
					t.Errorf("stored %s = %v, want %v", k, stored[k], w)
				}
			}
			if c := e.reg.Get("test"); c.Version != 1 || c.Service.ExplorationPercentage != 0.5 {
				t.Errorf("registry holds %+v", c)
			}
			if e.logs.retention == nil || e.logs.retention[0] != 30 {
				t.Errorf("retention set to %v, want [30]", e.logs.retention)
			}

			// Multi-slot came with v1.1-preview.1; this loop is single-slot.
			msStatus, msCode := 400, "InvalidMultiSlotApiAccess"
			if v == "v1.0" {
				msStatus, msCode = 404, "ResourceNotFound"
			}
			// Errors: wrong types name the field; invalid values carry loop's code.
			errTests := []struct {
				name, method, path, body string
				status                   int
				code, target             string
			}{
				{"mode with reward", "PUT", "/configurations/service", strings.Replace(strings.Replace(put, `"Online"`, `"Apprentice"`, 1), "-0.5", "0.25", 1),
					400, "InvalidLearningModeServiceConfiguration", ""},
				{"duration as number", "PUT", "/configurations/service", `{"rewardWaitTime":600}`, 400, "BadRequest", "rewardWaitTime"},
				{"bad duration", "PUT", "/configurations/service", `{"rewardWaitTime":"10 minutes"}`, 400, "BadRequest", "rewardWaitTime"},
				{"number as string", "PUT", "/configurations/service", strings.Replace(put, `"explorationPercentage":0.5`, `"explorationPercentage":"0.5"`, 1), 400, "BadRequest", "explorationPercentage"},
				{"bad date", "PUT", "/configurations/service", `{"autoOptimizationStartDate":"yesterday"}`, 400, "BadRequest", "autoOptimizationStartDate"},
				{"exploration over 1", "PUT", "/configurations/service", strings.Replace(put, `"explorationPercentage":0.5`, `"explorationPercentage":1.5`, 1), 400, "InvalidServiceConfiguration", ""},
				{"retention too short", "PUT", "/configurations/service", strings.NewReplacer(`"PT1H"`, `"P2D"`, `"logRetentionDays":30`, `"logRetentionDays":2`).Replace(put), 400, "InvalidLogRetentionDays", ""},
				{"not JSON", "PUT", "/configurations/service", `{"rewardWaitTime":`, 400, "BadRequest", ""},
				{"not an object", "PUT", "/configurations/policy", `[1]`, 400, "BadRequest", ""},
				{"policy without name", "PUT", "/configurations/policy", `{"arguments":"--cb_explore_adf"}`, 400, "InvalidPolicyContract", ""},
				{"policy not cb", "PUT", "/configurations/policy", `{"name":"x","arguments":"--cats 4"}`, 400, "InvalidPolicyConfiguration", ""},
				{"policy name as number", "PUT", "/configurations/policy", `{"name":1,"arguments":"--cb_explore_adf"}`, 400, "BadRequest", "name"},
				// Without an EvaluationAdmin (internal/app tests them with one).
				{"evaluations", "GET", "/evaluations", "", 503, "OperationNotAllowed", ""},
				{"evaluation", "POST", "/evaluations", `{}`, 503, "OperationNotAllowed", ""},
				{"apply from evaluation", "POST", "/configurations/applyFromEvaluation", `{}`, 503, "OperationNotAllowed", ""},
				{"multi-slot", "POST", "/multislot/rank", `{}`, msStatus, msCode, ""},
				{"feature importances", "GET", "/featureImportances", "", 404, "ResourceNotFound", ""},
			}
			for _, tt := range errTests {
				resp, body := call(t, tt.method, base+tt.path, key, tt.body)
				if resp.StatusCode != tt.status {
					t.Errorf("%s: %d %s, want %d", tt.name, resp.StatusCode, body, tt.status)
					continue
				}
				code, target := errorCode(t, body)
				if tt.code != "" && code != tt.code || target != tt.target {
					t.Errorf("%s: code %q target %q, want %q %q (%s)", tt.name, code, target, tt.code, tt.target, body)
				}
			}
			if c := e.reg.Get("test"); c.Version != 1 {
				t.Errorf("refused changes stored version %d", c.Version)
			}

			// The policy: PUT, GET, DELETE resets to the default.
			resp, body = call(t, "PUT", base+"/configurations/policy", key, `{"name":"mine","arguments":"--cb_explore_adf --epsilon 0.1"}`)
			if resp.StatusCode != 200 || string(body) != `{"name":"mine","arguments":"--cb_explore_adf --epsilon 0.1"}`+"\n" {
				t.Errorf("PUT policy: %d %s", resp.StatusCode, body)
			}
			if resp, body = call(t, "GET", base+"/configurations/policy", key, ""); string(body) != `{"name":"mine","arguments":"--cb_explore_adf --epsilon 0.1"}`+"\n" {
				t.Errorf("GET policy: %d %s", resp.StatusCode, body)
			}
			resp, body = call(t, "DELETE", base+"/configurations/policy", key, "")
			var p loop.Policy
			json.Unmarshal(body, &p)
			if resp.StatusCode != 200 || p != (loop.Policy{Name: loop.DefaultPolicyName, Arguments: bandit.DefaultPolicy}) {
				t.Errorf("DELETE policy: %d %s", resp.StatusCode, body)
			}
			if c := e.reg.Get("test"); c.Version != 3 || c.Policy != p {
				t.Errorf("registry holds version %d policy %+v", c.Version, c.Policy)
			}

			// The model: none yet, then the served version's bytes.
			for _, path := range []string{"/model", "/model/properties"} {
				resp, body = call(t, "GET", base+path, key, "")
				if code, _ := errorCode(t, body); resp.StatusCode != 404 || code != "ResourceNotFound" {
					t.Errorf("GET %s before a model: %d %s", path, resp.StatusCode, body)
				}
			}
			data := modelFile(t)
			mv := versionOf(data, 3)
			mv.Info.Created = timestamppb.New(testNow.Add(time.Hour))
			mv.Info.ModelCreated = timestamppb.New(testNow)
			if err := e.srv.Load(mv); err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{"", "?signed=false"} {
				resp, body = call(t, "GET", base+"/model"+q, key, "")
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" || !bytes.Equal(body, data) ||
					resp.Header.Get("Last-Modified") != testNow.Add(time.Hour).Format(http.TimeFormat) {
					t.Errorf("GET /model%s: %d %v, %d bytes", q, resp.StatusCode, resp.Header, len(body))
				}
			}
			if resp, _ = call(t, "HEAD", base+"/model", key, ""); resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) || resp.Header.Get("Last-Modified") == "" {
				t.Errorf("HEAD /model: %d %v", resp.StatusCode, resp.Header)
			}
			resp, body = call(t, "GET", base+"/model/properties", key, "")
			if resp.StatusCode != 200 || string(body) != `{"creationTime":"2026-01-01T00:00:00Z","lastModifiedTime":"2026-01-01T01:00:00Z"}`+"\n" {
				t.Errorf("GET /model/properties: %d %s", resp.StatusCode, body)
			}

			// Import: a model file is passed on; a corrupt one changes nothing.
			if resp, body = call(t, "PUT", base+"/model", key, string(data)); resp.StatusCode != 204 || len(body) != 0 {
				t.Errorf("PUT /model: %d %s", resp.StatusCode, body)
			}
			for _, bad := range [][]byte{[]byte("not a model"), data[:len(data)/2], nil} {
				resp, body = call(t, "PUT", base+"/model", key, string(bad))
				if code, _ := errorCode(t, body); resp.StatusCode != 400 || code != "InvalidModelImportFormat" {
					t.Errorf("PUT /model with %d corrupt bytes: %d %s", len(bad), resp.StatusCode, body)
				}
			}
			if _, imports := e.models.calls(); len(imports) != 1 || !bytes.Equal(imports[0], data) {
				t.Errorf("imports %d, want the one valid file", len(imports))
			}
			if resp, body = call(t, "DELETE", base+"/model", key, ""); resp.StatusCode != 204 || len(body) != 0 {
				t.Errorf("DELETE /model: %d %s", resp.StatusCode, body)
			}
			if resets, _ := e.models.calls(); resets != 1 {
				t.Errorf("%d resets, want 1", resets)
			}

			// Logs.
			resp, body = call(t, "GET", base+"/logs/properties", key, "")
			if resp.StatusCode != 200 || string(body) != `{"dateRange":{"from":"2025-12-30T00:00:00Z","to":"2026-01-01T00:00:00Z"}}`+"\n" {
				t.Errorf("GET /logs/properties: %d %s", resp.StatusCode, body)
			}
			if resp, body = call(t, "DELETE", base+"/logs", key, ""); resp.StatusCode != 204 || len(body) != 0 || len(e.logs.deleted) != 1 || e.logs.deleted[0] != "test" {
				t.Errorf("DELETE /logs: %d %s, deleted %v", resp.StatusCode, body, e.logs.deleted)
			}
			e.logs.mu.Lock()
			e.logs.empty = true
			e.logs.mu.Unlock()
			resp, body = call(t, "GET", base+"/logs/properties", key, "")
			if code, _ := errorCode(t, body); resp.StatusCode != 404 || code != "LogsPropertiesNotFound" {
				t.Errorf("GET /logs/properties without logs: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// equalJSON compares decoded JSON objects.
func equalJSON(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// adminRoutes are the admin REST routes, with a valid body where one is needed.
var adminRoutes = []struct{ method, path, body string }{
	{"GET", "/configurations/service", ""},
	{"PUT", "/configurations/service", `{"rewardWaitTime":"PT10M","rewardAggregation":"earliest","explorationPercentage":0.2,"modelExportFrequency":"PT5M","logRetentionDays":90}`},
	{"GET", "/configurations/policy", ""},
	{"PUT", "/configurations/policy", `{"name":"p","arguments":"--cb_explore_adf"}`},
	{"DELETE", "/configurations/policy", ""},
	{"GET", "/model", ""},
	{"PUT", "/model", "x"},
	{"DELETE", "/model", ""},
	{"GET", "/model/properties", ""},
	{"DELETE", "/logs", ""},
	{"GET", "/logs/properties", ""},
	{"POST", "/rank", `{"contextFeatures":[{"a":1}],"actions":[{"id":"x","features":[{"b":1}]}]}`},
	{"POST", "/events/e/reward", `{"value":1}`},
	{"POST", "/events/e/activate", ""},
	{"POST", "/model/rollback", `{"version":"1"}`},
	{"GET", "/model/history", ""},
	{"GET", "/events/e", ""},
}

// TestAdminRESTKeys checks that every route refuses another loop's key
// (403 InvalidApiAccess) and a missing key (401), and takes an admin key.
func TestAdminRESTKeys(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	e.srv.Load(versionOf(modelFile(t), 1))
	for _, v := range RESTVersions {
		for _, r := range adminRoutes {
			url := e.url + "/" + v + r.path
			resp, body := call(t, r.method, url, e.otherKey, r.body)
			if code, _ := errorCode(t, body); resp.StatusCode != 403 || code != "InvalidApiAccess" {
				t.Errorf("%s %s with another loop's key: %d %s", r.method, url, resp.StatusCode, body)
			}
			if resp, body = call(t, r.method, url, "", r.body); resp.StatusCode != 401 {
				t.Errorf("%s %s without a key: %d %s", r.method, url, resp.StatusCode, body)
			}
			// PUT /model takes no "x"; this server has no model history
			// nor event log for rollbacks and audits (503).
			if resp, body = call(t, r.method, url, e.adminKey, r.body); resp.StatusCode >= 300 && !(r.path == "/model" && r.method == "PUT") &&
				!(resp.StatusCode == 503 && (r.path == "/model/rollback" || r.path == "/model/history" || r.path == "/events/e")) {
				t.Errorf("%s %s with an admin key: %d %s", r.method, url, resp.StatusCode, body)
			}
		}
	}
}

// TestAdminGRPC checks the AdminService: each method for the caller's own
// loop, PermissionDenied for another loop, loops for admin keys only.
func TestAdminGRPC(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, true)
	data := modelFile(t)
	mv := versionOf(data, 2)
	mv.Info.Created = timestamppb.New(testNow)
	if err := e.srv.Load(mv); err != nil {
		t.Fatal(err)
	}
	keyed := func(key string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "ocp-apim-subscription-key", key)
	}
	svc := &personalizerv1.ServiceConfiguration{RewardWaitTime: durationpb.New(time.Minute), RewardAggregation: "earliest",
		ExplorationPercentage: 0.3, ModelExportFrequency: durationpb.New(time.Minute), LogRetentionDays: 90}
	// Every loop-scoped method, for a loop name.
	ops := []struct {
		name string
		call func(ctx context.Context, name string) error
	}{
		{"GetServiceConfiguration", func(ctx context.Context, n string) error {
			_, err := e.admin.GetServiceConfiguration(ctx, &personalizerv1.GetServiceConfigurationRequest{Loop: n})
			return err
		}},
		{"UpdateServiceConfiguration", func(ctx context.Context, n string) error {
			_, err := e.admin.UpdateServiceConfiguration(ctx, &personalizerv1.UpdateServiceConfigurationRequest{Loop: n, Configuration: svc})
			return err
		}},
		{"GetPolicy", func(ctx context.Context, n string) error {
			_, err := e.admin.GetPolicy(ctx, &personalizerv1.GetPolicyRequest{Loop: n})
			return err
		}},
		{"UpdatePolicy", func(ctx context.Context, n string) error {
			_, err := e.admin.UpdatePolicy(ctx, &personalizerv1.UpdatePolicyRequest{Loop: n, Policy: &personalizerv1.Policy{Name: "p", Arguments: "--cb_explore_adf"}})
			return err
		}},
		{"ResetPolicy", func(ctx context.Context, n string) error {
			_, err := e.admin.ResetPolicy(ctx, &personalizerv1.ResetPolicyRequest{Loop: n})
			return err
		}},
		{"ExportModel", func(ctx context.Context, n string) error {
			_, err := e.exportModel(ctx, &personalizerv1.ExportModelRequest{Loop: n})
			return err
		}},
		{"ImportModel", func(ctx context.Context, n string) error { return e.importModel(ctx, n, data) }},
		{"ResetModel", func(ctx context.Context, n string) error {
			_, err := e.admin.ResetModel(ctx, &personalizerv1.ResetModelRequest{Loop: n})
			return err
		}},
		{"GetModelProperties", func(ctx context.Context, n string) error {
			_, err := e.admin.GetModelProperties(ctx, &personalizerv1.GetModelPropertiesRequest{Loop: n})
			return err
		}},
		{"GetLogProperties", func(ctx context.Context, n string) error {
			_, err := e.admin.GetLogProperties(ctx, &personalizerv1.GetLogPropertiesRequest{Loop: n})
			return err
		}},
		{"DeleteLogs", func(ctx context.Context, n string) error {
			_, err := e.admin.DeleteLogs(ctx, &personalizerv1.DeleteLogsRequest{Loop: n})
			return err
		}},
		{"GetLoop", func(ctx context.Context, n string) error {
			_, err := e.admin.GetLoop(ctx, &personalizerv1.GetLoopRequest{Loop: n})
			return err
		}},
	}
	for _, op := range ops {
		for _, name := range []string{"", "test"} {
			if err := op.call(keyed(e.testKey), name); err != nil {
				t.Errorf("%s(%q) with the loop's key: %v", op.name, name, err)
			}
		}
		err := op.call(keyed(e.testKey), "other")
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), "InvalidApiAccess: ") {
			t.Errorf("%s(other) with loop test's key: %v", op.name, err)
		}
		if err := op.call(keyed(e.otherKey), ""); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s with another server's loop key: %v", op.name, err)
		}
		if err := op.call(context.Background(), ""); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s without a key: %v", op.name, err)
		}
		if err := op.call(keyed(e.adminKey), ""); err != nil {
			t.Errorf("%s with an admin key: %v", op.name, err)
		}
	}

	// Exports answer the served bytes; an invalid file and an invalid
	// configuration carry Personalizer's code.
	ctx := keyed(e.testKey)
	if got, err := e.exportModel(ctx, &personalizerv1.ExportModelRequest{}); err != nil || !bytes.Equal(got, data) {
		t.Errorf("export: %d bytes, %v", len(got), err)
	}
	if err := e.importModel(ctx, "", []byte("corrupt model file")); status.Code(err) != codes.InvalidArgument ||
		!strings.HasPrefix(status.Convert(err).Message(), "InvalidModelImportFormat: ") {
		t.Errorf("import of a corrupt file: %v", err)
	}
	bad := proto.Clone(svc).(*personalizerv1.ServiceConfiguration)
	bad.LearningMode, bad.DefaultReward = "Apprentice", 1
	_, err := e.admin.UpdateServiceConfiguration(ctx, &personalizerv1.UpdateServiceConfigurationRequest{Configuration: bad})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "InvalidLearningModeServiceConfiguration: ") {
		t.Errorf("mode and reward in one update: %v", err)
	}
	got, err := e.admin.GetServiceConfiguration(ctx, &personalizerv1.GetServiceConfigurationRequest{})
	if err != nil || got.GetConfiguration().GetExplorationPercentage() != 0.3 || got.GetConfiguration().GetRewardWaitTime().AsDuration() != time.Minute {
		t.Errorf("service configuration after the update: %v, %v", got, err)
	}
	props, err := e.admin.GetModelProperties(ctx, &personalizerv1.GetModelPropertiesRequest{})
	served := e.srv.ModelInfo() // the last reset or import above
	if p := props.GetProperties(); err != nil || p.GetVersion() != served.GetVersion() || p.GetExamples() != served.GetExamples() || !p.GetCreationTime().AsTime().Equal(testNow) {
		t.Errorf("model properties: %v, %v", props, err)
	}

	// Loops: an admin key creates, lists and deletes; a loop key cannot.
	for _, tt := range []struct {
		key  string
		want codes.Code
	}{{e.testKey, codes.PermissionDenied}, {"", codes.Unauthenticated}} {
		ctx := keyed(tt.key)
		if tt.key == "" {
			ctx = context.Background()
		}
		_, err1 := e.admin.CreateLoop(ctx, &personalizerv1.CreateLoopRequest{Loop: "new"})
		_, err2 := e.admin.ListLoops(ctx, &personalizerv1.ListLoopsRequest{})
		_, err3 := e.admin.DeleteLoop(ctx, &personalizerv1.DeleteLoopRequest{Loop: "test"})
		for _, err := range []error{err1, err2, err3} {
			if status.Code(err) != tt.want {
				t.Errorf("loop operation with key %q: %v, want %v", tt.key, err, tt.want)
			}
		}
	}
	actx := keyed(e.adminKey)
	created, err := e.admin.CreateLoop(actx, &personalizerv1.CreateLoopRequest{Loop: "new", Service: svc})
	if err != nil || created.GetLoop().GetVersion() != 1 || created.GetLoop().GetService().GetExplorationPercentage() != 0.3 ||
		created.GetLoop().GetPolicy().GetArguments() != bandit.DefaultPolicy || created.GetLoop().GetService().GetLearningMode() != loop.Online {
		t.Fatalf("create: %v, %v", created, err)
	}
	// Limits: an admin key sets them, per loop; the loop's Rank obeys them.
	if _, err := e.admin.SetLimits(keyed(e.testKey), &personalizerv1.SetLimitsRequest{Limits: &personalizerv1.Limits{MaxActions: 9}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("SetLimits with a loop key: %v", err)
	}
	lim, err := e.admin.SetLimits(actx, &personalizerv1.SetLimitsRequest{Loop: "new", Limits: &personalizerv1.Limits{MaxActions: 2}})
	if err != nil || lim.GetLoop().GetVersion() != 2 || lim.GetLoop().GetLimits().GetMaxActions() != 2 {
		t.Fatalf("SetLimits: %v, %v", lim, err)
	}
	three := &personalizerv1.RankRequest{Actions: []*personalizerv1.Action{{Id: "a"}, {Id: "b"}, {Id: "c"}}}
	if _, err := e.srv.Rank(metadata.NewIncomingContext(ctx, metadata.Pairs("x-personalizer-loop", "new")), three); status.Code(err) != codes.InvalidArgument {
		t.Errorf("3 actions in a loop limited to 2: %v", err)
	}
	if _, err := e.srv.Rank(context.Background(), three); err != nil {
		t.Errorf("3 actions in the server's own loop: %v", err)
	}
	if _, err := e.admin.CreateLoop(actx, &personalizerv1.CreateLoopRequest{Loop: "new"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("create again: %v", err)
	}
	if _, err := e.admin.CreateLoop(actx, &personalizerv1.CreateLoopRequest{Loop: "a/b"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("create a/b: %v", err)
	}
	list, err := e.admin.ListLoops(actx, &personalizerv1.ListLoopsRequest{})
	if err != nil || len(list.GetLoops()) != 2 || list.GetLoops()[0].GetLoop() != "new" || list.GetLoops()[1].GetLoop() != "test" {
		t.Errorf("list: %v, %v", list, err)
	}
	if _, err := e.admin.GetServiceConfiguration(actx, &personalizerv1.GetServiceConfigurationRequest{Loop: "new"}); err != nil {
		t.Errorf("admin reads loop new: %v", err)
	}
	if _, err := e.admin.GetModelProperties(actx, &personalizerv1.GetModelPropertiesRequest{Loop: "new"}); status.Code(err) != codes.NotFound {
		t.Errorf("model properties of a loop this server does not serve: %v", err)
	}
	if _, err := e.admin.DeleteLoop(actx, &personalizerv1.DeleteLoopRequest{Loop: "new"}); err != nil {
		t.Errorf("delete: %v", err)
	}
	if _, err := e.admin.DeleteLoop(actx, &personalizerv1.DeleteLoopRequest{Loop: "new"}); status.Code(err) != codes.NotFound {
		t.Errorf("delete again: %v", err)
	}
	if _, err := e.admin.GetLoop(actx, &personalizerv1.GetLoopRequest{Loop: "new"}); status.Code(err) != codes.NotFound {
		t.Errorf("get a deleted loop: %v", err)
	}
}

// TestAdminWithoutKeys checks the development default: no keys, every
// call allowed, the server's loop by default.
func TestAdminWithoutKeys(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, false)
	ctx := context.Background()
	resp, err := e.admin.GetLoop(ctx, &personalizerv1.GetLoopRequest{})
	if err != nil || resp.GetLoop().GetLoop() != "test" {
		t.Errorf("GetLoop: %v, %v", resp, err)
	}
	if _, err := e.admin.CreateLoop(ctx, &personalizerv1.CreateLoopRequest{Loop: "b"}); err != nil {
		t.Errorf("CreateLoop: %v", err)
	}
	// A partial service configuration: what it leaves unset (durations,
	// aggregation, mode, retention) takes the defaults.
	c, err := e.admin.CreateLoop(ctx, &personalizerv1.CreateLoopRequest{Loop: "c",
		Service: &personalizerv1.ServiceConfiguration{RewardWaitTime: durationpb.New(time.Minute), ExplorationPercentage: 0.1}})
	def := loop.Default("c").Service
	if got := c.GetLoop().GetService(); err != nil || got.GetRewardWaitTime().AsDuration() != time.Minute || got.GetExplorationPercentage() != 0.1 ||
		got.GetModelExportFrequency().AsDuration() != time.Duration(def.ModelExportFrequency) || got.GetRewardAggregation() != "earliest" ||
		got.GetLearningMode() != loop.Online || got.GetLogRetentionDays() != def.LogRetentionDays ||
		got.GetAutoOptimizationFrequency().AsDuration() != time.Duration(def.AutoOptimizationFrequency) {
		t.Errorf("CreateLoop with a partial configuration: %v, %v", c, err)
	}
	if r, body := call(t, "GET", e.url+"/v1.0/configurations/policy", "", ""); r.StatusCode != 200 {
		t.Errorf("GET policy: %d %s", r.StatusCode, body)
	}
}

// rankRecord ranks req and returns the answer and the rank record logged.
func rankRecord(t *testing.T, e *adminEnv, req *personalizerv1.RankRequest, n int) (*personalizerv1.RankResponse, *eventsv1.RankEvent) {
	t.Helper()
	resp, err := e.srv.Rank(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var ev eventsv1.RankEvent
	if err := proto.Unmarshal(loggedRecord(t, e.mem, n).Value, &ev); err != nil {
		t.Fatal(err)
	}
	return resp, &ev
}

// probabilities returns a ranking's probabilities, largest first.
func probabilities(resp *personalizerv1.RankResponse) []float32 {
	var ps []float32
	for _, r := range resp.GetRanking() {
		ps = append(ps, r.GetProbability())
	}
	slices.SortFunc(ps, func(a, b float32) int {
		switch {
		case a > b:
			return -1
		case a < b:
			return 1
		}
		return 0
	})
	return ps
}

// TestRankFollowsConfiguration changes the configuration in the registry
// and checks that Rank applies it at once: explorationPercentage as
// epsilon (before the first model: uniform), the learning mode, the
// join rules in the rank record; and that a reset model serves uniformly.
func TestRankFollowsConfiguration(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, false)
	req := validRank()
	req.Actions = actions(4)
	set := func(edit func(c *loop.Config)) *loop.Config {
		next := *e.reg.Get("test")
		next.Version++
		edit(&next)
		e.reg.Set(&next)
		waitConfig(t, e.srv, next.Version)
		return &next
	}
	uniform := []float32{0.25, 0.25, 0.25, 0.25}

	// Before a model: uniform whatever epsilon. Version 0 (from flags)
	// logs no rules: the joiners judge by their own flags.
	resp, ev := rankRecord(t, e, req, 1)
	if got := probabilities(resp); !slices.Equal(got, uniform) {
		t.Errorf("before a model: %v", got)
	}
	if ev.GetRules() != nil {
		t.Errorf("rules %v under version 0, want none", ev.GetRules())
	}
	c1 := set(func(c *loop.Config) { c.Service.ExplorationPercentage = 0.5 })
	if resp, _ = rankRecord(t, e, req, 2); !slices.Equal(probabilities(resp), uniform) {
		t.Errorf("before a model, epsilon 0.5: %v", probabilities(resp))
	}

	// A trained model: epsilon 0.5 over 4 actions, exactly.
	loadTrained(t, e.srv, req, req.Actions[2].Id)
	resp, ev = rankRecord(t, e, req, 3)
	if got, want := probabilities(resp), []float32{0.625, 0.125, 0.125, 0.125}; !slices.Equal(got, want) {
		t.Errorf("epsilon 0.5: %v, want %v", got, want)
	}
	if !proto.Equal(ev.GetRules(), c1.JoinRules()) || ev.GetRules().GetConfigVersion() != 1 {
		t.Errorf("rules %v, want version 1's", ev.GetRules())
	}

	// Another change: new epsilon, reward rules and mode, at once.
	c2 := set(func(c *loop.Config) {
		c.Service.ExplorationPercentage = 0
		c.Service.RewardWaitTime = loop.Duration(time.Minute)
		c.Service.DefaultReward = -1
		c.Service.RewardAggregation = "sum"
		c.Service.LearningMode = loop.Apprentice
	})
	resp, ev = rankRecord(t, e, req, 4)
	if got := probabilities(resp); !slices.Equal(got, []float32{1, 0, 0, 0}) {
		t.Errorf("epsilon 0: %v", got)
	}
	if want := (&eventsv1.JoinRules{RewardWaitMs: 60_000, DefaultReward: -1, Aggregation: "sum", ConfigVersion: 2}); !proto.Equal(ev.GetRules(), want) || !proto.Equal(ev.GetRules(), c2.JoinRules()) {
		t.Errorf("rules %v, want %v", ev.GetRules(), want)
	}
	if ev.GetLearningMode() != eventsv1.LearningMode_LEARNING_MODE_APPRENTICE || resp.GetRewardActionId() != req.Actions[0].Id {
		t.Errorf("apprentice: mode %v, answer %s", ev.GetLearningMode(), resp.GetRewardActionId())
	}

	// A reset model (fresh: every weight 0, every action tied) serves
	// uniformly.
	mv := versionOf(modelFile(t), 7)
	mv.Info.Examples = 0
	if err := e.srv.Load(mv); err != nil {
		t.Fatal(err)
	}
	resp, ev = rankRecord(t, e, req, 5)
	if got := probabilities(resp); !slices.Equal(got, uniform) || resp.GetModelVersion() != "7" {
		t.Errorf("reset model: %v, version %q", got, resp.GetModelVersion())
	}
}

// TestRankWithoutConfigs checks the flag-only server: its configuration
// is made from Config, and its records carry no join rules.
func TestRankWithoutConfigs(t *testing.T) {
	t.Parallel()
	srv, mem := modeServer(t, eventsv1.LearningMode_LEARNING_MODE_APPRENTICE)
	c := srv.LoopConfig()
	if c.Version != 0 || c.Service.LearningMode != loop.Apprentice || c.Service.ExplorationPercentage != 0.2 || c.Policy.Arguments != bandit.DefaultPolicy {
		t.Errorf("configuration from flags: %+v", c)
	}
	if _, err := srv.Rank(context.Background(), validRank()); err != nil {
		t.Fatal(err)
	}
	var ev eventsv1.RankEvent
	if err := proto.Unmarshal(loggedRecord(t, mem, 1).Value, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Rules != nil || ev.LearningMode != eventsv1.LearningMode_LEARNING_MODE_APPRENTICE {
		t.Errorf("rules %v, mode %v", ev.Rules, ev.LearningMode)
	}
}

// fakeModelService is a learner's ModelService that refuses imports.
type fakeModelService struct {
	eventsv1.ModelServiceClient
	err error
}

func (f fakeModelService) ImportModel(context.Context, *eventsv1.ImportModelRequest, ...grpc.CallOption) (*eventsv1.ImportModelResponse, error) {
	return nil, f.err
}

func (f fakeModelService) ResetModel(context.Context, *eventsv1.ResetModelRequest, ...grpc.CallOption) (*eventsv1.ResetModelResponse, error) {
	return nil, f.err
}

// TestRemoteModelAdmin checks the learner's answers: InvalidArgument is a
// bad model file, anything else a failure.
func TestRemoteModelAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := NewRemoteModelAdmin(fakeModelService{err: status.Error(codes.InvalidArgument, "bad magic")})
	if _, err := r.ImportModel(ctx, "l", []byte("x")); !errors.Is(err, ErrInvalidModel) {
		t.Errorf("InvalidArgument: %v", err)
	}
	r = NewRemoteModelAdmin(fakeModelService{err: status.Error(codes.Unavailable, "down")})
	if _, err := r.ImportModel(ctx, "l", []byte("x")); err == nil || errors.Is(err, ErrInvalidModel) {
		t.Errorf("Unavailable: %v", err)
	}
	if _, err := r.ResetModel(ctx, "l"); status.Code(err) != codes.Unavailable {
		t.Errorf("reset: %v", err)
	}
}

// TestAdminModelSizeBound checks that a policy, a new loop's policy or an
// imported model whose weights would take more than MaxModelBytes is
// refused before anything allocates them.
func TestAdminModelSizeBound(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, false)
	a := NewAdmin(e.srv, AdminConfig{Configs: &fakeConfigs{reg: e.reg}, Models: e.models, MaxModelBytes: 1 << 20})
	ctx := context.Background()
	code := func(err error) string {
		var le *loop.Error
		if errors.As(err, &le) {
			return le.Code
		}
		return fmt.Sprint(err)
	}
	big := loop.Policy{Name: "big", Arguments: "--cb_explore_adf -b 18"} // 4 MiB
	if _, err := a.setPolicy(ctx, "", &big); code(err) != "InvalidPolicyConfiguration" || !strings.Contains(err.Error(), "4194304 bytes") {
		t.Errorf("a 4 MiB policy under a 1 MiB limit: %v", err)
	}
	if _, err := a.setPolicy(ctx, "", &loop.Policy{Name: "small", Arguments: "--cb_explore_adf -b 15"}); err != nil {
		t.Errorf("a 512 KiB policy: %v", err)
	}
	c := loop.Default("big")
	c.Version, c.Policy = 1, big
	if _, err := a.createLoop(ctx, c); code(err) != "InvalidPolicyConfiguration" {
		t.Errorf("a new loop with a 4 MiB policy: %v", err)
	}
	before := len(e.models.imports)
	if _, err := a.importModel(ctx, "", modelFile(t)); code(err) != "InvalidModelImportFormat" {
		t.Errorf("importing a 4 MiB model: %v", err)
	}
	if _, imports := e.models.calls(); len(imports) != before {
		t.Error("a refused import reached the learner")
	}
}
