package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/sim"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// BenchmarkMultiSlotRank is the MultiSlotRank handler on the request of
// BenchmarkRankEncoding (20 actions x 15 features, 15 context features;
// the request encoded for its record, as there) with 1 and 3 slots, each
// with a slot feature, under the default policy's multi-slot form and a
// model that learned 100 such events. Compare it with
// BenchmarkRankEncoding in the same run: what filling slots costs over
// ranking the same actions once.
func BenchmarkMultiSlotRank(b *testing.B) {
	single := sim.Request(rand.New(rand.NewPCG(1, 2)), 20, 15, 15)
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("slots=%d", n), func(b *testing.B) {
			req := &personalizerv1.MultiSlotRankRequest{ContextFeatures: single.GetContextFeatures(), Actions: single.GetActions()}
			for k := range n {
				req.Slots = append(req.Slots, &personalizerv1.Slot{Id: fmt.Sprint("slot-", k), BaselineAction: single.Actions[k].GetId(),
					Features: []*personalizerv1.Namespace{ns("Slot", str("position", fmt.Sprint(k)))}})
			}
			srv, stop := benchMultiSlotServer(b, req)
			defer stop()
			b.SetBytes(int64(proto.Size(req)))
			loopCPU(b, func() error {
				_, err := srv.MultiSlotRank(context.Background(), req)
				return err
			})
		})
	}
}

// benchMultiSlotServer is benchServer for a multi-slot loop.
func benchMultiSlotServer(b *testing.B, req *personalizerv1.MultiSlotRankRequest) (*Server, func()) {
	b.Helper()
	log := slog.New(slog.DiscardHandler)
	pub := NewPublisher(discard{}, BufferLimits{Records: 1 << 16, Bytes: 1 << 30}, 0, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pub.Run(ctx, time.Second); close(done) }()
	policy := mustParse(b, bandit.DefaultMultiSlotPolicy)
	srv := New(Config{Loop: "bench", Policy: policy}, pub, log, time.Now)
	m := bandit.NewModel(policy)
	excluded, _, _ := features.SlotExcluded(nil, req.GetActions(), req.GetSlots())
	var ev bandit.Event
	var pred bandit.Prediction
	for i := range 100 {
		ev.Reset()
		features.BuildSlots(&ev, req.GetContextFeatures(), req.GetActions(), req.GetSlots(), excluded, fmt.Sprint(i))
		for k := range req.GetSlots() {
			ev.SetSlotOutcome(k, (i+k)%len(req.Actions), -1, 0.5)
		}
		m.Learn(&ev, &pred)
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		b.Fatal(err)
	}
	if err := srv.Load(versionOf(buf.Bytes(), 1)); err != nil {
		b.Fatal(err)
	}
	return srv, func() { cancel(); <-done }
}
