package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/open-personalizer/personalizer/client"
	"github.com/open-personalizer/personalizer/internal/telemetry"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
	"github.com/open-personalizer/personalizer/server"
)

// securityConfig is how every serving role protects its API: TLS, API
// keys, per-key rate limits and the largest message it reads.
type securityConfig struct {
	TLSCert, TLSKey string // the server's certificate and key, PEM; TLS is off without them
	TLSClientCA     string // PEM CAs that sign client certificates: mTLS when set
	APIKeys         string // keys file (see server.GuardConfig); keys are off without it
	AdminKeys       string // admin keys file: keys for every loop and for creating and deleting loops
	RateLimit       float64
	RateBurst       int
	MaxMessageBytes int
	ModelSigningKey string // file of the secret that signs model exports and checks signed imports
	// Loop is the loop whose keys the API accepts; the role sets it.
	Loop string
	// HTTP bounds how long the HTTP listener waits for clients; zero
	// fields are the defaults (no flags: tests shorten them).
	HTTP httpTimeouts
}

func (c *securityConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate of the gRPC and HTTP listeners; TLS is off without it")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM CA certificates; when set, clients must present a certificate they signed (mTLS)")
	fs.StringVar(&c.APIKeys, "api-keys", "", `API keys file, lines "loop sha256hex [name]" (personalizer keygen); no file: no keys needed`)
	fs.StringVar(&c.AdminKeys, "admin-keys", "", `admin API keys file, in --api-keys' format (loop column "*"): keys that may address every loop, and create and delete loops`)
	fs.Float64Var(&c.RateLimit, "rate-limit", 0, "requests per second per API key; 0: no limit")
	fs.IntVar(&c.RateBurst, "rate-burst", 100, "token bucket size: requests a key may make at once before --rate-limit paces it")
	fs.IntVar(&c.MaxMessageBytes, "max-message-bytes", 4<<20, "largest gRPC message or REST body read")
}

// registerModelFlags adds the flags of the roles that serve the admin
// API's model routes (dev, server).
func (c *securityConfig) registerModelFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ModelSigningKey, "model-signing-key", "", "`file` holding a secret of at least 32 bytes (surrounding whitespace ignored): the HMAC-SHA256 key of signed model exports (GET /model?signed=true) and imports; without it both are refused")
}

// minSigningKey is the shortest model signing key taken: HMAC-SHA256's
// output size.
const minSigningKey = 32

// modelSigningKey reads --model-signing-key; nil without one.
func (c *securityConfig) modelSigningKey() ([]byte, error) {
	if c.ModelSigningKey == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.ModelSigningKey)
	if err != nil {
		return nil, fmt.Errorf("--model-signing-key: %w", err)
	}
	if b = bytes.TrimSpace(b); len(b) < minSigningKey {
		return nil, fmt.Errorf("--model-signing-key %s: %d bytes, want at least %d", c.ModelSigningKey, len(b), minSigningKey)
	}
	return b, nil
}

func (c *securityConfig) validate() error {
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case c.TLSClientCA != "" && c.TLSCert == "":
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	case c.MaxMessageBytes < 1024:
		return fmt.Errorf("--max-message-bytes %d: at least 1024", c.MaxMessageBytes)
	case c.RateLimit < 0 || c.RateBurst < 1:
		return errors.New("--rate-limit must not be negative and --rate-burst must be at least 1")
	}
	return nil
}

// callerConfig is how a process calls a protected API: the client
// commands (simulate, bench, health) with their own flags, and a server
// calling its learner.
type callerConfig struct {
	APIKey          string
	Loop            string // the loop to call; empty: the key's, or the service's own
	TLSCA           string // PEM CAs of the server's certificate; plaintext without it
	TLSCert, TLSKey string // the client's certificate, for mTLS
}

func (c *callerConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.APIKey, "api-key", "", "API key to send, when the service requires keys")
	fs.StringVar(&c.Loop, "loop", "", "the loop to call, of a service that serves several (sent as x-personalizer-loop); empty: the API key's loop, or the service's own")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "PEM CA certificates of the service's TLS certificate; TLS is off without it")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM client certificate, for a service that requires them (mTLS)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
}

