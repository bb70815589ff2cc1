package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/client"
	"github.com/open-personalizer/personalizer/eventlog"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// secure is a serving API for one loop's server, whose records go to mem.
type secure struct {
	api *api
	mem *eventlog.Mem
}

// startSecure parses args as the security flags of a process serving
// loop, and serves a PersonalizerService (gRPC and REST) writing to mem.
func startSecure(t *testing.T, loop string, mem *eventlog.Mem, args ...string) *secure {
	t.Helper()
	return startSecureLog(t, slog.New(slog.DiscardHandler), loop, mem, args...)
}

// startSecureLog is startSecure logging to log.
func startSecureLog(t *testing.T, log *slog.Logger, loop string, mem *eventlog.Mem, args ...string) *secure {
	t.Helper()
	var sec securityConfig
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	sec.registerFlags(fs)
	if err := parseFlags(fs, args, noEnv); err != nil {
		t.Fatal(err)
	}
	sec.Loop = loop
	if err := sec.validate(); err != nil {
		t.Fatal(err)
	}
	pub := server.NewPublisher(mem, server.BufferLimits{Records: 100, Bytes: 1 << 30}, 0, log)
	srv := server.New(server.Config{Loop: loop}, pub, log, time.Now)
	a, err := listenAPI("127.0.0.1:0", "127.0.0.1:0", sec, log, func(g *grpc.Server) {
		personalizerv1.RegisterPersonalizerServiceServer(g, srv)
	})
	if err != nil {
		t.Fatal(err)
	}
	a.handleREST(srv, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	go func() { done <- a.serveGRPC(ctx) }()
	go func() { done <- a.serveHTTP(ctx) }()
	go func() { done <- pub.Run(ctx, time.Second) }()
	t.Cleanup(func() {
		srv.Shutdown()
		if err := a.drain(); err != nil {
			t.Error(err)
		}
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})
	return &secure{api: a, mem: mem}
}

func (s *secure) client(t *testing.T, creds credentials.TransportCredentials, opts ...grpc.DialOption) personalizerv1.PersonalizerServiceClient {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(s.api.grpcAddr(), append(opts, grpc.WithTransportCredentials(creds))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return personalizerv1.NewPersonalizerServiceClient(conn)
}

// rest posts body to the REST route with key and returns the status and
// Personalizer's error code, if any.
func (s *secure) rest(t *testing.T, c *http.Client, scheme, route, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", scheme+"://"+s.api.httpLis.Addr().String()+"/personalizer/v1.0"+route, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Ocp-Apim-Subscription-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var e struct{ Error struct{ Code string } }
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(out, &e); err != nil {
			t.Fatalf("%d %s: %v", resp.StatusCode, out, err)
		}
	}
	return resp.StatusCode, e.Error.Code
}

func keyed(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "ocp-apim-subscription-key", key)
}

func rankReq(eventID string) *personalizerv1.RankRequest {
	return &personalizerv1.RankRequest{
		EventId: proto.String(eventID),
		Actions: []*personalizerv1.Action{{Id: "a"}, {Id: "b"}},
	}
}

const restRank = `{"contextFeatures":[{"u":"x"}],"actions":[{"id":"a"},{"id":"b"}]}`

