package joiner

import (
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"time"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// Aggregation names how several rewards for one event combine
// (Personalizer's rewardAggregation; the back-end's RewardFunction).
type Aggregation string

// The aggregations. Activations never count as rewards.
const (
	Earliest Aggregation = "earliest" // the reward with the earliest time; the first to arrive on a tie
	Sum      Aggregation = "sum"      // rewards add up, in arrival order (float32)
	Average  Aggregation = "average"  // the sum divided by the count
	Median   Aggregation = "median"   // the middle value; the mean of the two middle ones for an even count
	Min      Aggregation = "min"      // the smallest reward
	Max      Aggregation = "max"      // the largest reward
)

// Rules are a loop's join settings. RewardWait, DefaultReward and
// Aggregation are the loop's configuration, which can change while the
// service runs: a rank record that carries its own rules
// ([eventsv1.RankEvent.Rules], the configuration in force when it was
// ranked) is judged by those, and these three judge only records without
// valid rules (see [Window]). Backward, Slack and MaxSkew are the joiner's
// own and hold for every record.
type Rules struct {
	// RewardWait is the window after a rank in which rewards count:
	// Personalizer's rewardWaitTime, for records without valid rules.
	RewardWait time.Duration
	// Backward is how long before its rank a reward may be stamped and
	// still count (records can be reordered); Personalizer used 2 minutes.
	Backward time.Duration
	// Slack is how far behind the newest record time the watermark runs,
	// so that records stamped up to Slack before a later one are still on
	// time. Windows close Slack after their end.
	Slack time.Duration
	// DefaultReward is the reward of an event without rewards in its
	// window, for records without valid rules.
	DefaultReward float32
	// Aggregation combines several rewards, for records without valid
	// rules.
	Aggregation Aggregation
	// LearningMode is the loop's mode (unspecified means online). Ranks
	// without rules logged in another mode are emitted but not learnable;
	// a rank that carries rules was made in the mode in force then, and
	// is judged by its own mode.
	LearningMode eventsv1.LearningMode
	// MaxSkew is how far ahead of the joiners' clock a record may be
	// stamped: a record stamped more than MaxSkew after the newest tick
	// before it (ticks carry the clock of the joiner that owns the
	// partition) does not move the watermark, and if it is still more
	// than MaxSkew ahead of the tick after it, it is audited as skewed.
	// 0 trusts every record time.
	MaxSkew time.Duration
}

// Validate reports rules that cannot work.
func (r Rules) Validate() error {
	switch {
	case r.RewardWait <= 0:
		return fmt.Errorf("reward wait time must be positive, got %v", r.RewardWait)
	case r.Backward < 0:
		return fmt.Errorf("backward join window must not be negative, got %v", r.Backward)
	case r.Slack < 0:
		return fmt.Errorf("join slack must not be negative, got %v", r.Slack)
	case r.MaxSkew < 0:
		return fmt.Errorf("max clock skew must not be negative, got %v", r.MaxSkew)
	case !(r.DefaultReward >= -1 && r.DefaultReward <= 1): // NaN too
		return fmt.Errorf("default reward must be between -1 and 1, got %v", r.DefaultReward)
	}
	switch r.Aggregation {
	case Earliest, Sum, Average, Median, Min, Max:
	default:
		return fmt.Errorf("reward aggregation must be earliest, sum, average, median, min or max, got %q", r.Aggregation)
	}
	if _, ok := modeNames[normalMode(r.LearningMode)]; !ok {
		return fmt.Errorf("learning mode must be Online, Apprentice or LoggingOnly, got %v", r.LearningMode)
	}
	return nil
}

// Kind is what an [Input] carries.
type Kind int

// The kinds of input.
const (
	Tick     Kind = iota // only time passes
	Rank                 // a decision
	Reward               // an outcome with a value
	Activate             // an outcome that activates a deferred decision
	Bad                  // a record that did not decode; only its time counts
)

// Input is one record of a partition.
type Input struct {
	Kind   Kind
	Key    string    // loop/eventId: the record key that pairs outcomes with their rank
	Time   time.Time // event time: the record's timestamp
	Offset int64
	Rank   *eventsv1.RankEvent // for Rank; the window keeps only what the join needs of it
	// Trace is a Rank record's W3C trace context (its traceparent
	// header), nil when the call was not traced; it goes to the joined line.
	Trace []byte
	// Slots are a multi-slot Rank's slots, in request order (nil for a
	// single-slot rank): what its joined line needs of the request.
	Slots []Slot
	Value float32 // for Reward
	// Slot is the slot a Reward of a multi-slot event names: [SlotHash]
	// of its id, 0 for none.
	Slot uint64
	// ID is a Reward's or Activate's id: copies of one record carry the
	// same id and count once. 0 is never deduplicated.
	ID uint64
	// Err is why a Bad record did not decode.
	Err error
}

// Outcome is a reward or an activation.
type Outcome struct {
	Activate bool
	Value    float32
	Time     time.Time
	ID       uint64
	Slot     uint64 // the slot a reward of a multi-slot event names: [SlotHash] of its id, 0 for none
}

// SlotHash identifies a slot by its id, as outcomes carry it: the 64-bit
// FNV-1a hash of the id (the same in every process, so that a replay
// joins alike), 0 for the empty id, which names no slot.
func SlotHash(id string) uint64 {
	if id == "" {
		return 0
	}
	h := uint64(14695981039346656037) // FNV-1a, without hash/fnv's allocation
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * 1099511628211
	}
	return max(h, 1) // 0 is no slot
}

// Slot is one slot of a multi-slot event, in its request's order.
type Slot struct {
	ID   string // as the request names it
	hash uint64 // SlotHash(ID), as its outcomes carry it; set with the rewards
	// Baseline is the slot's baseline action: its 0-based index among the
	// request's actions (DSJson "_multi").
	Baseline uint32
	// Reward is what the slot learns: the rewards that name it, combined
	// with the event's aggregation, or the event's default reward when
	// none came; in Apprentice mode 1 if the slot's logged action is its
	// baseline and 0 if not.
	Reward float32
	// Original is the combined (or default) reward, whatever the mode.
	Original float32
}