// dialOptions returns the transport credentials and the API key to dial
// with.
func (c *callerConfig) dialOptions() ([]grpc.DialOption, error) {
	creds, err := c.transportCreds()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if c.APIKey != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(client.APIKey(c.APIKey)))
	}
	if c.Loop != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(client.Loop(c.Loop)))
	}
	return opts, nil
}

// transportCreds returns TLS credentials verifying the server against
// --tls-ca and presenting --tls-cert, or plaintext without --tls-ca.
func (c *callerConfig) transportCreds() (credentials.TransportCredentials, error) {
	if c.TLSCA == "" {
		return insecure.NewCredentials(), nil
	}
	roots, err := loadCertPool(c.TLSCA, "tls CA")
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

// loadCertPool reads the PEM certificates of file; what names it in errors.
func loadCertPool(file, what string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: no PEM certificate in it", what, file)
	}
	return pool, nil
}

// tlsConfig returns the listeners' TLS configuration, nil without TLS.
func (c *securityConfig) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLSClientCA != "" {
		if cfg.ClientCAs, err = loadCertPool(c.TLSClientCA, "tls client CA"); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// api is what a serving process (dev, server, learner) exposes: a gRPC
// server with health and reflection, and an HTTP server. Options common to
// every role (interceptors, limits, TLS) are added here, once.
type api struct {
	grpc    *grpc.Server
	health  *health.Server
	mux     *http.ServeMux
	http    *http.Server
	grpcLis net.Listener
	httpLis net.Listener
	// metrics is the process's registry, served on GET /metrics; roles
	// register their components' metrics before serving starts.
	metrics *prometheus.Registry

	guard           *server.Guard
	maxMessageBytes int
	wrapREST        func(http.Handler) http.Handler // the REST API's recovery, logging and metrics
	hup             chan os.Signal                  // SIGHUP reloads the API keys
	stopReload      chan struct{}                   // closed by drain
	// rest is the REST API, once handleREST made it.
	rest *server.REST
	// status, when set before serving starts, is what GET /healthz
	// answers, as JSON; without it the answer is "ok".
	status func() any
}

// listenAPI listens on both addresses and builds the servers; register
// adds the role's gRPC services before serving starts; opts are the role's
// own server options. API keys and rate limits guard the
// PersonalizerService (gRPC and REST) only: health, reflection and the
// learner's ModelService are for the operator's own processes, which mTLS
// protects.
func listenAPI(grpcAddr, httpAddr string, sec securityConfig, log *slog.Logger, register func(*grpc.Server), opts ...grpc.ServerOption) (*api, error) {
	tlsCfg, err := sec.tlsConfig()
	if err != nil {
		return nil, err
	}
	a := &api{mux: http.NewServeMux(), metrics: newRegistry(), maxMessageBytes: sec.MaxMessageBytes, stopReload: make(chan struct{})}
	a.guard, err = server.NewGuard(server.GuardConfig{Loop: sec.Loop, KeysFile: sec.APIKeys, AdminKeysFile: sec.AdminKeys, RateLimit: sec.RateLimit, RateBurst: sec.RateBurst}, time.Now)
	if err != nil {
		return nil, err
	}
	if a.grpcLis, err = net.Listen("tcp", grpcAddr); err != nil {
		return nil, err
	}
	if a.httpLis, err = net.Listen("tcp", httpAddr); err != nil {
		a.grpcLis.Close()
		return nil, err
	}
	public := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service == personalizerv1.PersonalizerService_ServiceDesc.ServiceName ||
			c.Service == personalizerv1.AdminService_ServiceDesc.ServiceName
	})
	unary, stream, wrapREST := telemetry.ServerInterceptors(log, a.metrics)
	a.wrapREST = wrapREST
	opts = append([]grpc.ServerOption{grpc.MaxRecvMsgSize(sec.MaxMessageBytes),
		grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}, opts...)
	opts = append(opts,
		// Chained after the recovery, logging and tracing/metrics interceptors.
		grpc.ChainUnaryInterceptor(
			selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(a.guard.Authenticate), public),
			selector.UnaryServerInterceptor(ratelimit.UnaryServerInterceptor(a.guard), public)),
		grpc.ChainStreamInterceptor(
			selector.StreamServerInterceptor(auth.StreamServerInterceptor(a.guard.Authenticate), public),
			selector.StreamServerInterceptor(ratelimit.StreamServerInterceptor(a.guard), public),
			selector.StreamServerInterceptor(a.guard.LimitStreamMessages, public)))
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	a.grpc = grpc.NewServer(opts...)
	register(a.grpc)
	a.health = health.NewServer()
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}))
	a.http = newHTTPServer(http.HandlerFunc(a.serveMux), sec.HTTP)
	a.http.TLSConfig = tlsCfg
	if tlsCfg == nil {
		log.Warn("TLS is off: the API is served in plaintext; set --tls-cert and --tls-key")
	}
	if !a.guard.AuthEnabled() {
		log.Warn("API keys are off: any caller may use the API; set --api-keys to require keys")
		return a, nil
	}
	a.hup = make(chan os.Signal, 1)
	signal.Notify(a.hup, syscall.SIGHUP)
	go a.reloadKeys(log, sec.APIKeys)
	return a, nil
}

