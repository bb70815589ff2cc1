package joiner

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

func randomRank(r *rand.Rand) *eventsv1.RankEvent {
	n := 1 + r.IntN(5)
	ev := &eventsv1.RankEvent{Loop: "loop", EventId: "évent-" + string(rune('a'+r.IntN(26))), Context: []byte(`{"a":1}`),
		Deferred: r.IntN(2) == 0, ModelVersion: "v7", LearningMode: eventsv1.LearningMode(r.IntN(4)), Pdrop: float32(r.IntN(4)) / 4}
	for i := range n {
		ev.Ranking = append(ev.Ranking, uint32(i))
		ev.Probabilities = append(ev.Probabilities, r.Float32())
	}
	if r.IntN(3) > 0 { // most records carry join rules, some from before them
		ev.Rules = &eventsv1.JoinRules{RewardWaitMs: r.Int64N(1 << 40), DefaultReward: r.Float32()*2 - 1,
			Aggregation: []string{"earliest", "sum", ""}[r.IntN(3)], ConfigVersion: r.Uint64N(100)}
	}
	if r.IntN(3) == 0 { // a multi-slot rank's fields
		ev.MultiSlotRequest = []byte{0x22, 0x01, 'e'}
		for k := range 1 + r.IntN(3) {
			ev.Slots = append(ev.Slots, &eventsv1.SlotDecision{Ranking: []uint32{uint32(k), 7}, Probabilities: []float32{r.Float32(), 0}})
		}
	}
	return ev
}

// TestUnmarshalRank checks the joiner's rank decoder against protobuf's:
// the same message from the same bytes, packed or not, unknown fields
// skipped, and an error for every truncation protobuf rejects.
func TestUnmarshalRank(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		want := randomRank(r)
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		// An unknown field and unpacked repeated fields, as older or
		// other writers may send them.
		b = protowire.AppendTag(b, 42, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte("later"))
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, 9)
		b = protowire.AppendTag(b, 5, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, 0x3f000000) // 0.5
		if r.IntN(4) == 0 {
			// Rules again, in part: protobuf merges embedded messages.
			b = protowire.AppendTag(b, 10, protowire.BytesType)
			b = protowire.AppendBytes(b, protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.VarintType), 7))
		}
		var ref eventsv1.RankEvent
		if err := proto.Unmarshal(b, &ref); err != nil {
			t.Fatal(err)
		}
		got, err := unmarshalRank(b)
		if err != nil {
			t.Fatalf("unmarshalRank: %v", err)
		}
		ref.ProtoReflect().SetUnknown(nil)
		if !proto.Equal(got, &ref) {
			t.Fatalf("got %v\nwant %v", got, &ref)
		}
		for cut := range len(b) {
			_, gerr := unmarshalRank(b[:cut])
			if perr := proto.Unmarshal(b[:cut], new(eventsv1.RankEvent)); (perr != nil) != (gerr != nil) {
				t.Fatalf("prefix of %d bytes: protobuf says %v, unmarshalRank %v", cut, perr, gerr)
			}
		}
	}
	if _, err := unmarshalRank([]byte{0x0a, 0x01, 0xff}); err == nil {
		t.Error("accepted a loop that is not UTF-8")
	}
	if _, err := unmarshalRank([]byte{0x52, 0x03, 0x1a, 0x01, 0xff}); err == nil {
		t.Error("accepted an aggregation that is not UTF-8")
	}
	if _, err := unmarshalRank([]byte{0x50, 0x01}); err == nil {
		t.Error("accepted rules with the wire type of a varint")
	}
}

func FuzzUnmarshalRank(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 5 {
		b, _ := proto.Marshal(randomRank(r))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := unmarshalRank(b)
		var ref eventsv1.RankEvent
		perr := proto.Unmarshal(b, &ref)
		if gerr != nil {
			return // stricter is fine: the record is dead-lettered
		}
		if perr != nil {
			t.Fatalf("accepted what protobuf rejects (%v)", perr)
		}
		ref.ProtoReflect().SetUnknown(nil)
		if !proto.Equal(got, &ref) {
			t.Fatalf("got %v\nwant %v", got, &ref)
		}
	})
}