// Joined is one event whose window has closed. A [Window] keeps neither
// the key nor the rank record: it leaves Key, Rank and Trace empty, and
// whoever holds the record at Offset fills them in (see [Window.IsKey]).
type Joined struct {
	Key      string // loop/eventId
	Offset   int64  // of the rank record
	Rank     *eventsv1.RankEvent
	Time     time.Time // rank time
	Trace    []byte    // the rank's trace context, see [Input.Trace]
	hash     keyHash   // of Key
	Outcomes []Outcome // every outcome joined, in arrival order
	// Slots are a multi-slot event's slots with the reward each learns
	// (see [Slot]), nil for a single-slot event. Whoever fills in Rank
	// fills them in too.
	Slots []Slot
	// Reward is the reward to learn: the aggregated reward, the default
	// reward when none came, or in Apprentice mode 1 if the model chose
	// the baseline and 0 if not. For a multi-slot event it is of all its
	// rewards together; each slot's is in Slots.
	Reward float32
	// Original is the aggregated (or default) reward, whatever the mode.
	Original float32
	// Learnable is false for a deferred event never activated, a
	// LoggingOnly event, and an event without rules logged in another
	// learning mode than the loop's.
	Learnable bool
	// How the event was judged, for its slots' rewards: its aggregation,
	// its default reward and whether it was logged in Apprentice mode.
	agg        Aggregation
	dflt       float32
	apprentice bool
}

// AuditReason says why an outcome was not learned.
type AuditReason string

// The audit reasons.
const (
	Late     AuditReason = "late"     // its rank came, but it is outside the rank's window
	Dangling AuditReason = "dangling" // no rank for it came within the backward window
	Skewed   AuditReason = "skewed"   // a record stamped more than MaxSkew ahead of the joiners' clock
)

// Audit is an outcome that was not joined, or a record stamped too far
// ahead (Skewed).
type Audit struct {
	Key     string
	Reason  AuditReason
	Kind    Kind // what the record was: Reward or Activate, or for Skewed any kind
	Outcome Outcome
	Offset  int64     // of the record
	Rank    time.Time // the rank's time, for Late
	Tick    time.Time // for Skewed, the tick after it: the joiners' clock
}

// BadRecord is a record that did not decode.
type BadRecord struct {
	Offset int64
	Err    error
}

// Output collects what inputs produce. Callers reset it between uses.
type Output struct {
	Joined []Joined
	Audits []Audit
	Bad    []BadRecord
}

// Reset empties o, keeping its memory.
func (o *Output) Reset() {
	clear(o.Joined)
	o.Joined, o.Audits, o.Bad = o.Joined[:0], o.Audits[:0], o.Bad[:0]
}

// Stats count what a [Window] has produced. Outputs suppressed after a
// resume count only as Suppressed, so that the counters of a partition
// add up to those of one uninterrupted run.
type Stats struct {
	Emitted           int64 // joined events
	Learnable         int64 // of them, learnable
	DefaultRewards    int64 // of them, without a reward in the window
	NotActivated      int64 // deferred and never activated
	LoggingOnly       int64 // logged in LoggingOnly mode
	OtherMode         int64 // without rules and logged in another learning mode than the loop's
	BadRules          int64 // ranks whose record carries invalid rules: judged by the joiner's
	Late              int64 // outcomes outside their rank's window
	Dangling          int64 // outcomes whose rank never came
	DuplicateRanks    int64 // ranks for an event already known
	DuplicateOutcomes int64 // outcome records already counted (same id)
	Undecodable       int64 // records that did not decode
	Skewed            int64 // records stamped more than MaxSkew ahead of the joiners' clock
	Suppressed        int64 // outputs an earlier owner of the partition already wrote

	// Counted by the joiner as it writes, not by a Window:
	Truncated int64 // joined lines written without some of their outcomes, to fit the record size limit
	Refused   int64 // outputs over the record size limit or refused by the log, written to the dead-letter topic as a reference
	Dropped   int64 // outputs the log refused even as a dead-letter reference: skipped
	Unread    int64 // joined events whose rank record could not be read back (deleted by retention, or another record at its offset): dead-lettered as a reference
	// UnknownSlots are rewards of multi-slot events that named none of
	// the event's slots (or no slot): left out of the line, not learned.
	UnknownSlots int64
	Errors       int64 // failed attempts to fetch, to read a rank record back or to write (each retried)
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.Emitted += o.Emitted
	s.Learnable += o.Learnable
	s.DefaultRewards += o.DefaultRewards
	s.NotActivated += o.NotActivated
	s.LoggingOnly += o.LoggingOnly
	s.OtherMode += o.OtherMode
	s.BadRules += o.BadRules
	s.Late += o.Late
	s.Dangling += o.Dangling
	s.DuplicateRanks += o.DuplicateRanks
	s.DuplicateOutcomes += o.DuplicateOutcomes
	s.Undecodable += o.Undecodable
	s.Skewed += o.Skewed
	s.Suppressed += o.Suppressed
	s.Truncated += o.Truncated
	s.Refused += o.Refused
	s.Dropped += o.Dropped
	s.Unread += o.Unread
	s.UnknownSlots += o.UnknownSlots
	s.Errors += o.Errors
}

// Sub returns s minus o.
func (s Stats) Sub(o Stats) Stats {
	o.Emitted, o.Learnable, o.DefaultRewards, o.NotActivated = -o.Emitted, -o.Learnable, -o.DefaultRewards, -o.NotActivated
	o.LoggingOnly, o.OtherMode, o.BadRules, o.Late, o.Dangling = -o.LoggingOnly, -o.OtherMode, -o.BadRules, -o.Late, -o.Dangling
	o.DuplicateRanks, o.DuplicateOutcomes, o.Undecodable, o.Suppressed = -o.DuplicateRanks, -o.DuplicateOutcomes, -o.Undecodable, -o.Suppressed
	o.Skewed, o.Truncated, o.Refused, o.Dropped, o.Errors = -o.Skewed, -o.Truncated, -o.Refused, -o.Dropped, -o.Errors
	o.Unread, o.UnknownSlots = -o.Unread, -o.UnknownSlots
	s.Add(o)
	return s
}

