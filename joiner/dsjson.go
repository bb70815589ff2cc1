package joiner

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/open-personalizer/personalizer/internal/features"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// timestampLayout is DSJson's Timestamp: UTC with seven fraction digits.
const timestampLayout = "2006-01-02T15:04:05.0000000Z"

// AppendDSJSON appends j as one DSJson line (without the newline), the way
// `vw --dsjson` reads it: every label field before "c" ("_labelIndex"
// included, VW needs it), cost = -reward, _label_probability = p[0]
// times the chance the event survived subsampling, the chosen action first
// in "a" (1-based, never empty), "p" aligned with "a", every joined outcome
// in "o", "pdrop" when the server subsampled, and "_skipLearn" for events
// that must not be learned.
//
// A multi-slot event (its rank has slot decisions) is written as the CCB
// line `vw --ccb_explore_adf --dsjson` reads: "c" (the request's context,
// every action under "_multi", the slots under "_slots"), then in
// "_outcomes" one object per slot, in order, with its id, the cost
// -reward of the slot ([Slot]), its ranking ("_a", 0-based indices into
// "_multi", the logged action first) and probabilities ("_p"), the
// outcomes it joined in "_o" (the rewards that name it, and every
// activation) and "_original_label_cost"; then each slot's baseline
// action in "_ba", "pdrop" when the server subsampled, and "_skipLearn"
// for events that must not be learned. j.Slots must be filled in, as the
// joiner fills them in.
func AppendDSJSON(b []byte, j *Joined) []byte { return appendDSJSON(b, j, nil) }

// appendDSJSON is AppendDSJSON writing floats through fc, which may be nil.
func appendDSJSON(b []byte, j *Joined, fc *floatCache) []byte {
	r := j.Rank
	if len(r.GetSlots()) > 0 {
		return appendSlotsDSJSON(b, j, fc)
	}
	ranking, probs := r.GetRanking(), r.GetProbabilities()
	pdrop := r.GetPdrop()
	b = append(b, `{"_label_cost":`...)
	b = appendFloat32(b, -j.Reward)
	b = append(b, `,"_label_probability":`...)
	b = appendFloat32(b, probs[0]*(1-pdrop))
	b = append(b, `,"_label_Action":`...)
	b = strconv.AppendUint(b, uint64(ranking[0])+1, 10)
	b = append(b, `,"_labelIndex":`...)
	b = strconv.AppendUint(b, uint64(ranking[0]), 10)
	if pdrop > 0 {
		b = append(b, `,"pdrop":`...)
		b = appendFloat32(b, pdrop)
	}
	b = append(b, `,"o":[`...)
	for i, o := range j.Outcomes {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOutcome(b, &o, r.GetEventId(), "")
	}
	b = append(b, `],"Timestamp":"`...)
	b = j.Time.UTC().AppendFormat(b, timestampLayout)
	b = append(b, `","Version":"1","EventId":`...)
	b = features.AppendString(b, r.GetEventId())
	b = append(b, `,"a":[`...)
	for i, a := range ranking {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(a)+1, 10)
	}
	b = append(b, `],"c":`...)
	b = append(b, r.GetContext()...)
	b = append(b, `,"p":[`...)
	for i, p := range probs {
		if i > 0 {
			b = append(b, ',')
		}
		b = fc.append(b, p)
	}
	b = append(b, `],`...)
	b = appendVWState(b, r)
	b = append(b, `,"_original_label_cost":`...)
	b = appendFloat32(b, -j.Original)
	if !j.Learnable {
		b = append(b, `,"_skipLearn":true`...)
	}
	return append(b, '}')
}

// appendVWState appends "VWState": the model version that decided r, or
// "N/A" before the first model.
func appendVWState(b []byte, r *eventsv1.RankEvent) []byte {
	b = append(b, `"VWState":{"m":`...)
	m := r.GetModelVersion()
	if m == "" {
		m = "N/A"
	}
	b = features.AppendString(b, m)
	return append(b, '}')
}

