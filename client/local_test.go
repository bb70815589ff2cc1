package client

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/internal/sim"
	"github.com/open-personalizer/personalizer/internal/vtcodec"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// TestInvalidEntry finds the entry a LogRanks InvalidArgument names.
func TestInvalidEntry(t *testing.T) {
	t.Parallel()
	named := func(field string) error {
		var inv *decide.InvalidError
		errors.As(decide.Invalid(field, "bad"), &inv)
		return inv.GRPCStatus().Err()
	}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"an entry's request", named("entries[3].request.actions[0].id"), 3},
		{"an entry's ranking", named("entries[0].ranking[2]"), 0},
		{"past the batch", named("entries[9].ranking"), -1},
		{"no entry", named("request"), -1},
		{"no details", status.Error(codes.InvalidArgument, "entries[1]: bad"), -1},
	}
	for _, tt := range tests {
		if got := invalidEntry(tt.err, 5); got != tt.want {
			t.Errorf("%s: entry %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestLogBatchEncoding: the entries Rank encodes, sent as a batch through
// vtcodec's codec or protobuf's, are the bytes the LogRanksRequest of
// those entries encodes to.
func TestLogBatchEncoding(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	var sc localScratch
	var want personalizerv1.LogRanksRequest
	var entries [][]byte
	modes := []eventsv1.LearningMode{eventsv1.LearningMode_LEARNING_MODE_ONLINE, eventsv1.LearningMode_LEARNING_MODE_APPRENTICE, eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY}
	for i := range 20 {
		req := withEventID(sim.Request(r, 1+r.IntN(20), r.IntN(15), r.IntN(15)))
		req.DeferActivation = i%3 == 0
		d := &decide.Decision{Mode: modes[i%3], ModelVersion: []string{"", "7", "123456789"}[i%3]}
		for k := range req.Actions {
			d.Logged = append(d.Logged, bandit.ActionProb{Action: len(req.Actions) - 1 - k, Prob: float32(k) / 7})
		}
		e, err := sc.entry(req, req.SizeVT(), d)
		if err != nil {
			t.Fatal(err)
		}
		logged := &personalizerv1.LoggedRank{Request: req, ModelVersion: d.ModelVersion, LearningMode: []string{"Online", "Apprentice", "LoggingOnly"}[i%3]}
		for _, ap := range d.Logged {
			logged.Ranking, logged.Probabilities = append(logged.Ranking, uint32(ap.Action)), append(logged.Probabilities, ap.Prob)
		}
		one, err := (&personalizerv1.LogRanksRequest{Entries: []*personalizerv1.LoggedRank{logged}}).MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e, one) {
			t.Fatalf("entry %d encodes to\n%x\nwant\n%x", i, e, one)
		}
		entries = append(entries, e)
		want.Entries = append(want.Entries, logged)
	}
	if _, ok := encoding.GetCodecV2(grpcproto.Name).(vtcodec.Codec); !ok {
		t.Fatalf("the registered proto codec is %T, want vtcodec's", encoding.GetCodecV2(grpcproto.Name))
	}
	wantBytes, err := want.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]encoding.CodecV2{"registered (vtcodec)": encoding.GetCodecV2(grpcproto.Name), "protobuf": vtcodec.Standard()} {
		data, err := c.Marshal(&logBatch{entries})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := data.Materialize()
		if !bytes.Equal(got, wantBytes) {
			t.Errorf("%s: the batch encodes to %d bytes unlike its LogRanksRequest's %d", name, len(got), len(wantBytes))
		}
		var back personalizerv1.LogRanksRequest
		if err := proto.Unmarshal(got, &back); err != nil || !proto.Equal(&back, &want) {
			t.Errorf("%s: the batch decodes to another message (%v)", name, err)
		}
	}
}