// Checkpoint is what a partition's next owner needs to rebuild the window
// exactly: replay from Offset with the watermark at Watermark and the
// joiners' clock at Tick, and suppress whatever records before Next
// produce, because it was written.
type Checkpoint struct {
	Offset    int64     // the committed offset: the first record any open state needs
	Watermark time.Time // the newest record time before Offset (of the records that move it)
	Tick      time.Time // the newest tick time before Offset
	Next      int64     // everything records before Next produced is written
}

// Window is the join state of one partition: a pure function of the
// records it is given. It is not safe for concurrent use; one goroutine
// owns it.
//
// Each event is judged by its own rules: those its rank record carries
// when they are valid, else the window's (see [Rules]). Its reward window
// is [rank time - Backward, rank time + its reward wait), so deadlines
// are not in rank order: they wait in a heap, and events close in
// deadline order, then rank offset order, whatever their waits.
//
// An event goes through three states: pending (its window is open),
// closed (emitted, but remembered until Backward after its own window,
// after its latest late outcome and after the window a repeat of its
// rank would have had, so that late outcomes are told from dangling ones
// and repeats are recognised), and forgotten. Outcomes whose rank has not
// come yet wait as "early" until the watermark is Backward past their own
// time: they cannot know the wait of a rank still to come, and need not,
// since a rank stamped more than Backward after an outcome cannot take it
// whatever its wait. So early outcomes dangle by the joiner-wide Backward
// alone, as they did before rules travelled with ranks.
//
// A window keeps of each event only what the join needs (see [event]):
// not its key, nor its rank record, which [Joined] points back to by
// offset. Its memory per pending event does not depend on the record's
// size.
type Window struct {
	rules     Rules
	fallback  judge                          // of records without valid rules: rules'
	seeds     [2]maphash.Seed                // of the key hashes
	events    slab[event]                    // pending and closed
	index     keyIndex                       // events by key hash
	outcomes  slab[outcome]                  // of the events: joined, and the ids of late ones
	manyIDs   map[uint32]map[uint64]struct{} // outcome ids of the events that got many, by event
	early     map[string]*earlyQueue         // outcomes waiting for their rank
	deadlines minHeap[timed]                 // pending events by deadline
	forgets   minHeap[forgetAt]              // closed events by when to forget them
	earlyQ    minHeap[*early]                // early outcomes by when they dangle
	live      marks                          // the records open state still needs, in offset order
	maxTime   time.Time                      // the newest record time, of the records that move the watermark
	maxTick   time.Time                      // the newest tick time: the joiners' clock
	ahead     []*ahead                       // records since the last tick stamped more than MaxSkew after maxTick
	next      int64                          // offset after the last input
	resume    int64                          // outputs of records before it are suppressed
	out       *Output                        // nil while suppressing
	stats     Stats
}

// event is a pending or closed event: 80 bytes without pointers, in a
// slab. Times are Unix nanoseconds.
type event struct {
	hash keyHash // of the key
	time int64   // rank time
	end  int64   // rank time + its reward wait: the window closes when the watermark reaches it
	// forget is when a closed event is forgotten: Backward after its
	// deadline, after its latest late outcome or after the deadline of a
	// repeat of its rank, whichever is latest, so that every outcome and
	// repeat it took is forgotten with it (see Checkpoint).
	forget int64
	offset int64   // of the rank record
	before nclock  // the window's clock before the rank record, for Checkpoint
	dflt   float32 // its default reward
	outs   uint32  // its outcomes, newest first (0: none)
	gen    uint32  // counts the slot's reuses, so that stale references fail
	agg    uint8   // its aggregation, an index into aggregations
	flags  uint8
}

// event flags: what close needs of the rank, and whether it closed.
const (
	evOwn         = 1 << iota // its record carries rules (see judge.own)
	evDeferred                // the rank was deferred
	evBaseline                // the model chose the first eligible action
	evApprentice              // logged in Apprentice mode
	evLoggingOnly             // logged in LoggingOnly mode
	evOtherMode               // logged in another mode than the window's rules
	evClosed                  // its window closed
)

// nclock is a [clock] in Unix nanoseconds, 0 for a zero time.
type nclock struct{ time, tick int64 }

func (c clock) nanos() nclock { return nclock{unixNano(c.time), unixNano(c.tick)} }
func (c nclock) clock() clock { return clock{fromUnixNano(c.time), fromUnixNano(c.tick)} }

// outcome is an outcome of an event, in a slab: 24 bytes without
// pointers. The three high bits of next say whether it is an activation,
// whether it is only the id of a late outcome (kept so that a copy counts
// once), and whether it is only the slot of the outcome before it in the
// list: a joined outcome that names a slot (a reward of a multi-slot
// event) is followed by an entry that holds its [SlotHash] as id, so that
// the others keep their 24 bytes.
type outcome struct {
	time  int64
	id    uint64
	value float32
	next  uint32 // the event's previous outcome (0: none), and the flags
}

const (
	outActivate = 1 << 31
	outLate     = 1 << 30
	outSlot     = 1 << 29
	outNext     = outSlot - 1
)

// aggregations are the [Aggregation]s by their index in an event.
var aggregations = [...]Aggregation{Earliest, Sum, Average, Median, Min, Max}

// judge is what an event is judged by: the reward settings of its rank
// record's rules, or of the window's for a record without valid ones.
type judge struct {
	wait time.Duration // the reward wait: the window is [rank - Backward, rank + wait)
	dflt float32       // the reward when none came
	agg  Aggregation
	// own is true for a record that carries rules: it was made under a
	// live configuration, so the learning mode it logs is the one in
	// force then and is not compared with [Rules.LearningMode].
	own bool
}

// maxRecordWait is the longest reward wait a rank record's rules may
// carry. A loop takes waits up to two days; the bound is far above that,
// so that raising the loop's bound does not make joiners refuse its
// records, and low enough that a corrupt record cannot keep an event
// (and the partition's committed offset) for years.
const maxRecordWait = 30 * 24 * time.Hour

