package server

import (
	"context"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// RemoteModels is a [ModelSource] that pulls versions from a learner in
// another process over its ModelService. [Server.WatchModels] calls Next
// again, with backoff, after every failure, so a learner that goes away and
// comes back is reconnected to.
type RemoteModels struct {
	client eventsv1.ModelServiceClient
	loop   string
	notify func(reachable bool)
	server string // see Announce

	reachable atomic.Bool
	last      atomic.Pointer[eventsv1.ModelInfo] // the version Next returned last
}

// NewRemoteModels returns a source of loop's models behind client. notify,
// if not nil, is called whenever the learner becomes reachable or
// unreachable; it starts unreachable.
func NewRemoteModels(client eventsv1.ModelServiceClient, loop string, notify func(reachable bool)) *RemoteModels {
	return &RemoteModels{client: client, loop: loop, notify: notify}
}

// Announce makes every watch name server and the version it serves (the
// after of Next), so that the learner lists it (ListServers). Call it
// before Next.
func (r *RemoteModels) Announce(server string) { r.server = server }

// Reachable reports whether the learner answered the last attempt to
// watch it and the watch is still open.
func (r *RemoteModels) Reachable() bool {
	return r.reachable.Load()
}

func (r *RemoteModels) setReachable(ok bool) {
	if r.reachable.Swap(ok) != ok && r.notify != nil {
		r.notify(ok)
	}
}

// Next watches for a version newer than after and fetches it.
func (r *RemoteModels) Next(ctx context.Context, after uint64) (*eventsv1.GetModelResponse, error) {
	mv, err := r.next(ctx, after)
	if err != nil && ctx.Err() == nil {
		r.setReachable(false)
	}
	return mv, err
}

func (r *RemoteModels) next(ctx context.Context, after uint64) (*eventsv1.GetModelResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the watch
	req := &eventsv1.WatchModelRequest{Loop: r.loop}
	if r.server != "" {
		req.Server, req.ServingVersion = r.server, after
		if last := r.last.Load(); last.GetVersion() == after {
			req.ServingCreated = last.GetCreated()
		}
	}
	stream, err := r.client.WatchModel(ctx, req)
	if err == nil {
		_, err = stream.Header() // the learner answered, with or without a model
	}
	if err != nil {
		return nil, fmt.Errorf("watch models: %w", err)
	}
	r.setReachable(true)
	for {
		w, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("watch models: %w", err)
		}
		if v := w.GetInfo().GetVersion(); v > after {
			mv, err := r.client.GetModel(ctx, &eventsv1.GetModelRequest{Loop: r.loop, Version: v})
			if status.Code(err) == codes.NotFound {
				continue // a newer version replaced it; the watch announces that one
			}
			if err != nil {
				return nil, fmt.Errorf("get model version %d: %w", v, err)
			}
			r.last.Store(mv.GetInfo())
			return mv, nil
		}
	}
}

// RemoteModelAdmin is a [ModelAdmin] that resets and imports models
// through a learner in another process, over its ModelService.
type RemoteModelAdmin struct {
	client eventsv1.ModelServiceClient
}

// NewRemoteModelAdmin returns a ModelAdmin calling the learner behind client.
func NewRemoteModelAdmin(client eventsv1.ModelServiceClient) *RemoteModelAdmin {
	return &RemoteModelAdmin{client: client}
}

// ResetModel asks the learner to start loop's model afresh.
func (r *RemoteModelAdmin) ResetModel(ctx context.Context, loop string) (*eventsv1.ModelInfo, error) {
	resp, err := r.client.ResetModel(ctx, &eventsv1.ResetModelRequest{Loop: loop})
	if err != nil {
		return nil, fmt.Errorf("reset model: %w", err)
	}
	return resp.GetInfo(), nil
}

// ImportModel sends data to the learner as loop's model. The learner
// answers InvalidArgument for a file that is not a model: that is
// [ErrInvalidModel].
func (r *RemoteModelAdmin) ImportModel(ctx context.Context, loop string, data []byte) (*eventsv1.ModelInfo, error) {
	resp, err := r.client.ImportModel(ctx, &eventsv1.ImportModelRequest{Loop: loop, Data: data})
	if status.Code(err) == codes.InvalidArgument {
		return nil, fmt.Errorf("%w: the learner refused it", ErrInvalidModel)
	}
	if err != nil {
		return nil, fmt.Errorf("import model: %w", err)
	}
	return resp.GetInfo(), nil
}

// ModelVersion gets version of loop's model from the learner's history;
// a version it does not keep is its NotFound status.
func (r *RemoteModelAdmin) ModelVersion(ctx context.Context, loop string, version uint64) (*eventsv1.GetModelResponse, error) {
	mv, err := r.client.GetModel(ctx, &eventsv1.GetModelRequest{Loop: loop, Version: version})
	if err != nil {
		return nil, fmt.Errorf("get model version %d: %w", version, err)
	}
	return mv, nil
}

// ListModels asks the learner for the versions of loop's model it keeps,
// newest first.
func (r *RemoteModelAdmin) ListModels(ctx context.Context, loop string) ([]*eventsv1.ModelInfo, error) {
	resp, err := r.client.ListModels(ctx, &eventsv1.ListModelsRequest{Loop: loop})
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	return resp.GetModels(), nil
}

// RollbackModel asks the learner to make a kept version loop's model
// again; a version it does not keep is its NotFound status.
func (r *RemoteModelAdmin) RollbackModel(ctx context.Context, loop string, version uint64) (*eventsv1.ModelInfo, error) {
	resp, err := r.client.RollbackModel(ctx, &eventsv1.RollbackModelRequest{Loop: loop, Version: version})
	if err != nil {
		return nil, fmt.Errorf("rollback model: %w", err)
	}
	return resp.GetInfo(), nil
}
