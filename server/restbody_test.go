package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRESTBodyErrors checks what a REST call whose body could not be read
// is answered: only the client's own faults are 400s, and nothing is a 500.
func TestRESTBodyErrors(t *testing.T) {
	t.Parallel()
	_, _, srv := newTestServer(t)
	h := &REST{s: srv}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name   string
		ctx    context.Context
		err    error // from reading the body, or the call
		status int
		code   string
	}{
		{"over the limit", context.Background(), &http.MaxBytesError{Limit: 4096}, 400, "PayloadSizeExceeded"},
		{"read timeout", context.Background(), fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded), 408, "RequestTimeout"},
		{"connection closed", context.Background(), io.ErrUnexpectedEOF, 499, "ClientClosedRequest"},
		{"connection reset", context.Background(), fmt.Errorf("read: %w", syscall.ECONNRESET), 499, "ClientClosedRequest"},
		{"request canceled", canceled, errors.New("client disconnected"), 499, "ClientClosedRequest"},
		{"malformed transfer", context.Background(), errors.New("malformed chunked encoding"), 400, "BadRequest"},
		{"call canceled", nil, status.Error(codes.Canceled, "context canceled"), 499, "ClientClosedRequest"},
		{"call past its deadline", nil, status.Error(codes.DeadlineExceeded, "context deadline exceeded"), 408, "RequestTimeout"},
	}
	for _, tt := range tests {
		err := tt.err
		if tt.ctx != nil {
			err = bodyError(httptest.NewRequestWithContext(tt.ctx, "POST", "/", nil), tt.err)
		}
		rec := httptest.NewRecorder()
		h.fail(rec, "InvalidRankRequest", err)
		var body restError
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %s: %v", tt.name, rec.Body, err)
		}
		if rec.Code != tt.status || body.Error.Code != tt.code || body.Error.Message == "" {
			t.Errorf("%s: %d %s, want %d %s", tt.name, rec.Code, rec.Body, tt.status, tt.code)
		}
	}
}