// judgeOf returns how a rank record is judged and whether the rules it
// carries are invalid. Invalid rules never stop the partition: the event
// is judged by the window's rules, and counted.
func (w *Window) judgeOf(r *eventsv1.RankEvent) (j judge, bad bool) {
	jr := r.GetRules()
	if jr == nil {
		return w.fallback, false
	}
	wait, dflt := jr.GetRewardWaitMs(), jr.GetDefaultReward()
	agg, ok := parseAggregation(jr.GetAggregation())
	// Compared in milliseconds: a wait in time.Duration could overflow.
	if !ok || wait <= 0 || wait > maxRecordWait.Milliseconds() || !(dflt >= -1 && dflt <= 1) {
		j = w.fallback
		j.own = true
		return j, true
	}
	return judge{wait: time.Duration(wait) * time.Millisecond, dflt: dflt, agg: agg, own: true}, false
}

// parseAggregation returns the [Aggregation] named s, in any case.
func parseAggregation(s string) (Aggregation, bool) {
	for _, a := range aggregations {
		if strings.EqualFold(s, string(a)) {
			return a, true
		}
	}
	return "", false
}

// ahead is a record stamped too far ahead of the joiners' clock to move
// the watermark, waiting for the next tick to tell whether it is skewed
// (still ahead of that tick) or was only written while no joiner ticked.
type ahead struct {
	kind   Kind
	key    string
	time   time.Time
	offset int64
	done   bool
}

// maxAhead bounds the records waiting for a tick's verdict: past it (a
// long stretch without ticks, when no joiner ran) records still do not
// move the watermark, but are not audited.
const maxAhead = 100_000

type early struct {
	key     string
	outcome Outcome
	offset  int64
	owner   ref  // the event it joined, if any
	done    bool // joined, late or dangling
}

// ref names an event; it goes stale when the event is forgotten.
type ref struct{ slot, gen uint32 }

// alive reports whether r names an event not forgotten.
func (w *Window) alive(r ref) bool { return r.slot != 0 && w.events.at(r.slot).gen == r.gen }

// NewWindow returns an empty window. The rules must be valid.
func NewWindow(r Rules) *Window {
	r.LearningMode = normalMode(r.LearningMode)
	w := &Window{rules: r, fallback: judge{wait: r.RewardWait, dflt: r.DefaultReward, agg: r.Aggregation},
		seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, early: map[string]*earlyQueue{}}
	w.deadlines.less = func(a, b timed) bool {
		if a.at != b.at {
			return a.at < b.at
		}
		return w.events.at(a.slot).offset < w.events.at(b.slot).offset
	}
	w.forgets.less = func(a, b forgetAt) bool { return a.at < b.at }
	w.earlyQ.less = (*early).before
	return w
}

// normalMode treats the unspecified mode (records and settings from before
// learning modes) as online.
func normalMode(m eventsv1.LearningMode) eventsv1.LearningMode {
	if m == eventsv1.LearningMode_LEARNING_MODE_UNSPECIFIED {
		return eventsv1.LearningMode_LEARNING_MODE_ONLINE
	}
	return m
}

// Resume makes an empty window continue where cp was taken. The caller
// then gives it the records from cp.Offset on.
func (w *Window) Resume(cp Checkpoint) {
	w.maxTime, w.maxTick, w.next, w.resume = cp.Watermark, cp.Tick, cp.Offset, cp.Next
}

// Stats returns the window's counters.
func (w *Window) Stats() Stats { return w.stats }

// Pending returns how many events wait for their window to close.
func (w *Window) Pending() int { return len(w.deadlines.q) }

// hash returns key's hash.
func (w *Window) hash(key string) keyHash {
	return keyHash{maphash.String(w.seeds[0], key), maphash.String(w.seeds[1], key)}
}

// IsKey reports whether key is the key of j's event, which j does not
// carry: a record read back at j.Offset is j's rank only if it is.
func (w *Window) IsKey(j *Joined, key []byte) bool {
	return j.hash == keyHash{maphash.Bytes(w.seeds[0], key), maphash.Bytes(w.seeds[1], key)}
}

// Add applies one input and appends to out what it produces: the events
// whose windows it closed (in deadline order, then rank offset order), the
// outcomes it found late or dangling, and the input itself if it is Bad.
// Nothing is appended for inputs before the resume point. The window
// keeps no reference to in.Rank or in.Trace.
func (w *Window) Add(in Input, out *Output) {
	w.out = out
	if in.Offset < w.resume {
		w.out = nil
	}
	before := clock{w.maxTime, w.maxTick}
	w.next = in.Offset + 1
	switch {
	case in.Kind == Tick:
		w.tick(in.Time)
	case w.rules.MaxSkew > 0 && in.Time.After(w.maxTick.Add(w.rules.MaxSkew)):
		// Ahead of the joiners' clock: a skewed clock, or records written
		// while no joiner ticked. Either way its time must not move the
		// watermark; the next tick tells which.
		if len(w.ahead) < maxAhead {
			a := &ahead{kind: in.Kind, key: in.Key, time: in.Time, offset: in.Offset}
			w.ahead = append(w.ahead, a)
			w.live.pushOther(other{offset: in.Offset, before: before, ahead: a})
		}
	case in.Time.After(w.maxTime):
		w.maxTime = in.Time
	}
	switch in.Kind {
	case Rank:
		w.addRank(in, before)
	case Reward, Activate:
		w.addOutcome(in, before)
	case Bad:
		if w.count(&w.stats.Undecodable) {
			w.out.Bad = append(w.out.Bad, BadRecord{Offset: in.Offset, Err: in.Err})
		}
	}
	w.expire()
	w.out = nil
}

// tick moves the joiners' clock to t and audits the records that came
// since the last tick stamped more than MaxSkew after t.
func (w *Window) tick(t time.Time) {
	if t.After(w.maxTick) {
		w.maxTick = t
	}
	if t.After(w.maxTime) {
		w.maxTime = t
	}
	for _, a := range w.ahead {
		a.done = true
		if a.time.After(t.Add(w.rules.MaxSkew)) {
			w.audit(Audit{Key: a.key, Reason: Skewed, Kind: a.kind, Outcome: Outcome{Time: a.time}, Offset: a.offset, Tick: t})
		}
	}
	clear(w.ahead)
	w.ahead = w.ahead[:0]
}