// recordKeys waits until mem holds n event records and returns their keys
// by record type.
func recordKeys(t *testing.T, mem *eventlog.Mem, n int) map[string][]string {
	t.Helper()
	r := mem.Reader(eventlog.EventsTopic, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys := map[string][]string{}
	for range n {
		rec, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		keys[rec.Type()] = append(keys[rec.Type()], string(rec.Key))
	}
	total := 0
	for p := range mem.Partitions(eventlog.EventsTopic) {
		total += len(mem.Records(eventlog.EventsTopic, p))
	}
	if total != n {
		t.Errorf("%d records, want %d", total, n)
	}
	return keys
}

// TestAPIKeys: calls without a key, with a wrong or revoked key, or with
// another loop's key are refused over gRPC and REST; both keys of a loop
// work; a loop-B key cannot reward a loop-A event.
func TestAPIKeys(t *testing.T) {
	t.Parallel()
	a1, la1 := server.NewKey("A", "one")
	a2, la2 := server.NewKey("A", "two")
	b1, lb1 := server.NewKey("B", "")
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte(la1+"\n"+la2+"\n"+lb1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 2})
	s := startSecure(t, "A", mem, "--api-keys", keys)
	c := s.client(t, nil)
	ctx := context.Background()

	refused := []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no key", ctx, codes.Unauthenticated},
		{"wrong key", keyed("guess"), codes.Unauthenticated},
		{"loop B's key", keyed(b1), codes.PermissionDenied},
	}
	for _, tt := range refused {
		if _, err := c.Rank(tt.ctx, rankReq("r")); status.Code(err) != tt.want {
			t.Errorf("rank, %s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := s.client(t, nil, grpc.WithPerRPCCredentials(client.APIKey(a1))).Rank(ctx, rankReq("e1")); err != nil {
		t.Fatalf("rank with key one: %v", err)
	}
	bearer := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a2)
	if _, err := c.Reward(bearer, &personalizerv1.RewardRequest{EventId: "e1", Value: 1}); err != nil {
		t.Fatalf("reward with key two: %v", err)
	}
	if _, err := c.Reward(keyed(b1), &personalizerv1.RewardRequest{EventId: "e1", Value: 1}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("reward of loop A's event with loop B's key: %v", err)
	}
	// Health needs no key.
	conn, err := grpc.NewClient(s.api.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without a key: %v", err)
	}

	// REST: the same keys, Personalizer's statuses and error codes.
	hc := http.DefaultClient
	restTests := []struct {
		name, route, key, body string
		status                 int
		code                   string
	}{
		{"no key", "/rank", "", restRank, 401, "401"},
		{"wrong key", "/rank", "guess", restRank, 401, "401"},
		{"loop B's key", "/events/e1/reward", b1, `{"value":1}`, 403, "InvalidApiAccess"},
		{"key one", "/rank", a1, restRank, 201, ""},
		{"key two", "/events/e1/reward", a2, `{"value":0.5}`, 204, ""},
	}
	for _, tt := range restTests {
		if st, code := s.rest(t, hc, "http", tt.route, tt.key, tt.body); st != tt.status || code != tt.code {
			t.Errorf("REST %s: %d %q, want %d %q", tt.name, st, code, tt.status, tt.code)
		}
	}

	// Revoke key one: it is refused, key two still works.
	if err := os.WriteFile(keys, []byte(la2+"\n"+lb1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.api.guard.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Rank(keyed(a1), rankReq("r")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("revoked key: %v", err)
	}
	if st, _ := s.rest(t, hc, "http", "/rank", a1, restRank); st != 401 {
		t.Errorf("REST revoked key: %d", st)
	}
	if _, err := c.Rank(keyed(a2), rankReq("e2")); err != nil {
		t.Errorf("key two after revoking key one: %v", err)
	}

	// Exactly the accepted calls were logged, all under loop A.
	got := recordKeys(t, mem, 5)
	want := map[string][]string{eventlog.TypeRank: {"A/e1", "A/e2"}, eventlog.TypeReward: {"A/e1", "A/e1"}}
	if len(got[eventlog.TypeRank]) != 3 || len(got[eventlog.TypeReward]) != 2 || len(got) != 2 {
		t.Fatalf("records %v", got)
	}
	for _, k := range append(got[eventlog.TypeRank], got[eventlog.TypeReward]...) {
		if !strings.HasPrefix(k, "A/") {
			t.Errorf("record key %q is not loop A's", k)
		}
	}
	for typ, ks := range want {
		for _, k := range ks {
			if !strings.Contains(strings.Join(got[typ], " "), k) {
				t.Errorf("no %s record %s in %v", typ, k, got[typ])
			}
		}
	}

	// A server of loop B takes B's key, and its reward for the same event
	// id is keyed B/e1: it never joins loop A's rank A/e1.
	memB := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	sb := startSecure(t, "B", memB, "--api-keys", keys)
	if _, err := sb.client(t, nil).Reward(keyed(b1), &personalizerv1.RewardRequest{EventId: "e1", Value: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.client(t, nil).Rank(keyed(a2), rankReq("r")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("loop A's key at loop B's server: %v", err)
	}
	if got := recordKeys(t, memB, 1); len(got[eventlog.TypeReward]) != 1 || got[eventlog.TypeReward][0] != "B/e1" {
		t.Errorf("loop B's records %v", got)
	}

	// The client commands send --api-key.
	simulate := func(args ...string) error {
		args = append([]string{"simulate", "--addr", sb.api.grpcAddr(), "--events", "4", "--concurrency", "1", "--rate", "0"}, args...)
		return run(ctx, args, io.Discard, io.Discard, noEnv)
	}
	if err := simulate("--api-key", b1); err != nil {
		t.Errorf("simulate with a key: %v", err)
	}
	if err := simulate(); status.Code(errors.Unwrap(err)) != codes.Unauthenticated {
		t.Errorf("simulate without a key: %v", err)
	}
}

// TestRateLimits: with a bucket that does not refill within the test,
// each key gets exactly its burst, over gRPC calls, RankStream messages
// and REST.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	var keys, lines [3]string
	for i := range keys {
		keys[i], lines[i] = server.NewKey("A", "")
	}
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte(strings.Join(lines[:], "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1})
	s := startSecure(t, "A", mem, "--api-keys", file, "--rate-limit", "1e-9", "--rate-burst", "3")
	c := s.client(t, nil)

	refused := 0
	for range 5 {
		_, err := c.Rank(keyed(keys[0]), rankReq("g"))
		switch status.Code(err) {
		case codes.OK:
		case codes.ResourceExhausted:
			refused++
			if !strings.Contains(err.Error(), "burst 3") {
				t.Errorf("refusal %v does not name the limit", err)
			}
		default:
			t.Fatal(err)
		}
	}
	if refused != 2 {
		t.Errorf("gRPC: %d of 5 refused, want 2", refused)
	}

	// A stream takes a token to open, which its first message uses; each
	// further message takes one: the fourth ends the stream.
	stream, err := c.RankStream(keyed(keys[1]))
	if err != nil {
		t.Fatal(err)
	}
	answered := 0
	for range 5 {
		if err := stream.Send(&personalizerv1.RankStreamRequest{Request: rankReq("s")}); err != nil {
			break // the server ended the stream; Recv says why
		}
		if _, err = stream.Recv(); err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("stream: %v", err)
			}
			break
		}
		answered++
	}
	if answered != 3 {
		t.Errorf("stream: %d answered, want 3", answered)
	}

	statuses := map[int]int{}
	for range 5 {
		st, _ := s.rest(t, http.DefaultClient, "http", "/rank", keys[2], restRank)
		statuses[st]++
	}
	if statuses[201] != 3 || statuses[429] != 2 {
		t.Errorf("REST statuses %v, want 3 201s and 2 429s", statuses)
	}
}

// testPKI is a CA and the certificates it signed, as PEM files.
type testPKI struct {
	dir                   string
	ca                    *x509.CertPool
	serverCert, serverKey string
	caFile                string
	clientCert            tls.Certificate
	caCert                *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	otherClient           tls.Certificate // signed by another CA
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), ca: x509.NewCertPool()}
	var caDER []byte
	p.caCert, p.caKey, caDER = issue(t, "test CA", nil, nil, true)
	p.ca.AddCert(p.caCert)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", caDER)
	_, key, der := issue(t, "server", p.caCert, p.caKey, false)
	p.serverCert = p.write(t, "server.pem", "CERTIFICATE", der)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p.serverKey = p.write(t, "server.key", "EC PRIVATE KEY", kb)
	_, key, der = issue(t, "client", p.caCert, p.caKey, false)
	p.clientCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	otherCA, otherKey, _ := issue(t, "other CA", nil, nil, true)
	_, key, der = issue(t, "stranger", otherCA, otherKey, false)
	p.otherClient = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return p
}

// issue makes a certificate for 127.0.0.1 signed by parent (self-signed
// when parent is nil).
func issue(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, der
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *testPKI) tls(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: p.ca, Certificates: certs, MinVersion: tls.VersionTLS12}
}

