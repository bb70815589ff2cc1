package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

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
}

// listenAPI listens on both addresses and builds the servers; register
// adds the role's gRPC services before serving starts.
func listenAPI(grpcAddr, httpAddr string, register func(*grpc.Server)) (*api, error) {
	a := &api{mux: http.NewServeMux()}
	var err error
	if a.grpcLis, err = net.Listen("tcp", grpcAddr); err != nil {
		return nil, err
	}
	if a.httpLis, err = net.Listen("tcp", httpAddr); err != nil {
		a.grpcLis.Close()
		return nil, err
	}
	a.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(4 << 20))
	register(a.grpc)
	a.health = health.NewServer()
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	a.http = &http.Server{Handler: a.mux, ReadHeaderTimeout: 10 * time.Second}
	return a, nil
}

// serveGRPC and serveHTTP serve until the servers stop; they are stage functions.
func (a *api) serveGRPC(context.Context) error { return a.grpc.Serve(a.grpcLis) }

func (a *api) serveHTTP(context.Context) error {
	if err := a.http.Serve(a.httpLis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// drain reports not serving, then stops taking calls: in-flight calls get
// up to 10 s to finish before they are cut.
func (a *api) drain() error {
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