// count increments c, or Suppressed while replaying what was written, and
// reports whether output goes out.
func (w *Window) count(c *int64) bool {
	if w.out == nil {
		w.stats.Suppressed++
		return false
	}
	*c++
	return true
}

func (w *Window) addRank(in Input, before clock) {
	jd, bad := w.judgeOf(in.Rank)
	h := w.hash(in.Key)
	t := in.Time.UnixNano()
	if s := w.index.find(h, &w.events); s != 0 {
		w.count(&w.stats.DuplicateRanks)
		// A window resumed after the event's rank but before this one
		// takes this one as a new event, pending until its own deadline
		// (a repeat with another time or other rules: an event id used
		// twice). The event is remembered until that window would have
		// closed and been forgotten, so that a checkpoint never moves
		// past its rank while such an event could still produce output
		// or state.
		w.extend(s, t+int64(jd.wait+w.rules.Backward))
		return
	}
	if bad && w.out != nil {
		// Not counted while replaying: the owner that wrote this
		// record's outputs counted it. It is no output, so it is not
		// Suppressed either.
		w.stats.BadRules++
	}
	s := w.events.alloc()
	ev := w.events.at(s)
	*ev = event{hash: h, time: t, end: t + int64(jd.wait), forget: math.MinInt64, offset: in.Offset,
		before: before.nanos(), dflt: jd.dflt, gen: ev.gen, agg: uint8(slices.Index(aggregations[:], jd.agg))}
	r := in.Rank
	mode := normalMode(r.GetLearningMode())
	for _, f := range [...]struct {
		set  bool
		flag uint8
	}{
		{jd.own, evOwn},
		{r.GetDeferred(), evDeferred},
		{len(r.GetRanking()) > 0 && r.GetRanking()[0] == 0, evBaseline},
		{mode == eventsv1.LearningMode_LEARNING_MODE_APPRENTICE, evApprentice},
		{mode == eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY, evLoggingOnly},
		{mode != w.rules.LearningMode, evOtherMode},
	} {
		if f.set {
			ev.flags |= f.flag
		}
	}
	w.index.insert(s, &w.events)
	w.live.push(mark{slot: s, gen: ev.gen})
	if len(w.early) > 0 {
		if q := w.early[in.Key]; q != nil {
			w.takeEarly(s, q)
			delete(w.early, in.Key)
		}
	}
	w.deadlines.push(timed{at: ev.end, slot: s})
}

// takeEarly joins to event s, or finds late, the outcomes that came
// before it.
func (w *Window) takeEarly(s uint32, q *earlyQueue) {
	for _, e := range q.list {
		if e.done {
			continue
		}
		e.done = true
		if !w.inWindow(s, e.outcome.Time) {
			w.keepID(s, e.outcome, true)
			w.late(s, e.key, e.outcome, e.offset)
			continue
		}
		e.owner = ref{s, w.events.at(s).gen}
		w.keepID(s, e.outcome, false)
	}
}

func (w *Window) addOutcome(in Input, before clock) {
	o := Outcome{Activate: in.Kind == Activate, Value: in.Value, Time: in.Time, ID: in.ID, Slot: in.Slot}
	if s := w.index.find(w.hash(in.Key), &w.events); s != 0 {
		if w.hasID(s, o.ID) {
			w.count(&w.stats.DuplicateOutcomes)
			return
		}
		if w.events.at(s).flags&evClosed != 0 || !w.inWindow(s, o.Time) {
			w.keepID(s, o, true)
			w.late(s, in.Key, o, in.Offset)
			return
		}
		// The rank's mark, at a lower offset, keeps this record needed.
		w.keepID(s, o, false)
		return
	}
	q := w.early[in.Key]
	if q == nil {
		q = new(earlyQueue)
		w.early[in.Key] = q
	}
	if q.ids.has(o.ID) {
		w.count(&w.stats.DuplicateOutcomes)
		return
	}
	q.ids.add(o.ID)
	q.open++
	e := &early{key: in.Key, outcome: o, offset: in.Offset}
	q.list = append(q.list, e)
	w.earlyQ.push(e)
	w.live.pushOther(other{offset: in.Offset, before: before, out: e})
}

// keepID adds outcome o to event s: joined (followed by the entry of its
// slot if it names one), or only its id if it is late (an outcome without
// id is not kept then: it is never deduplicated).
func (w *Window) keepID(s uint32, o Outcome, late bool) {
	if late && o.ID == 0 {
		return
	}
	i := w.outcomes.alloc()
	ev := w.events.at(s)
	next := ev.outs
	if o.Slot != 0 && !late {
		c := w.outcomes.alloc()
		*w.outcomes.at(c) = outcome{id: o.Slot, next: next | outSlot}
		next = c
	}
	if o.Activate {
		next |= outActivate
	}
	if late {
		next |= outLate
	}
	*w.outcomes.at(i) = outcome{time: o.Time.UnixNano(), id: o.ID, value: o.Value, next: next}
	ev.outs = i
	if o.ID == 0 {
		return
	}
	if ids := w.manyIDs[s]; ids != nil {
		ids[o.ID] = struct{}{}
		return
	}
	// A flood of outcomes moves the event's ids to a set, so that each
	// new outcome costs the same.
	n := 0
	for i := ev.outs; i != 0 && n <= idSetSmall; i = w.outcomes.at(i).next & outNext {
		n++
	}
	if n > idSetSmall {
		ids := map[uint64]struct{}{}
		for i := ev.outs; i != 0; i = w.outcomes.at(i).next & outNext {
			if o := w.outcomes.at(i); o.id != 0 && o.next&outSlot == 0 {
				ids[o.id] = struct{}{}
			}
		}
		if w.manyIDs == nil {
			w.manyIDs = map[uint32]map[uint64]struct{}{}
		}
		w.manyIDs[s] = ids
	}
}

// hasID reports whether event s has an outcome with id.
func (w *Window) hasID(s uint32, id uint64) bool {
	if id == 0 {
		return false
	}
	if ids := w.manyIDs[s]; ids != nil {
		_, ok := ids[id]
		return ok
	}
	for i := w.events.at(s).outs; i != 0; {
		o := w.outcomes.at(i)
		if o.id == id && o.next&outSlot == 0 {
			return true
		}
		i = o.next & outNext
	}
	return false
}