// TestTLS: with TLS both listeners take TLS clients and refuse plaintext;
// with mTLS they also refuse clients without a certificate the client CA
// signed.
func TestTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	ctx := context.Background()
	rank := func(s *secure, creds credentials.TransportCredentials) error {
		_, err := s.client(t, creds).Rank(ctx, rankReq("t"))
		return err
	}
	https := func(cfg *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}

	s := startSecure(t, "A", eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1}),
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey)
	if err := rank(s, credentials.NewTLS(p.tls())); err != nil {
		t.Errorf("TLS client: %v", err)
	}
	if err := rank(s, nil); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext gRPC client: %v, want Unavailable", err)
	}
	if st, _ := s.rest(t, https(p.tls()), "https", "/rank", "", restRank); st != 201 {
		t.Errorf("HTTPS rank: %d", st)
	}
	resp, err := http.Post("http://"+s.api.httpLis.Addr().String()+"/personalizer/v1.0/rank", "application/json", strings.NewReader(restRank))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plaintext HTTP: %d, want Go's 400 for HTTP to an HTTPS server", resp.StatusCode)
	}

	m := startSecure(t, "A", eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1}),
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.caFile)
	if err := rank(m, credentials.NewTLS(p.tls(p.clientCert))); err != nil {
		t.Errorf("mTLS client: %v", err)
	}
	for name, cfg := range map[string]*tls.Config{"no client certificate": p.tls(), "another CA's certificate": p.tls(p.otherClient)} {
		if err := rank(m, credentials.NewTLS(cfg)); status.Code(err) != codes.Unavailable {
			t.Errorf("gRPC, %s: %v, want Unavailable", name, err)
		}
		req, _ := http.NewRequest("GET", "https://"+m.api.httpLis.Addr().String()+"/healthz", nil)
		if resp, err := https(cfg).Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("HTTPS, %s: %d, want a handshake error", name, resp.StatusCode)
		}
	}
	if err := rank(m, nil); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext gRPC client with mTLS: %v", err)
	}
	if st, _ := m.rest(t, https(p.tls(p.clientCert)), "https", "/rank", "", restRank); st != 201 {
		t.Errorf("mTLS REST rank: %d", st)
	}

	// A server calling its learner presents its own certificate; the
	// client commands take --tls-ca, --tls-cert and --tls-key.
	peer := callerConfig{TLSCA: p.caFile, TLSCert: p.serverCert, TLSKey: p.serverKey}
	creds, err := peer.transportCreds()
	if err != nil {
		t.Fatal(err)
	}
	if err := rank(m, creds); err != nil {
		t.Errorf("peer with its certificate: %v", err)
	}
	health := func(args ...string) error {
		return run(ctx, append([]string{"health", "--addr", m.api.grpcAddr(), "--tls-ca", p.caFile}, args...), io.Discard, io.Discard, noEnv)
	}
	if err := health("--tls-cert", p.serverCert, "--tls-key", p.serverKey); err != nil {
		t.Errorf("health with a client certificate: %v", err)
	}
	if err := health(); status.Code(errors.Unwrap(err)) != codes.Unavailable {
		t.Errorf("health without a client certificate: %v", err)
	}
}

func TestSecurityFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", "c.pem"}, "go together"},
		{[]string{"--tls-client-ca", "ca.pem"}, "needs --tls-cert"},
		{[]string{"--max-message-bytes", "10"}, "at least 1024"},
		{[]string{"--rate-limit", "-1"}, "must not be negative"},
		{[]string{"--rate-burst", "0"}, "at least 1"},
	}
	for _, tt := range tests {
		var sec securityConfig
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		sec.registerFlags(fs)
		if err := parseFlags(fs, tt.args, noEnv); err != nil {
			t.Fatal(err)
		}
		if err := sec.validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.args, err, tt.want)
		}
	}
	var out strings.Builder
	if err := run(context.Background(), []string{"keygen", "--loop", "shop", "--name", "web"}, &out, io.Discard, noEnv); err != nil {
		t.Fatal(err)
	}
	var key, loop, hash, name string
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "key:  ") || !strings.HasPrefix(lines[1], "line: ") {
		t.Fatalf("keygen printed %q", out.String())
	}
	key = strings.TrimPrefix(lines[0], "key:  ")
	f := strings.Fields(strings.TrimPrefix(lines[1], "line: "))
	if len(f) != 3 {
		t.Fatalf("line %q", lines[1])
	}
	loop, hash, name = f[0], f[1], f[2]
	if loop != "shop" || name != "web" || hash != server.HashKey(key) || len(key) < 20 {
		t.Errorf("keygen: key %q line %q", key, lines[1])
	}
}