// serveMux serves a.mux. A path starting with "//" is served as if it
// started with one slash: Personalizer's SDKs join an endpoint ending in a
// slash and "/personalizer/..." so, and ServeMux would answer with a
// redirect, which clients follow with a GET.
func (a *api) serveMux(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "//") {
		r.URL.Path = "/" + strings.TrimLeft(r.URL.Path, "/")
		if r.URL.RawPath != "" {
			r.URL.RawPath = "/" + strings.TrimLeft(r.URL.RawPath, "/")
		}
	}
	a.mux.ServeHTTP(w, r)
}

// reloadKeys reads the keys file again on every SIGHUP, until drain.
func (a *api) reloadKeys(log *slog.Logger, file string) {
	for {
		select {
		case <-a.hup:
			if err := a.guard.Reload(); err != nil {
				log.Error("API keys not reloaded; the previous keys stay in force", "err", err)
				continue
			}
			log.Info("API keys reloaded", "file", file)
		case <-a.stopReload:
			return
		}
	}
}

// handleREST serves srv's Personalizer REST API under /personalizer/,
// with the same keys, rate limits, size limit, logging and metrics as the
// gRPC API. With tp each call is a span, a child of the caller's when the
// request has a W3C traceparent header, whose trace goes on through the
// records Rank, Reward and Activate write.
func (a *api) handleREST(srv *server.Server, admin *server.Admin, tp trace.TracerProvider) {
	rest := server.NewREST(srv, a.guard, int64(a.maxMessageBytes))
	if admin != nil {
		rest.AddAdmin(admin)
	}
	a.rest = rest
	h := a.wrapREST(rest)
	if tp != nil {
		// Spans are named by method and route: "POST /personalizer/".
		h = otelhttp.NewHandler(h, "", otelhttp.WithTracerProvider(tp),
			otelhttp.WithPropagators(propagation.TraceContext{}))
	}
	a.mux.Handle("/personalizer/", h)
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	if a.status == nil {
		io.WriteString(w, "ok\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(a.status())
}

// serveGRPC and serveHTTP serve until the servers stop; they are stage functions.
func (a *api) serveGRPC(context.Context) error { return a.grpc.Serve(a.grpcLis) }

func (a *api) serveHTTP(context.Context) error {
	var err error
	if a.http.TLSConfig != nil {
		err = a.http.ServeTLS(a.httpLis, "", "")
	} else {
		err = a.http.Serve(a.httpLis)
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// drain reports not serving, then stops taking calls: in-flight calls get
// up to 10 s to finish before they are cut.
func (a *api) drain() error {
	if a.hup != nil {
		signal.Stop(a.hup)
	}
	close(a.stopReload)
	a.health.Shutdown()
	stopped := make(chan struct{})
	go func() { a.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		a.grpc.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.http.Shutdown(ctx)
}

func (a *api) grpcAddr() string { return a.grpcLis.Addr().String() }