// earlyQueue is the outcomes that came for a key before its rank. Those
// that dangled are done: they no longer count, and a copy of one that
// comes later is a new outcome (as it is to a window resumed after it).
type earlyQueue struct {
	list []*early
	ids  idSet // of the outcomes not done, so that a copy counts once
	open int   // outcomes not done
}

// idSet is a set of outcome ids; 0 is never in it. A key usually gets a
// few outcomes, kept in a slice; one that gets many (a flood of calls)
// moves to a map, so that each new outcome costs the same.
type idSet struct {
	small []uint64
	big   map[uint64]struct{}
}

const idSetSmall = 16

func (s *idSet) has(id uint64) bool {
	if id == 0 {
		return false
	}
	if s.big != nil {
		_, ok := s.big[id]
		return ok
	}
	return slices.Contains(s.small, id)
}

func (s *idSet) remove(id uint64) {
	if s.big != nil {
		delete(s.big, id)
		return
	}
	if i := slices.Index(s.small, id); i >= 0 {
		s.small = slices.Delete(s.small, i, i+1)
	}
}

func (s *idSet) add(id uint64) {
	switch {
	case id == 0:
	case s.big != nil:
		s.big[id] = struct{}{}
	case len(s.small) < idSetSmall:
		s.small = append(s.small, id)
	default:
		s.big = make(map[uint64]struct{}, 2*idSetSmall)
		for _, x := range s.small {
			s.big[x] = struct{}{}
		}
		s.big[id] = struct{}{}
		s.small = nil
	}
}

// inWindow reports whether an outcome at t counts for event s: less than
// its reward wait after the rank, and less than Backward before it.
func (w *Window) inWindow(s uint32, t time.Time) bool {
	ev, n := w.events.at(s), t.UnixNano()
	return n < ev.end && ev.time-n < int64(w.rules.Backward)
}

// late audits an outcome of a known event that it does not count for,
// and keeps the event remembered as long as the outcome would have waited
// had the event been unknown. That makes a restart exact: if the event is
// forgotten before a checkpoint, so is every trace of its outcomes.
func (w *Window) late(s uint32, key string, o Outcome, offset int64) {
	w.audit(Audit{Key: key, Reason: Late, Outcome: o, Offset: offset, Rank: time.Unix(0, w.events.at(s).time)})
	w.extend(s, o.Time.Add(w.rules.Backward).UnixNano())
}

// extend keeps event s remembered at least until t.
func (w *Window) extend(s uint32, t int64) {
	if ev := w.events.at(s); t > ev.forget {
		ev.forget = t
		if ev.flags&evClosed != 0 {
			w.forgets.push(forgetAt{at: t, ref: ref{s, ev.gen}})
		}
	}
}

func (w *Window) audit(a Audit) {
	c := &w.stats.Late
	switch a.Reason {
	case Dangling:
		c = &w.stats.Dangling
	case Skewed:
		c = &w.stats.Skewed
	}
	if a.Kind == 0 && a.Reason != Skewed {
		a.Kind = Reward
		if a.Outcome.Activate {
			a.Kind = Activate
		}
	}
	if w.count(c) {
		w.out.Audits = append(w.out.Audits, a)
	}
}

// watermark is the time up to which every record is taken to have come.
func (w *Window) watermark() time.Time { return w.maxTime.Add(-w.rules.Slack) }

// expire moves on what the watermark has passed: early outcomes too old
// for any rank still to come dangle, pending events close, closed events
// are forgotten.
func (w *Window) expire() {
	wm := w.watermark()
	wmNano := wm.UnixNano()
	for len(w.earlyQ.q) > 0 && !w.earlyQ.q[0].outcome.Time.Add(w.rules.Backward).After(wm) {
		e := w.earlyQ.pop()
		if e.done {
			continue
		}
		e.done = true
		w.audit(Audit{Key: e.key, Reason: Dangling, Outcome: e.outcome, Offset: e.offset})
		q := w.early[e.key]
		if q.open--; q.open == 0 {
			delete(w.early, e.key)
			continue
		}
		q.ids.remove(e.outcome.ID)
		// Outcomes dangle in time order, not always in their key's
		// order: drop the done ones at the front.
		for q.list[0].done {
			q.list[0] = nil
			q.list = q.list[1:]
		}
	}
	for len(w.deadlines.q) > 0 && w.deadlines.q[0].at <= wmNano {
		s := w.deadlines.pop().slot
		w.close(s)
		ev := w.events.at(s)
		ev.flags |= evClosed
		ev.forget = max(ev.forget, ev.end+int64(w.rules.Backward))
		w.forgets.push(forgetAt{at: ev.forget, ref: ref{s, ev.gen}})
	}
	for len(w.forgets.q) > 0 && w.forgets.q[0].at <= wmNano {
		f := w.forgets.pop()
		if !w.alive(f.ref) || f.at != w.events.at(f.slot).forget {
			continue // pushed again with a later time
		}
		w.forget(f.slot)
	}
}

// forget frees event s and its outcomes.
func (w *Window) forget(s uint32) {
	ev := w.events.at(s)
	w.index.remove(s, &w.events)
	for i := ev.outs; i != 0; {
		next := w.outcomes.at(i).next & outNext
		w.outcomes.release(i)
		i = next
	}
	delete(w.manyIDs, s)
	ev.outs = 0
	ev.gen++
	w.events.release(s)
}

