package app

import (
	"net/http"
	"time"
)

// httpTimeouts bound how long an HTTP server waits for a client, so that a
// client that sends slowly, stops, or keeps an idle connection open cannot
// hold a connection and its goroutine forever. A zero field takes its
// value from [defaultHTTPTimeouts]; tests shorten them.
type httpTimeouts struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included, counted from its
	// first byte: a body that trickles or stops gets its connection closed
	// (a REST handler reading it answers 408 first).
	Read time.Duration
	// Respond is how long the server has, once a request is read, to
	// answer it. The write timeout is Read plus Respond, counted from the
	// end of the headers, so it can only cut off an answer that took
	// Respond to compute or send: REST calls and GET /metrics take
	// milliseconds, none streams. A shorter write timeout would cut off
	// the answer to a request whose body took most of Read to arrive.
	Respond time.Duration
	// Idle bounds how long a kept-alive connection waits for its next
	// request.
	Idle time.Duration
}

// defaultHTTPTimeouts: a 4 MiB body (the default --max-message-bytes) has
// a minute to arrive, about 70 KB/s.
var defaultHTTPTimeouts = httpTimeouts{ReadHeader: 10 * time.Second, Read: time.Minute, Respond: time.Minute, Idle: 2 * time.Minute}

// withDefaults returns t with every zero field set to its default.
func (t httpTimeouts) withDefaults() httpTimeouts {
	d := defaultHTTPTimeouts
	if t.ReadHeader == 0 {
		t.ReadHeader = d.ReadHeader
	}
	if t.Read == 0 {
		t.Read = d.Read
	}
	if t.Respond == 0 {
		t.Respond = d.Respond
	}
	if t.Idle == 0 {
		t.Idle = d.Idle
	}
	return t
}

// newHTTPServer returns a server of h with the timeouts t (zero fields:
// the defaults).
func newHTTPServer(h http.Handler, t httpTimeouts) *http.Server {
	t = t.withDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Read + t.Respond,
		IdleTimeout:       t.Idle,
	}
}