// TestMessageLimitAndSDKPaths: a gRPC message or REST body over
// --max-message-bytes is refused with an error that names the limit; a
// REST path with a doubled leading slash is served, not redirected.
func TestMessageLimitAndSDKPaths(t *testing.T) {
	t.Parallel()
	s := startSecure(t, "A", eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1}), "--max-message-bytes", "2048")
	req := rankReq("big")
	req.ContextFeatures = []*personalizerv1.Namespace{{Features: []*personalizerv1.Feature{
		{Name: "blob", Value: &personalizerv1.Feature_StringValue{StringValue: strings.Repeat("b", 2048)}},
	}}}
	_, err := s.client(t, nil).Rank(context.Background(), req)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "2048") {
		t.Errorf("oversized gRPC message: %v", err)
	}
	body := `{"contextFeatures":[{"blob":"` + strings.Repeat("b", 2048) + `"}],"actions":[{"id":"a"}]}`
	if st, code := s.rest(t, http.DefaultClient, "http", "/rank", "", body); st != 400 || code != "PayloadSizeExceeded" {
		t.Errorf("oversized REST body: %d %s", st, code)
	}
	if _, err := s.client(t, nil).Rank(context.Background(), rankReq("small")); err != nil {
		t.Errorf("a small request: %v", err)
	}
	for _, path := range []string{"//personalizer/v1.0/events/a%2Fb/reward", "/personalizer/v1.1-preview.3/events/a%2Fb/reward"} {
		resp, err := http.Post("http://"+s.api.httpLis.Addr().String()+path, "application/json", strings.NewReader(`{"value":1}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
}

// logSignal is a log writer that signals each line containing want.
type logSignal struct {
	want string
	ch   chan struct{}
}

func (l logSignal) Write(p []byte) (int, error) {
	if strings.Contains(string(p), l.want) {
		select {
		case l.ch <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// TestKeysReloadOnSIGHUP revokes a key by editing the keys file and
// sending the process SIGHUP, as an operator would.
func TestKeysReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	k1, l1 := server.NewKey("A", "")
	k2, l2 := server.NewKey("A", "")
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte(l1+"\n"+l2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded := logSignal{want: "API keys reloaded", ch: make(chan struct{}, 1)}
	s := startSecureLog(t, slog.New(slog.NewJSONHandler(reloaded, nil)), "A", eventlog.NewMem(map[string]int{eventlog.EventsTopic: 1}), "--api-keys", file)
	c := s.client(t, nil)
	if _, err := c.Rank(keyed(k1), rankReq("before")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(l2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reloaded.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no reload 10 s after SIGHUP")
	}
	if _, err := c.Rank(keyed(k1), rankReq("after")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("revoked key after SIGHUP: %v", err)
	}
	if _, err := c.Rank(keyed(k2), rankReq("after")); err != nil {
		t.Errorf("remaining key after SIGHUP: %v", err)
	}
}