// close applies the reward rules to event s, whose window closed. The
// event keeps its outcomes' ids, which late outcomes need.
func (w *Window) close(s uint32) {
	ev := w.events.at(s)
	var notLearnable *int64
	activated := false
	n := 0
	for i := ev.outs; i != 0; {
		o := w.outcomes.at(i)
		if o.next&(outLate|outSlot) == 0 {
			n++
			activated = activated || o.next&outActivate != 0
		}
		i = o.next & outNext
	}
	switch {
	case ev.flags&evOwn == 0 && ev.flags&evOtherMode != 0:
		// A record without rules comes from a server that did not log
		// its loop's live configuration: the joiner's flag says the mode.
		notLearnable = &w.stats.OtherMode
	case ev.flags&evLoggingOnly != 0:
		notLearnable = &w.stats.LoggingOnly
	case ev.flags&evDeferred != 0 && !activated:
		notLearnable = &w.stats.NotActivated
	}
	if !w.count(&w.stats.Emitted) {
		return
	}
	j := Joined{Offset: ev.offset, Time: time.Unix(0, ev.time), hash: ev.hash, Learnable: notLearnable == nil,
		agg: aggregations[ev.agg], dflt: ev.dflt, apprentice: ev.flags&evApprentice != 0}
	if n > 0 {
		// In arrival order: the list is newest first.
		j.Outcomes = make([]Outcome, n)
		for i := ev.outs; i != 0; {
			o := w.outcomes.at(i)
			if o.next&(outLate|outSlot) == 0 {
				n--
				j.Outcomes[n] = Outcome{Activate: o.next&outActivate != 0, Value: o.value, Time: time.Unix(0, o.time), ID: o.id}
				if c := o.next & outNext; c != 0 && w.outcomes.at(c).next&outSlot != 0 {
					j.Outcomes[n].Slot = w.outcomes.at(c).id // its slot's entry follows it
				}
			}
			i = o.next & outNext
		}
	}
	var k int
	j.Original, k = aggregate(j.agg, j.Outcomes)
	if k == 0 {
		j.Original = ev.dflt
		w.stats.DefaultRewards++
	}
	j.Reward = j.Original
	if ev.flags&evApprentice != 0 {
		// Imitation: the model is rewarded for choosing the baseline,
		// the first eligible action.
		j.Reward = 0
		if ev.flags&evBaseline != 0 {
			j.Reward = 1
		}
	}
	if j.Learnable {
		w.stats.Learnable++
	} else {
		*notLearnable++
	}
	w.out.Joined = append(w.out.Joined, j)
}

// setRank fills in what a [Window] leaves out of j (see [Joined]) from
// the rank record of its event, decoded as in: its key, rank and trace,
// and for a multi-slot event its slots with their rewards. It returns
// how many rewards of a multi-slot event named none of its slots (or no
// slot): those are not learned.
func (j *Joined) setRank(in *Input) (unknown int) {
	j.Key, j.Rank, j.Trace = in.Key, in.Rank, in.Trace
	if in.Slots == nil {
		return 0
	}
	j.Slots = slices.Clone(in.Slots)
	for k := range j.Slots {
		j.Slots[k].hash = SlotHash(j.Slots[k].ID)
	}
	for _, o := range j.Outcomes {
		if !o.Activate && !slices.ContainsFunc(j.Slots, func(s Slot) bool { return s.hash == o.Slot }) {
			unknown++
		}
	}
	var rewards []Outcome
	for k := range j.Slots {
		s := &j.Slots[k]
		rewards = rewards[:0]
		for _, o := range j.Outcomes {
			if !o.Activate && o.Slot == s.hash {
				rewards = append(rewards, o)
			}
		}
		var n int
		if s.Original, n = aggregate(j.agg, rewards); n == 0 {
			s.Original = j.dflt
		}
		s.Reward = s.Original
		if j.apprentice {
			// Imitation, slot by slot: rewarded for logging the slot's
			// baseline action.
			s.Reward = 0
			if d := j.Rank.GetSlots(); k < len(d) && len(d[k].GetRanking()) > 0 && d[k].GetRanking()[0] == s.Baseline {
				s.Reward = 1
			}
		}
	}
	return unknown
}

// aggregate combines the rewards among outcomes, in float32 as
// Personalizer's joiner does, and returns how many there were.
func aggregate(agg Aggregation, outcomes []Outcome) (float32, int) {
	var values []float32
	var first *Outcome
	for i := range outcomes {
		o := &outcomes[i]
		if o.Activate {
			continue
		}
		values = append(values, o.Value)
		if first == nil || o.Time.Before(first.Time) {
			first = o
		}
	}
	n := len(values)
	if n == 0 {
		return 0, 0
	}
	var sum float32
	for _, v := range values {
		sum += v
	}
	switch agg {
	case Sum:
		return sum, n
	case Average:
		return sum / float32(n), n
	case Median:
		slices.Sort(values)
		if n%2 == 0 {
			return (values[n/2-1] + values[n/2]) / 2, n
		}
		return values[n/2], n
	case Min:
		return slices.Min(values), n
	case Max:
		return slices.Max(values), n
	}
	return first.Value, n
}

// Checkpoint returns where a new owner of the partition resumes: at the
// first record that a pending or remembered event or an early outcome
// still needs, or after the last input when nothing is open.
func (w *Window) Checkpoint() Checkpoint {
	cp := Checkpoint{Offset: w.next, Watermark: w.maxTime, Tick: w.maxTick, Next: max(w.next, w.resume)}
	if off, before, ok := w.live.first(w); ok {
		cp.Offset, cp.Watermark, cp.Tick = off, before.time, before.tick
	}
	return cp
}

// clock is a window's time before a record: the newest record time that
// moves the watermark and the newest tick time.
type clock struct{ time, tick time.Time }

// marks are the records that open state may still need after a restart,
// in offset order: a rank (needed until its event is forgotten), an
// outcome that came before its rank (needed until it dangles, or until
// the event it joined is forgotten) or a record ahead of the joiners'
// clock (needed until the next tick). Outcomes that come after their rank
// need no mark: the rank's mark, at a lower offset, covers them. Records
// come in offset order, so the first needed mark is the lowest needed
// offset.
//
// A rank's mark is its event (8 bytes); the others, rare, wait in a
// second queue in the same order, each marked in the first by slot 0.
type marks struct {
	q      fifo[mark]
	others fifo[other]
}

type mark ref // slot 0: the first of others

type other struct {
	offset int64
	before clock // the window's clock before this record
	out    *early
	ahead  *ahead
}

func (ms *marks) push(m mark) { ms.q.push(m) }

func (ms *marks) pushOther(o other) {
	ms.others.push(o)
	ms.q.push(mark{})
}