// appendSlotsDSJSON is appendDSJSON of a multi-slot event, its keys in
// the order of the CCB lines VW 9.11.2 is known to read ("_outcomes"
// must come after "c": vw crashes otherwise).
func appendSlotsDSJSON(b []byte, j *Joined, fc *floatCache) []byte {
	r := j.Rank
	b = append(b, `{"Timestamp":"`...)
	b = j.Time.UTC().AppendFormat(b, timestampLayout)
	b = append(b, `","Version":"1","EventId":`...)
	b = features.AppendString(b, r.GetEventId())
	if pdrop := r.GetPdrop(); pdrop > 0 {
		b = append(b, `,"pdrop":`...)
		b = appendFloat32(b, pdrop)
	}
	b = append(b, `,"c":`...)
	b = append(b, r.GetContext()...)
	b = append(b, `,"_outcomes":[`...)
	decisions := r.GetSlots()
	for k, d := range decisions {
		if k > 0 {
			b = append(b, ',')
		}
		s := slotAt(j, k)
		b = append(b, `{"_label_cost":`...)
		b = appendFloat32(b, -s.Reward)
		b = append(b, `,"_id":`...)
		b = features.AppendString(b, s.ID)
		b = append(b, `,"_a":[`...)
		for i, a := range d.GetRanking() {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(a), 10)
		}
		b = append(b, `],"_p":[`...)
		for i, p := range d.GetProbabilities() {
			if i > 0 {
				b = append(b, ',')
			}
			b = fc.append(b, p)
		}
		b = append(b, `],"_o":[`...)
		n := 0
		for _, o := range j.Outcomes {
			if !o.Activate && o.Slot != s.hash {
				continue // another slot's
			}
			if n++; n > 1 {
				b = append(b, ',')
			}
			b = appendOutcome(b, &o, r.GetEventId(), s.ID)
		}
		b = append(b, `],"_original_label_cost":`...)
		b = appendFloat32(b, -s.Original)
		b = append(b, '}')
	}
	b = append(b, `],"_ba":[`...)
	for k := range decisions {
		if k > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(slotAt(j, k).Baseline), 10)
	}
	b = append(b, `],`...)
	b = appendVWState(b, r)
	if !j.Learnable {
		b = append(b, `,"_skipLearn":true`...)
	}
	return append(b, '}')
}

// slotAt returns j's slot k, or none if j lacks it.
func slotAt(j *Joined, k int) Slot {
	if k < len(j.Slots) {
		return j.Slots[k]
	}
	return Slot{}
}

// appendOutcome appends o as an element of DSJson "o" (or a CCB slot's
// "_o"): its value unless it is an activation, the event id, for a slot's
// reward the slot's id as "Index", and whether it is an activation.
func appendOutcome(b []byte, o *Outcome, eventID, slot string) []byte {
	b = append(b, '{')
	if !o.Activate {
		b = append(b, `"v":`...)
		b = appendFloat32(b, o.Value)
		b = append(b, ',')
	}
	b = append(b, `"EventId":`...)
	b = features.AppendString(b, eventID)
	if slot != "" && !o.Activate {
		b = append(b, `,"Index":`...)
		b = features.AppendString(b, slot)
	}
	b = append(b, `,"ActionTaken":`...)
	b = strconv.AppendBool(b, o.Activate)
	return append(b, '}')
}

