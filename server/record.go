package server

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/open-personalizer/personalizer/internal/decide"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// recordRoom is the room a request's bytes are kept behind (see
// [withRoom]): the rank record's other fields are encoded there, in front
// of the bytes, so that the record is the request's buffer, not a copy of
// it. The fields of a Rank of 50 actions with ids of 40 bytes take about
// 400 bytes; a record whose fields do not fit is encoded apart.
const recordRoom = 512

// withRoom returns a copy of a request's bytes b behind recordRoom bytes
// of room.
func withRoom(b []byte) []byte {
	buf := make([]byte, recordRoom+len(b))
	copy(buf[recordRoom:], b)
	return buf
}

// requestWithRoom encodes req behind recordRoom bytes of room: a request
// that came without its bytes (RankStream's, REST's, and LogRanks' when
// its batch was decoded whole).
func requestWithRoom(req *personalizerv1.RankRequest) ([]byte, error) {
	buf := make([]byte, recordRoom+req.SizeVT())
	if _, err := req.MarshalToSizedBufferVT(buf[recordRoom:]); err != nil {
		return nil, fmt.Errorf("encode the request: %w", err)
	}
	return buf, nil
}

// buildRankRecord is the rank record of decision d in loop l, without its
// request, in sc's reused slices: the ranking and probabilities logged and
// what they were decided under.
func buildRankRecord(sc *scratch, l *loopState, lc *liveConfig, d *decide.Decision, deferred bool) *eventsv1.RankEvent {
	sc.ranking, sc.probs = sc.ranking[:0], sc.probs[:0]
	for _, ap := range d.Logged {
		sc.ranking = append(sc.ranking, uint32(ap.Action))
		sc.probs = append(sc.probs, ap.Prob)
	}
	sc.record = eventsv1.RankEvent{
		Loop:          l.name,
		EventId:       d.EventID,
		Ranking:       sc.ranking,
		Probabilities: sc.probs,
		Deferred:      deferred,
		ModelVersion:  d.ModelVersion,
		LearningMode:  d.Mode,
		Rules:         lc.rules,
	}
	return &sc.record
}

// encodeRankRecord encodes ev (its Request unset) with the request in buf,
// a [withRoom] buffer, as the request: the bytes ev.MarshalVT would give
// with Request set (fields in number order, the request's, 11, last),
// written into the room in front of the request's bytes when they fit.
// The record then shares buf, which must not change afterwards.
func encodeRankRecord(ev *eventsv1.RankEvent, buf []byte) []byte {
	wire := buf[recordRoom:]
	n := ev.SizeVT()
	head := n + protowire.SizeTag(11) + protowire.SizeVarint(uint64(len(wire)))
	if head > recordRoom {
		ev.Request = wire
		defer func() { ev.Request = nil }()
		v, _ := ev.MarshalVT() // cannot fail: every field is valid
		return v
	}
	start := recordRoom - head
	ev.MarshalToSizedBufferVT(buf[start : start+n])
	protowire.AppendVarint(protowire.AppendTag(buf[start+n:start+n], 11, protowire.BytesType), uint64(len(wire)))
	return buf[start:]
}