// needed reports whether the first mark is needed.
func (ms *marks) needed(w *Window) bool {
	m := ms.q.front()
	if m.slot != 0 {
		return w.alive(ref(m))
	}
	switch o := ms.others.front(); {
	case o.ahead != nil:
		return !o.ahead.done
	case o.out.owner.slot != 0:
		return w.alive(o.out.owner)
	default:
		return !o.out.done
	}
}

// first drops marks no longer needed from the front and returns the
// offset and clock of the first needed one.
func (ms *marks) first(w *Window) (int64, clock, bool) {
	for ms.q.len() > 0 && !ms.needed(w) {
		if ms.q.pop().slot == 0 {
			ms.others.pop()
		}
	}
	if ms.q.len() == 0 {
		return 0, clock{}, false
	}
	if m := ms.q.front(); m.slot != 0 {
		ev := w.events.at(m.slot)
		return ev.offset, ev.before.clock(), true
	}
	o := ms.others.front()
	return o.offset, o.before, true
}

// fifo is a queue that reuses its front rather than grow.
type fifo[T any] struct {
	q    []T
	head int
}

func (f *fifo[T]) len() int { return len(f.q) - f.head }
func (f *fifo[T]) front() T { return f.q[f.head] }
func (f *fifo[T]) push(x T) { f.q = append(f.q, x) }

func (f *fifo[T]) pop() T {
	x := f.q[f.head]
	var zero T
	f.q[f.head] = zero
	f.head++
	if f.head > 64 && f.head >= len(f.q)/2 {
		n := copy(f.q, f.q[f.head:])
		clear(f.q[n:])
		f.q, f.head = f.q[:n], 0
	}
	return x
}

// timed is a pending event due at a time, in Unix nanoseconds.
type timed struct {
	at   int64
	slot uint32
}

// forgetAt is a closed event to forget at a time, in Unix nanoseconds.
type forgetAt struct {
	at int64
	ref
}

// before orders early outcomes by time, then offset.
func (e *early) before(o *early) bool {
	if !e.outcome.Time.Equal(o.outcome.Time) {
		return e.outcome.Time.Before(o.outcome.Time)
	}
	return e.offset < o.offset
}

// minHeap is a binary min-heap by less. Deadlines tie by rank offset, so
// that output order depends only on the input.
type minHeap[T any] struct {
	q    []T
	less func(a, b T) bool
}

func (h *minHeap[T]) push(x T) {
	h.q = append(h.q, x)
	q := h.q
	for j := len(q) - 1; j > 0; {
		i := (j - 1) / 2
		if !h.less(q[j], q[i]) {
			break
		}
		q[i], q[j] = q[j], q[i]
		j = i
	}
}

func (h *minHeap[T]) pop() T {
	q := h.q
	n := len(q) - 1
	x := q[0]
	q[0] = q[n]
	var zero T
	q[n] = zero
	q = q[:n]
	h.q = q
	for i := 0; ; {
		j := 2*i + 1
		if j >= n {
			break
		}
		if k := j + 1; k < n && h.less(q[k], q[j]) {
			j = k
		}
		if !h.less(q[j], q[i]) {
			break
		}
		q[i], q[j] = q[j], q[i]
		i = j
	}
	return x
}

// keyHash is a 128-bit hash of an event's key, which the window keeps
// instead of the key: two keys share one with a chance of 2^-128.
type keyHash [2]uint64

// slab holds Ts in chunks, indexed by uint32: it never copies what it
// holds to grow, and reuses what is released. Index 0 is never handed
// out, so that 0 can mean none.
type slab[T any] struct {
	chunks []*[slabChunk]T
	n      uint32 // indices handed out, 0 included
	free   []uint32
}

const (
	slabBits  = 12
	slabChunk = 1 << slabBits
)

func (s *slab[T]) at(i uint32) *T { return &s.chunks[i>>slabBits][i&(slabChunk-1)] }

// alloc returns an unused index. What it holds is what was released
// there (or zero).
func (s *slab[T]) alloc() uint32 {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i
	}
	if s.n == 0 {
		s.n = 1
	}
	if int(s.n>>slabBits) == len(s.chunks) {
		s.chunks = append(s.chunks, new([slabChunk]T))
	}
	s.n++
	return s.n - 1
}

func (s *slab[T]) release(i uint32) { s.free = append(s.free, i) }

// keyIndex finds events by key hash: open addressing with linear probing
// over event slots (0: empty), at most half full; removal shifts the
// entries after it back, so no tombstones accumulate.
type keyIndex struct {
	t []uint32
	n int
}

// find returns the event with hash h, or 0.
func (x *keyIndex) find(h keyHash, evs *slab[event]) uint32 {
	if len(x.t) == 0 {
		return 0
	}
	mask := uint64(len(x.t) - 1)
	for i := h[0] & mask; ; i = (i + 1) & mask {
		if s := x.t[i]; s == 0 || evs.at(s).hash == h {
			return s
		}
	}
}

// insert adds event s, whose hash is not in x.
func (x *keyIndex) insert(s uint32, evs *slab[event]) {
	if 2*(x.n+1) > len(x.t) {
		old := x.t
		x.t = make([]uint32, max(1024, 2*len(old)))
		for _, o := range old {
			if o != 0 {
				x.place(o, evs)
			}
		}
	}
	x.place(s, evs)
	x.n++
}

func (x *keyIndex) place(s uint32, evs *slab[event]) {
	mask := uint64(len(x.t) - 1)
	i := evs.at(s).hash[0] & mask
	for x.t[i] != 0 {
		i = (i + 1) & mask
	}
	x.t[i] = s
}

// remove removes event s, which is in x.
func (x *keyIndex) remove(s uint32, evs *slab[event]) {
	mask := uint64(len(x.t) - 1)
	i := evs.at(s).hash[0] & mask
	for x.t[i] != s {
		i = (i + 1) & mask
	}
	// Move back every entry after i, up to the next empty one, that
	// would no longer be found past the hole.
	for j := (i + 1) & mask; x.t[j] != 0; j = (j + 1) & mask {
		home := evs.at(x.t[j]).hash[0] & mask
		if (j-home)&mask >= (j-i)&mask {
			x.t[i] = x.t[j]
			i = j
		}
	}
	x.t[i] = 0
	x.n--
}