// AppendAudit appends a as one JSON object: why the outcome was not
// learned, the outcome as it would have appeared in "o", its time and
// where it was in the events topic, and for a late outcome its rank's time.
// A skewed record's audit names the kind of record ("Record") instead of
// the outcome, and the joiners' clock it was ahead of ("TickTimestamp").
func AppendAudit(b []byte, a *Audit, partition int) []byte {
	b = append(b, `{"Reason":"`...)
	b = append(b, a.Reason...)
	b = append(b, `","Key":`...)
	b = features.AppendString(b, a.Key)
	if a.Reason == Skewed {
		b = append(b, `,"Record":"`...)
		b = append(b, kindNames[a.Kind]...)
		b = append(b, '"')
	} else {
		if !a.Outcome.Activate {
			b = append(b, `,"v":`...)
			b = appendFloat32(b, a.Outcome.Value)
		}
		b = append(b, `,"ActionTaken":`...)
		b = strconv.AppendBool(b, a.Outcome.Activate)
	}
	b = append(b, `,"Timestamp":"`...)
	b = a.Outcome.Time.UTC().AppendFormat(b, timestampLayout)
	b = append(b, '"')
	switch a.Reason {
	case Late:
		b = append(b, `,"RankTimestamp":"`...)
		b = a.Rank.UTC().AppendFormat(b, timestampLayout)
		b = append(b, '"')
	case Skewed:
		b = append(b, `,"TickTimestamp":"`...)
		b = a.Tick.UTC().AppendFormat(b, timestampLayout)
		b = append(b, '"')
	}
	b = append(b, `,"Partition":`...)
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, `,"Offset":`...)
	b = strconv.AppendInt(b, a.Offset, 10)
	return append(b, '}')
}

// kindNames are the record kinds as audits name them.
var kindNames = map[Kind]string{Tick: "tick", Rank: "rank", Reward: "reward", Activate: "activate", Bad: "undecodable"}

// appendFloat32 appends the shortest text that parses back to v.
func appendFloat32(b []byte, v float32) []byte {
	return strconv.AppendFloat(b, float64(v), 'g', -1, 32)
}

// floatCache remembers the text of recently written float32 values. The
// probabilities of epsilon-greedy take a few values (1-ε+ε/K and ε/K for
// each K), and finding the shortest text of a float is most of the cost
// of a line after copying its context. One goroutine owns a cache.
type floatCache struct {
	bits [64]uint32
	n    [64]uint8 // 0: empty
	text [64][16]byte
}

func (c *floatCache) append(b []byte, v float32) []byte {
	if c == nil {
		return appendFloat32(b, v)
	}
	bits := math.Float32bits(v)
	i := (bits ^ bits>>6 ^ bits>>13 ^ bits>>23) & 63
	if n := c.n[i]; n > 0 && c.bits[i] == bits {
		return append(b, c.text[i][:n]...)
	}
	start := len(b)
	b = appendFloat32(b, v)
	if t := b[start:]; len(t) <= len(c.text[i]) {
		c.bits[i], c.n[i] = bits, uint8(copy(c.text[i][:], t))
	}
	return b
}

// checkpointPrefix starts the commit metadata of a [Checkpoint]; the
// version lets a later format tell old metadata apart.
const checkpointPrefix = "pzj1 "

// String encodes cp as commit metadata: "pzj1 <offset> <watermark as Unix
// nanoseconds> <next> <tick as Unix nanoseconds>" (0 for a zero time).
func (cp Checkpoint) String() string {
	return fmt.Sprintf("%s%d %d %d %d", checkpointPrefix, cp.Offset, unixNano(cp.Watermark), cp.Next, unixNano(cp.Tick))
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

var errNoCheckpoint = errors.New("no joiner checkpoint")

// ParseCheckpoint decodes commit metadata written by [Checkpoint.String],
// or by earlier versions, which wrote no tick.
func ParseCheckpoint(s string) (Checkpoint, error) {
	rest, ok := strings.CutPrefix(s, checkpointPrefix)
	if !ok {
		return Checkpoint{}, errNoCheckpoint
	}
	f := strings.Fields(rest)
	if len(f) != 3 && len(f) != 4 {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: want 4 fields", s)
	}
	var n [4]int64
	for i := range f {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("checkpoint %q: %w", s, err)
		}
		n[i] = v
	}
	cp := Checkpoint{Offset: n[0], Watermark: fromUnixNano(n[1]), Next: n[2], Tick: fromUnixNano(n[3])}
	if cp.Offset < 0 || cp.Next < cp.Offset {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: offsets out of order", s)
	}
	return cp, nil
}
