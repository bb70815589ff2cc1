package app

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/server"
)

// TestHTTPTimeoutValues checks the timeouts the servers get: the write
// timeout always leaves Respond after a read that took all of Read.
func TestHTTPTimeoutValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                          string
		in                            httpTimeouts
		readHeader, read, write, idle time.Duration
	}{
		{"defaults", httpTimeouts{}, 10 * time.Second, time.Minute, 2 * time.Minute, 2 * time.Minute},
		{"shortened read", httpTimeouts{Read: 200 * time.Millisecond}, 10 * time.Second, 200 * time.Millisecond, time.Minute + 200*time.Millisecond, 2 * time.Minute},
		{"all set", httpTimeouts{ReadHeader: time.Second, Read: 2 * time.Second, Respond: 3 * time.Second, Idle: 4 * time.Second},
			time.Second, 2 * time.Second, 5 * time.Second, 4 * time.Second},
	}
	for _, tt := range tests {
		s := newHTTPServer(http.NotFoundHandler(), tt.in)
		if s.ReadHeaderTimeout != tt.readHeader || s.ReadTimeout != tt.read || s.WriteTimeout != tt.write || s.IdleTimeout != tt.idle {
			t.Errorf("%s: read header %v, read %v, write %v, idle %v; want %v, %v, %v, %v", tt.name,
				s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout, tt.readHeader, tt.read, tt.write, tt.idle)
		}
	}
}

// shortHTTP are timeouts short enough for a test to see them act.
var shortHTTP = httpTimeouts{ReadHeader: 300 * time.Millisecond, Read: 300 * time.Millisecond, Idle: 300 * time.Millisecond}

// startTestAPI serves srv's gRPC and REST APIs through listenAPI, as dev
// and server do, logging to log; drain stops serving and returns once
// every call has finished (and logged). Cleanup drains too.
func startTestAPI(t *testing.T, sec securityConfig, log *slog.Logger) (a *api, srv *server.Server, drain func()) {
	t.Helper()
	if sec.Loop == "" {
		sec.Loop = "default"
	}
	if sec.RateBurst == 0 {
		sec.RateBurst = 100
	}
	if sec.MaxMessageBytes == 0 {
		sec.MaxMessageBytes = 1 << 20
	}
	pub := server.NewPublisher(eventlog.NewMem(map[string]int{eventlog.EventsTopic: 2}), server.BufferLimits{Records: 1000, Bytes: 1 << 30}, 0, log)
	srv = server.New(server.Config{Loop: sec.Loop}, pub, log, time.Now)
	a, err := listenAPI("127.0.0.1:0", "127.0.0.1:0", sec, log, func(g *grpc.Server) {
		server.Register(g, srv)
	})
	if err != nil {
		t.Fatal(err)
	}
	a.handleREST(srv, nil, nil)
	ctx := context.Background()
	served := make(chan error, 2)
	go func() { served <- a.serveGRPC(ctx) }()
	go func() { served <- a.serveHTTP(ctx) }()
	drained := false
	drain = func() {
		if drained {
			return
		}
		drained = true
		// Calls end by themselves first (GracefulStop waits for them), so
		// that none ends because the server shut its streams down.
		if err := a.drain(); err != nil {
			t.Error(err)
		}
		srv.Shutdown()
		for range 2 {
			if err := <-served; err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(drain)
	return a, srv, drain
}

// TestHTTPTimeouts holds connections to the API's and the joiner's HTTP
// servers the ways a slow or idle client does: each is closed by the
// server once its (shortened) timeout passes, and the server goes on
// serving other clients.
func TestHTTPTimeouts(t *testing.T) {
	t.Parallel()
	a, _, _ := startTestAPI(t, securityConfig{HTTP: shortHTTP}, slog.New(slog.DiscardHandler))
	m, err := serveMetrics("127.0.0.1:0", newRegistry(), nil, shortHTTP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.close)
	servers := []struct {
		name, addr, post string
		slowBody         string // the answer to a slow body, when one comes
	}{
		{"api", a.httpLis.Addr().String(), "POST /personalizer/v1.0/rank", "HTTP/1.1 408 Request Timeout\r\n"},
		{"metrics", m.addr.String(), "GET /metrics", ""}, // a GET with a body: its handler does not read it
	}
	clients := []struct {
		name string
		send func(t *testing.T, c net.Conn, request string)
	}{
		{"body stops", func(t *testing.T, c net.Conn, request string) {
			write(t, c, request+` HTTP/1.1`+"\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"+`{"actions":`)
		}},
		{"body trickles", func(t *testing.T, c net.Conn, request string) {
			write(t, c, request+` HTTP/1.1`+"\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"+`{"actions":`)
			// A byte every 10 ms until the server closes the connection:
			// 100000 bytes would take over 16 minutes.
			go func() {
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for range tick.C {
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
		}},
		{"headers stop", func(t *testing.T, c net.Conn, request string) {
			write(t, c, request+` HTTP/1.1`+"\r\nHost: x\r\nContent-Ty")
		}},
		{"idle", func(t *testing.T, c net.Conn, _ string) {
			write(t, c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Close {
				t.Fatalf("GET /healthz: %s, close %v; want 200 on a kept-alive connection", resp.Status, resp.Close)
			}
		}},
	}
	for _, s := range servers {
		for _, cl := range clients {
			t.Run(s.name+"/"+cl.name, func(t *testing.T) {
				t.Parallel()
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				cl.send(t, c, s.post)
				checkHealthz(t, s.addr) // others are served meanwhile
				got := readUntilClosed(t, c)
				if strings.HasPrefix(cl.name, "body") && s.slowBody != "" && !strings.HasPrefix(got, s.slowBody) {
					t.Errorf("answered %q, want %q", got, s.slowBody)
				}
				checkHealthz(t, s.addr) // and after
			})
		}
	}
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

// readUntilClosed reads c until the server closes it and returns what it
// read. The minute it allows is a ceiling for a failing test, not a wait:
// the server closes the connection within its shortened timeouts.
func readUntilClosed(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	var got strings.Builder
	_, err := io.Copy(&got, c)
	switch {
	case err == nil, errors.Is(err, syscall.ECONNRESET): // EOF, or a reset: closed
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("the server kept the connection open for a minute; read %q", got.String())
	default:
		t.Fatal(err)
	}
	return got.String()
}

// checkHealthz checks that the HTTP server at addr answers GET /healthz.
func checkHealthz(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s %v", resp.Status, err)
	}
}
