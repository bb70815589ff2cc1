package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errShuttingDown = errors.New("server is shutting down")

// toStatus translates an error into the gRPC status the client sees. It is
// the only place errors become statuses; internal details are logged, not
// sent.
func (s *Server) toStatus(err error) error {
	var inv *invalidError
	var pt *problemTypeError
	switch {
	case errors.As(err, &inv):
		return inv.GRPCStatus().Err()
	case errors.As(err, &pt):
		return pt.GRPCStatus().Err()
	case errors.Is(err, errBufferFull):
		return status.Error(codes.ResourceExhausted, "event buffer is full; retry later")
	case errors.Is(err, errShuttingDown):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if st, ok := status.FromError(err); ok && (st.Code() == codes.PermissionDenied || st.Code() == codes.NotFound) {
		return err // the loop a call is for: its key's, and one served here
	}
	s.log.Error("internal error", "err", err)
	return status.Error(codes.Internal, "internal error")
}
