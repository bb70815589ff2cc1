package joiner

import (
	"fmt"
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
	Rank   *eventsv1.RankEvent // for Rank
	// Trace is a Rank record's W3C trace context (its traceparent
	// header), nil when the call was not traced; it goes to the joined line.
	Trace []byte
	Value float32 // for Reward
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
}

// Joined is one event whose window has closed.
type Joined struct {
	Key      string // loop/eventId
	Offset   int64  // of the rank record
	Rank     *eventsv1.RankEvent
	Time     time.Time // rank time
	Trace    []byte    // the rank's trace context, see [Input.Trace]
	Outcomes []Outcome // every outcome joined, in arrival order
	// Reward is the reward to learn: the aggregated reward, the default
	// reward when none came, or in Apprentice mode 1 if the model chose
	// the baseline and 0 if not.
	Reward float32
	// Original is the aggregated (or default) reward, whatever the mode.
	Original float32
	// Learnable is false for a deferred event never activated, a
	// LoggingOnly event, and an event without rules logged in another
	// learning mode than the loop's.
	Learnable bool
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
	Errors    int64 // failed attempts to fetch or write (each retried)
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
	s.Errors += o.Errors
}

// Sub returns s minus o.
func (s Stats) Sub(o Stats) Stats {
	o.Emitted, o.Learnable, o.DefaultRewards, o.NotActivated = -o.Emitted, -o.Learnable, -o.DefaultRewards, -o.NotActivated
	o.LoggingOnly, o.OtherMode, o.BadRules, o.Late, o.Dangling = -o.LoggingOnly, -o.OtherMode, -o.BadRules, -o.Late, -o.Dangling
	o.DuplicateRanks, o.DuplicateOutcomes, o.Undecodable, o.Suppressed = -o.DuplicateRanks, -o.DuplicateOutcomes, -o.Undecodable, -o.Suppressed
	o.Skewed, o.Truncated, o.Refused, o.Dropped, o.Errors = -o.Skewed, -o.Truncated, -o.Refused, -o.Dropped, -o.Errors
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
type Window struct {
	rules     Rules
	fallback  judge                  // of records without valid rules: rules'
	events    map[string]*event      // pending and closed
	early     map[string]*earlyQueue // outcomes waiting for their rank
	deadlines timeHeap               // pending events by deadline
	forgets   timeHeap               // closed events by when to forget them
	earlyQ    earlyHeap              // early outcomes by when they dangle
	live      marks                  // the records open state still needs, in offset order
	maxTime   time.Time              // the newest record time, of the records that move the watermark
	maxTick   time.Time              // the newest tick time: the joiners' clock
	ahead     []*ahead               // records since the last tick stamped more than MaxSkew after maxTick
	next      int64                  // offset after the last input
	resume    int64                  // outputs of records before it are suppressed
	out       *Output                // nil while suppressing
	stats     Stats
}

type event struct {
	Joined
	judge
	// forget is when a closed event is forgotten: Backward after its
	// deadline (rank time + its own reward wait), after its latest late
	// outcome or after the deadline of a repeat of its rank, whichever is
	// latest, so that every outcome and repeat it took is forgotten with
	// it (see Checkpoint).
	forget    time.Time
	offset    int64 // of the rank
	ids       idSet // outcome ids seen, joined or late
	closed    bool
	forgotten bool
}

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
	for _, a := range [...]Aggregation{Earliest, Sum, Average, Median, Min, Max} {
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
	owner   *event // the event it joined, if any
	done    bool   // joined, late or dangling
}

// NewWindow returns an empty window. The rules must be valid.
func NewWindow(r Rules) *Window {
	r.LearningMode = normalMode(r.LearningMode)
	return &Window{rules: r, fallback: judge{wait: r.RewardWait, dflt: r.DefaultReward, agg: r.Aggregation},
		events: map[string]*event{}, early: map[string]*earlyQueue{}}
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
func (w *Window) Pending() int { return len(w.deadlines) }

// Add applies one input and appends to out what it produces: the events
// whose windows it closed (in deadline order, then rank offset order), the
// outcomes it found late or dangling, and the input itself if it is Bad.
// Nothing is appended for inputs before the resume point.
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
			w.live.push(mark{offset: in.Offset, before: before, ahead: a})
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
	if ev, dup := w.events[in.Key]; dup {
		w.count(&w.stats.DuplicateRanks)
		// A window resumed after ev's rank but before this one takes this
		// one as a new event, pending until its own deadline (a repeat
		// with another time or other rules: an event id used twice). ev
		// is remembered until that window would have closed and been
		// forgotten, so that a checkpoint never moves past ev's rank
		// while such an event could still produce output or state.
		w.extend(ev, in.Time.Add(jd.wait+w.rules.Backward))
		return
	}
	if bad && w.out != nil {
		// Not counted while replaying: the owner that wrote this
		// record's outputs counted it. It is no output, so it is not
		// Suppressed either.
		w.stats.BadRules++
	}
	ev := &event{
		Joined: Joined{Key: in.Key, Offset: in.Offset, Rank: in.Rank, Time: in.Time, Trace: in.Trace},
		judge:  jd,
		offset: in.Offset,
	}
	w.events[in.Key] = ev
	w.live.push(mark{offset: in.Offset, before: before, ev: ev})
	if q := w.early[in.Key]; q != nil {
		w.takeEarly(ev, q)
	}
	delete(w.early, in.Key)
	w.deadlines.push(timed{at: in.Time.Add(ev.wait).UnixNano(), ev: ev})
}

// takeEarly joins to ev, or finds late, the outcomes that came before it.
func (w *Window) takeEarly(ev *event, q *earlyQueue) {
	for _, e := range q.list {
		if e.done {
			continue
		}
		e.done = true
		ev.ids.add(e.outcome.ID)
		if !w.inWindow(ev, e.outcome.Time) {
			w.late(ev, e.outcome, e.offset)
			continue
		}
		e.owner = ev
		ev.Outcomes = append(ev.Outcomes, e.outcome)
	}
}

func (w *Window) addOutcome(in Input, before clock) {
	o := Outcome{Activate: in.Kind == Activate, Value: in.Value, Time: in.Time, ID: in.ID}
	if ev, ok := w.events[in.Key]; ok {
		if ev.ids.has(o.ID) {
			w.count(&w.stats.DuplicateOutcomes)
			return
		}
		ev.ids.add(o.ID)
		if ev.closed || !w.inWindow(ev, o.Time) {
			w.late(ev, o, in.Offset)
			return
		}
		// The rank's mark, at a lower offset, keeps this record needed.
		ev.Outcomes = append(ev.Outcomes, o)
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
	w.live.push(mark{offset: in.Offset, before: before, out: e})
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

// inWindow reports whether an outcome at t counts for ev: less than ev's
// reward wait after the rank, and less than Backward before it.
func (w *Window) inWindow(ev *event, t time.Time) bool {
	return t.Sub(ev.Time) < ev.wait && ev.Time.Sub(t) < w.rules.Backward
}

// late audits an outcome of a known event that it does not count for,
// and keeps the event remembered as long as the outcome would have waited
// had the event been unknown. That makes a restart exact: if the event is
// forgotten before a checkpoint, so is every trace of its outcomes.
func (w *Window) late(ev *event, o Outcome, offset int64) {
	w.audit(Audit{Key: ev.Key, Reason: Late, Outcome: o, Offset: offset, Rank: ev.Time})
	w.extend(ev, o.Time.Add(w.rules.Backward))
}

// extend keeps ev remembered at least until t.
func (w *Window) extend(ev *event, t time.Time) {
	if t.After(ev.forget) {
		ev.forget = t
		if ev.closed {
			w.forgets.push(timed{at: t.UnixNano(), ev: ev})
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
	for len(w.earlyQ) > 0 && !w.earlyQ[0].outcome.Time.Add(w.rules.Backward).After(wm) {
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
	for len(w.deadlines) > 0 && w.deadlines[0].at <= wmNano {
		ev := w.deadlines.pop().ev
		w.close(ev)
		ev.closed = true
		if t := ev.Time.Add(ev.wait + w.rules.Backward); t.After(ev.forget) {
			ev.forget = t
		}
		w.forgets.push(timed{at: ev.forget.UnixNano(), ev: ev})
	}
	for len(w.forgets) > 0 && w.forgets[0].at <= wmNano {
		f := w.forgets.pop()
		if f.at != f.ev.forget.UnixNano() || f.ev.forgotten {
			continue // pushed again with a later time
		}
		f.ev.forgotten = true
		delete(w.events, f.ev.Key)
	}
}

// close applies the reward rules to an event whose window closed.
func (w *Window) close(ev *event) {
	j := ev.Joined
	// Closed events keep only what late outcomes and repeated ranks need.
	ev.Rank, ev.Outcomes, ev.Trace = nil, nil, nil

	var n int
	j.Original, n = aggregate(ev.agg, j.Outcomes)
	if n == 0 {
		j.Original = ev.dflt
	}
	j.Reward = j.Original
	mode := normalMode(j.Rank.GetLearningMode())
	if mode == eventsv1.LearningMode_LEARNING_MODE_APPRENTICE {
		// Imitation: the model is rewarded for choosing the baseline,
		// the first eligible action.
		j.Reward = 0
		if j.Rank.GetRanking()[0] == 0 {
			j.Reward = 1
		}
	}
	activated := slices.ContainsFunc(j.Outcomes, func(o Outcome) bool { return o.Activate })
	var notLearnable *int64
	switch {
	case !ev.own && mode != w.rules.LearningMode:
		// A record without rules comes from a server that did not log
		// its loop's live configuration: the joiner's flag says the mode.
		notLearnable = &w.stats.OtherMode
	case mode == eventsv1.LearningMode_LEARNING_MODE_LOGGING_ONLY:
		notLearnable = &w.stats.LoggingOnly
	case j.Rank.GetDeferred() && !activated:
		notLearnable = &w.stats.NotActivated
	}
	j.Learnable = notLearnable == nil
	if !w.count(&w.stats.Emitted) {
		return
	}
	if n == 0 {
		w.stats.DefaultRewards++
	}
	if j.Learnable {
		w.stats.Learnable++
	} else {
		*notLearnable++
	}
	w.out.Joined = append(w.out.Joined, j)
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
	if m, ok := w.live.first(); ok {
		cp.Offset, cp.Watermark, cp.Tick = m.offset, m.before.time, m.before.tick
	}
	return cp
}

// clock is a window's time before a record: the newest record time that
// moves the watermark and the newest tick time.
type clock struct{ time, tick time.Time }

// mark is a record that open state may still need after a restart: a rank
// (needed until its event is forgotten), an outcome that came before its
// rank (needed until it dangles, or until the event it joined is
// forgotten) or a record ahead of the joiners' clock (needed until the
// next tick). Outcomes that come after their rank need no mark: the rank's
// mark, at a lower offset, covers them.
type mark struct {
	offset int64
	before clock // the window's clock before this record
	ev     *event
	out    *early
	ahead  *ahead
}

func (m *mark) needed() bool {
	switch {
	case m.ahead != nil:
		return !m.ahead.done
	case m.ev != nil:
		return !m.ev.forgotten
	case m.out.owner != nil:
		return !m.out.owner.forgotten
	}
	return !m.out.done
}

// marks is a FIFO of marks in offset order; records come in offset order,
// so the first needed mark is the lowest needed offset.
type marks struct {
	q    []mark
	head int
}

func (ms *marks) push(m mark) {
	if len(ms.q) == cap(ms.q) {
		ms.first() // make room at the front rather than grow
	}
	ms.q = append(ms.q, m)
}

// first drops marks no longer needed from the front and returns the first
// needed one.
func (ms *marks) first() (mark, bool) {
	for ms.head < len(ms.q) && !ms.q[ms.head].needed() {
		ms.q[ms.head] = mark{}
		ms.head++
	}
	if ms.head > 64 && ms.head >= len(ms.q)/2 {
		n := copy(ms.q, ms.q[ms.head:])
		clear(ms.q[n:])
		ms.q, ms.head = ms.q[:n], 0
	}
	if ms.head == len(ms.q) {
		return mark{}, false
	}
	return ms.q[ms.head], true
}

// timed is an event due at a time, in Unix nanoseconds: cheaper to
// compare than time.Time, and record times (milliseconds) fit.
type timed struct {
	at int64
	ev *event
}

// before orders by time, then by rank offset, so that output order
// depends only on the input.
func (t timed) before(o timed) bool {
	if t.at != o.at {
		return t.at < o.at
	}
	return t.ev.offset < o.ev.offset
}

// before orders early outcomes by time, then offset.
func (e *early) before(o *early) bool {
	if !e.outcome.Time.Equal(o.outcome.Time) {
		return e.outcome.Time.Before(o.outcome.Time)
	}
	return e.offset < o.offset
}

// minHeap is a binary min-heap. (container/heap would put every element
// in an interface, an allocation per push for timed.)
type minHeap[T interface{ before(T) bool }] []T

type (
	timeHeap  = minHeap[timed]
	earlyHeap = minHeap[*early]
)

func (h *minHeap[T]) push(x T) {
	*h = append(*h, x)
	q := *h
	for j := len(q) - 1; j > 0; {
		i := (j - 1) / 2
		if !q[j].before(q[i]) {
			break
		}
		q[i], q[j] = q[j], q[i]
		j = i
	}
}

func (h *minHeap[T]) pop() T {
	q := *h
	n := len(q) - 1
	x := q[0]
	q[0] = q[n]
	var zero T
	q[n] = zero
	q = q[:n]
	*h = q
	for i := 0; ; {
		j := 2*i + 1
		if j >= n {
			break
		}
		if k := j + 1; k < n && q[k].before(q[j]) {
			j = k
		}
		if !q[j].before(q[i]) {
			break
		}
		q[i], q[j] = q[j], q[i]
		i = j
	}
	return x
}
