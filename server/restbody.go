package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
)

// StatusClientClosedRequest is the status the REST API logs (and answers,
// to no one) when the client went away before its request was answered:
// nginx's 499, which no client sees, since it has gone.
const StatusClientClosedRequest = 499

var (
	// errClientGone marks a body the client stopped sending because it
	// went away: it closed the connection or canceled the request.
	errClientGone = errors.New("the client closed the request before its body arrived")
	// errBodyTimeout marks a body that did not arrive within the HTTP
	// server's read timeout.
	errBodyTimeout = errors.New("the request body did not arrive within the server's read timeout")
	// errBadBody marks a body whose transfer was malformed (bad chunked
	// encoding, say).
	errBadBody = errors.New("the request body could not be read")
)

// bodyError classifies err, from reading r's body, for [REST.fail]: an
// over-size body stays a [http.MaxBytesError], a client that went away is
// not a server failure (errClientGone: 499, logged at Info), a body too slow
// for the read timeout is errBodyTimeout (408), anything else errBadBody
// (400).
func bodyError(r *http.Request, err error) error {
	var tooLong *http.MaxBytesError
	switch {
	case errors.As(err, &tooLong):
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: %w", errBodyTimeout, err)
	// Over HTTP/1 a closed connection ends the body early (or, reset,
	// fails the read); over HTTP/2 a canceled stream cancels r's context.
	case r.Context().Err() != nil, errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return fmt.Errorf("%w: %w", errBadBody, err)
}
