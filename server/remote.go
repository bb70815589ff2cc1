package server

import (
	"context"
	"fmt"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// RemoteModels is a [ModelSource] that pulls versions from a learner in
// another process over its ModelService.
type RemoteModels struct {
	client eventsv1.ModelServiceClient
	loop   string
}

// NewRemoteModels returns a source of loop's models behind client.
func NewRemoteModels(client eventsv1.ModelServiceClient, loop string) *RemoteModels {
	return &RemoteModels{client: client, loop: loop}
}

// Next watches for a version newer than after and fetches it.
func (r *RemoteModels) Next(ctx context.Context, after uint64) (*eventsv1.GetModelResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the watch
	stream, err := r.client.WatchModel(ctx, &eventsv1.WatchModelRequest{Loop: r.loop})
	if err != nil {
		return nil, fmt.Errorf("watch models: %w", err)
	}
	for {
		w, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("watch models: %w", err)
		}
		if v := w.GetInfo().GetVersion(); v > after {
			mv, err := r.client.GetModel(ctx, &eventsv1.GetModelRequest{Loop: r.loop, Version: v})
			if err != nil {
				return nil, fmt.Errorf("get model version %d: %w", v, err)
			}
			return mv, nil
		}
	}
}
