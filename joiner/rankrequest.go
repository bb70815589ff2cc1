package joiner

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/open-personalizer/personalizer/internal/features"
	"github.com/open-personalizer/personalizer/internal/vtcodec"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// RankContext returns the DSJson "c" object of a rank record: the context
// it carries (records of servers before the request field), or the one
// rendered from the request it carries: the request's context features and
// its eligible actions (those its excluded_actions does not name, in
// request order, found as the server found them), the very bytes those
// servers wrote. A request that does not decode, excludes an action it
// does not have, or whose eligible actions the ranking does not index
// one for one, is an error.
func RankContext(ev *eventsv1.RankEvent) ([]byte, error) {
	if len(ev.GetRequest()) == 0 {
		return ev.GetContext(), nil
	}
	if len(ev.GetContext()) > 0 {
		return nil, errors.New("the record carries both a context and a request")
	}
	sc := renderPool.Get().(*renderScratch)
	defer func() {
		// A rare large request must not hold its memory for good.
		if cap(sc.context) <= keepRenderBytes && sc.blocks.Features() <= keepRenderFeatures {
			renderPool.Put(sc)
		}
	}()
	// Straight from the bytes when they are what servers write; decoded
	// otherwise, to render them or to say what is wrong.
	if c, n, ok := sc.wire.Append(sc.context[:0], ev.GetRequest()); ok && n == len(ev.GetRanking()) {
		sc.context = c
		return bytes.Clone(c), nil
	}
	return sc.decoded(ev)
}

// decoded is RankContext by decoding the request into messages.
func (sc *renderScratch) decoded(ev *eventsv1.RankEvent) ([]byte, error) {
	req := &sc.req
	if err := sc.blocks.Unmarshal(ev.GetRequest(), req); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	defer req.Reset() // not to keep the record alive
	actions := req.GetActions()
	excluded, n, unknown := features.Excluded(sc.excluded, actions, req.GetExcludedActions())
	sc.excluded = excluded
	switch {
	case unknown >= 0:
		return nil, fmt.Errorf("request: excluded_actions[%d] names no action", unknown)
	case n != len(ev.GetRanking()):
		return nil, fmt.Errorf("request has %d eligible actions, the ranking %d", n, len(ev.GetRanking()))
	}
	sc.eligible = features.Eligible(sc.eligible[:0], actions, excluded)
	sc.context = features.AppendContext(sc.context[:0], req.GetContextFeatures(), sc.eligible)
	clear(sc.eligible) // not to keep the request alive
	return bytes.Clone(sc.context), nil
}

// renderRequest gives a rank record that carries its request the context
// rendered from it instead ([RankContext]), so that the join holds and
// writes records of either kind alike.
func renderRequest(ev *eventsv1.RankEvent) error {
	if len(ev.GetRequest()) == 0 {
		return nil
	}
	c, err := RankContext(ev)
	if err != nil {
		return err
	}
	ev.Context, ev.Request = c, nil
	return nil
}

// renderScratch is RankContext's reused memory.
type renderScratch struct {
	wire     features.WireContext
	blocks   vtcodec.Blocks
	req      personalizerv1.RankRequest
	excluded []bool
	eligible []*personalizerv1.Action
	context  []byte
}

const (
	keepRenderBytes    = 1 << 16
	keepRenderFeatures = 1 << 12
)

var renderPool = sync.Pool{New: func() any { return new(renderScratch) }}
