package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// logLine is what the tests read of a JSON log line.
type logLine struct {
	Level, Msg string
	Path       string `json:"http.path"`
	Status     int    `json:"http.status"`
	Method     string `json:"grpc.method"`
	Code       string `json:"grpc.code"`
}

func parseLog(t *testing.T, logs string) []logLine {
	t.Helper()
	var out []logLine
	for l := range strings.Lines(logs) {
		var e logLine
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, e)
	}
	return out
}

// TestRESTClientAbort has REST clients go away in the middle of their
// request bodies, once the handler is reading them (it asked for the body
// with 100 Continue): neither is answered 500 or logged as an error; each
// is logged at Info with status 499. A body that is not JSON and one over
// the size limit stay 400s, and the server goes on serving.
func TestRESTClientAbort(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, _, drain := startTestAPI(t, securityConfig{MaxMessageBytes: 4096}, log)
	addr := a.httpLis.Addr().String()
	const path = "/personalizer/v1.0/rank"

	// The connection closed mid-body.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	write(t, c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue, got %v %v", resp, err)
	}
	write(t, c, `{"actions":[{"id":"a"},`)
	c.Close()

	// The request canceled mid-body.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ExpectContinueTimeout = time.Minute // the body waits for 100 Continue
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	body, bodyw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Expect", "100-continue")
	go func() {
		// The transport reads the body only once the handler asked for it.
		bodyw.Write([]byte(`{"actions":[{"id":"a"},`))
		cancel()
		// The transport waits for the body's writer to stop.
		bodyw.CloseWithError(context.Canceled)
	}()
	if resp, err := (&http.Client{Transport: tr}).Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled request: %v %v", resp, err)
	}

	// Bodies the server refuses.
	for _, tt := range []struct {
		body string
		code string
	}{
		{`{"actions":[`, "BadRequest"},
		{`{"eventId":"` + strings.Repeat("e", 5000) + `"}`, "PayloadSizeExceeded"},
	} {
		resp, err := http.Post("http://"+addr+path, "application/json", strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error struct{ Code string } }
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest || e.Error.Code != tt.code {
			t.Errorf("%.20s...: %s %+v %v, want 400 %s", tt.body, resp.Status, e, err, tt.code)
		}
	}
	// Still serving.
	resp, err = http.Post("http://"+addr+path, "application/json", strings.NewReader(`{"actions":[{"id":"a"},{"id":"b"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("rank after the aborts: %s", resp.Status)
	}

	drain() // every call has finished and logged
	var finished []string
	for _, e := range parseLog(t, logs.String()) {
		if e.Level == "ERROR" {
			t.Errorf("logged at ERROR: %+v", e)
		}
		if e.Msg == "finished call" {
			finished = append(finished, e.Level+" "+e.Path+" "+strconv.Itoa(e.Status))
		}
	}
	slices.Sort(finished)
	want := []string{"INFO " + path + " 400", "INFO " + path + " 400", "INFO " + path + " 499", "INFO " + path + " 499"}
	if !slices.Equal(finished, want) {
		t.Errorf("finished calls logged %q, want %q", finished, want)
	}
}
