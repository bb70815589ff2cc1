package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/internal/decide"
	"github.com/open-personalizer/personalizer/internal/watch"
	"github.com/open-personalizer/personalizer/loop"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// WhenFull is what [Local.Rank] does when its buffer of rank records is full.
type WhenFull int

const (
	// Drop answers the rank and drops its record, counted in
	// [LocalStats.Dropped]: the rank is not learned from (rlclientlib's
	// default, and what the server does when its own event buffer is full).
	Drop WhenFull = iota
	// Block waits for room in the buffer; if the call's context ends
	// first (or Close comes), Rank fails with the context's error (or
	// ErrClosed) and the record is counted dropped.
	Block
	// Fail makes Rank fail with ResourceExhausted, the record counted
	// dropped: the caller decides what to show.
	Fail
)

// LocalConfig configures a [Local]. Zero fields take the defaults.
type LocalConfig struct {
	// Buffer is how many rank records may wait to be sent; 10,000 by default.
	Buffer int
	// WhenFull is what Rank does when the buffer is full; Drop by default.
	WhenFull WhenFull
	// MaxBatch and MaxBatchBytes bound one LogRanks call: 500 records and
	// 1 MiB by default. Keep MaxBatchBytes under the service's
	// --max-message-bytes (4 MiB by default). A record larger than
	// MaxBatchBytes goes alone; the record size limit Rank applies keeps
	// it near 1 MB at most, so a service whose --max-message-bytes is
	// below that refuses it, and the batch is retried until Close.
	MaxBatch      int
	MaxBatchBytes int
	// FlushInterval is the longest a record waits for its batch to fill;
	// 100 ms by default. The reward window of a rank starts when the
	// service logs it, so this delays it a little; rewards sent up to 2
	// minutes before count.
	FlushInterval time.Duration
	// Backoff is the wait before a failed batch, model fetch or watch is
	// tried again, doubled each time up to MaxBackoff: 100 ms and 5 s by
	// default.
	Backoff, MaxBackoff time.Duration
}

func (c *LocalConfig) defaults() {
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&c.Buffer, 10_000)
	set(&c.MaxBatch, 500)
	set(&c.MaxBatchBytes, 1<<20)
	setDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setDur(&c.FlushInterval, 100*time.Millisecond)
	setDur(&c.Backoff, 100*time.Millisecond)
	setDur(&c.MaxBackoff, 5*time.Second)
}

// LocalStats counts what a [Local] did. The record of every rank decided
// is, in the end, exactly one of Logged, Dropped, Rejected or Lost, or
// still Pending; Ranked counts the ranks answered, which under Fail and
// Block leaves out those dropped.
type LocalStats struct {
	Ranked   int64 // ranks answered
	Logged   int64 // rank records the service took
	Pending  int64 // records buffered or being sent
	Dropped  int64 // records not buffered: the buffer was full, or Close had come
	Rejected int64 // records the service refused as invalid (InvalidArgument)
	Lost     int64 // records Close gave up sending
	Retries  int64 // LogRanks calls that failed and were made again
	// ModelErrors counts model versions refused: their checksum did not
	// match, or they did not read. The previous version stays in use.
	ModelErrors int64
}

// ErrClosed is the error of [Local.Rank] after [Local.Close].
var ErrClosed = errors.New("local inference is closed")

// Local ranks in the caller's process (local inference), with the loop's
// current model and settings pulled from the service, and sends the rank
// records to the service in batches (LogRanks) to be learned from. It
// decides with the server's own code (package internal/decide): the same
// request and event id, under the same model version and settings, get
// the same ranking, probabilities and model version as the service's
// Rank. Rewards and activations go to the service as with a [Client].
// Local is safe for concurrent use.
type Local struct {
	remote *Client
	cc     grpc.ClientConnInterface
	pc     personalizerv1.PersonalizerServiceClient
	ac     personalizerv1.AdminServiceClient
	cfg    LocalConfig

	state  atomic.Pointer[localState] // swapped whole: settings and model together
	served watch.Value[uint64]        // the model version in state, for WaitModel
	pool   sync.Pool                  // *localScratch

	mu     sync.RWMutex // Rank holds it to buffer; Close to close
	closed bool
	buf    chan []byte // encoded entries (see localScratch.entry)

	stopping    chan struct{} // closed first by Close: ends Rank's waits for room
	stopOnce    sync.Once
	closing     chan struct{} // closed by Close: flush what is buffered and stop
	cancelSend  context.CancelFunc
	cancelWatch context.CancelFunc
	flushed     chan struct{} // closed when the flusher has stopped
	watched     chan struct{} // closed when the watcher has stopped

	ranked, logged, pending, dropped, rejected, lost, retries, modelErrors atomic.Int64
}

// localState is what Local decides with: one configuration and one model
// version, read with one atomic load.
type localState struct {
	rs    *personalizerv1.RankSettings
	set   decide.Settings
	model *decide.Model // nil before the first model
	props *personalizerv1.ModelProperties
}

// NewLocal returns local inference over cc, a connection to the service
// (with the loop's API key, as for [New]), once it has the loop's settings
// and current model; ctx bounds that wait only. opts configure the
// [Client] that sends rewards. Call [Local.Close] to send the buffered
// records and stop.
func NewLocal(ctx context.Context, cc grpc.ClientConnInterface, cfg LocalConfig, opts ...Option) (*Local, error) {
	cfg.defaults()
	l := &Local{
		remote: New(cc, opts...), cc: cc, pc: personalizerv1.NewPersonalizerServiceClient(cc), ac: personalizerv1.NewAdminServiceClient(cc),
		cfg: cfg, buf: make(chan []byte, cfg.Buffer),
		stopping: make(chan struct{}), closing: make(chan struct{}), flushed: make(chan struct{}), watched: make(chan struct{}),
	}
	l.pool.New = func() any { return new(localScratch) }
	ready := make(chan struct{})
	var watchCtx, sendCtx context.Context
	watchCtx, l.cancelWatch = context.WithCancel(context.Background())
	sendCtx, l.cancelSend = context.WithCancel(context.Background())
	go func() { defer close(l.watched); l.watch(watchCtx, ready) }()
	go func() { defer close(l.flushed); l.flush(sendCtx) }()
	select {
	case <-ready:
		return l, nil
	case <-ctx.Done():
		l.Close(ctx)
		return nil, fmt.Errorf("local inference: waiting for the loop's settings: %w", ctx.Err())
	}
}

// Rank ranks req's actions in this process, as the service's Rank would,
// and buffers its rank record to be sent. A request without an event id
// gets a new one; req itself is not modified (its record is encoded
// before Rank returns). An invalid request fails with the error the
// service's Rank gives (InvalidArgument naming the field). When the
// buffer is full, Rank does what [LocalConfig.WhenFull] says.
func (l *Local) Rank(ctx context.Context, req *personalizerv1.RankRequest) (*personalizerv1.RankResponse, error) {
	st := l.state.Load()
	req = withEventID(req)
	sc := l.pool.Get().(*localScratch)
	defer func() {
		if sc.Keep() {
			l.pool.Put(sc)
		}
	}()
	size := req.SizeVT()
	d, err := sc.Decide(req, size, req.GetEventId(), &st.set, st.model)
	if err != nil {
		return nil, err // an *decide.InvalidError: InvalidArgument, as the service answers
	}
	e, err := sc.entry(req, size, d)
	if err != nil {
		return nil, err
	}
	resp := d.Response(req)
	if err := l.buffer(ctx, e); err != nil {
		return nil, err
	}
	l.ranked.Add(1)
	return resp, nil
}

// localScratch is a rank's working memory, pooled.
type localScratch struct {
	decide.Scratch
	ranking []uint32
	probs   []float32
	rest    personalizerv1.LoggedRank // an entry's fields but its request
}

// entry encodes the LogRanks entry of d, req's decision (req's encoded
// size is size): the bytes of a LogRanksRequest of this entry alone, so
// that a batch's bytes are its entries' one after the other ([logBatch]).
// The request is encoded once, in place.
func (sc *localScratch) entry(req *personalizerv1.RankRequest, size int, d *decide.Decision) ([]byte, error) {
	sc.ranking, sc.probs = sc.ranking[:0], sc.probs[:0]
	for _, ap := range d.Logged {
		sc.ranking, sc.probs = append(sc.ranking, uint32(ap.Action)), append(sc.probs, ap.Prob)
	}
	sc.rest = personalizerv1.LoggedRank{Ranking: sc.ranking, Probabilities: sc.probs, ModelVersion: d.ModelVersion, LearningMode: loop.ModeName(d.Mode)}
	defer func() { sc.rest = personalizerv1.LoggedRank{} }()
	rest := sc.rest.SizeVT()
	// LogRanksRequest.entries (1) holding LoggedRank.request (1), then
	// LoggedRank's other fields (2 to 5), in field order as proto encodes.
	inner := protowire.SizeTag(1) + protowire.SizeBytes(size) + rest
	b := make([]byte, 0, protowire.SizeTag(1)+protowire.SizeBytes(inner))
	b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.BytesType), uint64(inner))
	b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.BytesType), uint64(size))
	b = b[:len(b)+size+rest]
	if _, err := req.MarshalToSizedBufferVT(b[len(b)-rest-size : len(b)-rest]); err != nil {
		return nil, fmt.Errorf("local inference: encode the request: %w", err)
	}
	if _, err := sc.rest.MarshalToSizedBufferVT(b[len(b)-rest:]); err != nil {
		return nil, fmt.Errorf("local inference: encode the rank record: %w", err)
	}
	return b, nil
}

// logBatch is a LogRanksRequest already encoded, entry by entry (see
// [localScratch.entry]). It encodes itself for any gRPC proto codec:
// vtcodec's takes its SizeVT and MarshalToSizedBufferVT, protobuf's its
// Marshal (it is a legacy message to protobuf).
type logBatch struct{ entries [][]byte }

func (b *logBatch) SizeVT() int {
	n := 0
	for _, e := range b.entries {
		n += len(e)
	}
	return n
}

// MarshalToSizedBufferVT writes b at the end of dst, as vtprotobuf's
// generated code does.
func (b *logBatch) MarshalToSizedBufferVT(dst []byte) (int, error) {
	i := len(dst)
	for k := len(b.entries) - 1; k >= 0; k-- {
		i -= len(b.entries[k])
		copy(dst[i:], b.entries[k])
	}
	return len(dst) - i, nil
}

func (b *logBatch) Marshal() ([]byte, error) {
	dst := make([]byte, b.SizeVT())
	_, err := b.MarshalToSizedBufferVT(dst)
	return dst, err
}

func (b *logBatch) Reset() { b.entries = nil }
func (b *logBatch) String() string {
	return fmt.Sprintf("LogRanksRequest of %d encoded entries", len(b.entries))
}
func (*logBatch) ProtoMessage() {}

// buffer queues e, doing what cfg.WhenFull says when the buffer is full.
func (l *Local) buffer(ctx context.Context, e []byte) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.dropped.Add(1)
		return ErrClosed
	}
	select {
	case l.buf <- e:
		l.pending.Add(1)
		return nil
	default:
	}
	if l.cfg.WhenFull == Block {
		select {
		case l.buf <- e:
			l.pending.Add(1)
			return nil
		case <-ctx.Done():
			l.dropped.Add(1)
			return ctx.Err()
		case <-l.stopping: // Close waits for this Rank
			l.dropped.Add(1)
			return ErrClosed
		}
	}
	l.dropped.Add(1)
	if l.cfg.WhenFull == Fail {
		return status.Error(codes.ResourceExhausted, "local inference: the buffer of rank records is full")
	}
	return nil
}

// Reward reports value, in [-1, 1], for the event eventID, to the service.
func (l *Local) Reward(ctx context.Context, eventID string, value float32) error {
	return l.remote.Reward(ctx, eventID, value)
}

// Activate activates the deferred event eventID, at the service.
func (l *Local) Activate(ctx context.Context, eventID string) error {
	return l.remote.Activate(ctx, eventID)
}

// ModelVersion returns the model version Rank uses, "" before the first.
func (l *Local) ModelVersion() string {
	if m := l.state.Load().model; m != nil {
		return m.Version
	}
	return ""
}

// Stats returns the counts so far.
func (l *Local) Stats() LocalStats {
	return LocalStats{Ranked: l.ranked.Load(), Logged: l.logged.Load(), Pending: l.pending.Load(), Dropped: l.dropped.Load(),
		Rejected: l.rejected.Load(), Lost: l.lost.Load(), Retries: l.retries.Load(), ModelErrors: l.modelErrors.Load()}
}

// Close stops ranking (Rank then fails with [ErrClosed]), sends the
// buffered records and stops following the service. If ctx ends first,
// the records not yet sent are counted Lost and Close says how many.
func (l *Local) Close(ctx context.Context) error {
	l.stopOnce.Do(func() { close(l.stopping) })
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if !already {
		close(l.closing)
	}
	stop := context.AfterFunc(ctx, l.cancelSend)
	<-l.flushed
	stop()
	l.cancelSend()
	l.cancelWatch()
	<-l.watched
	if n := l.lost.Load(); n > 0 {
		return fmt.Errorf("local inference: %d rank records were not sent", n)
	}
	return nil
}

// watch follows the loop's settings and model until ctx ends, closing
// ready once Rank can decide.
func (l *Local) watch(ctx context.Context, ready chan struct{}) {
	wait := l.cfg.Backoff
	for {
		err := l.follow(ctx, ready, func() { wait = l.cfg.Backoff })
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errModel) {
			l.modelErrors.Add(1)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, l.cfg.MaxBackoff)
	}
}

var errModel = errors.New("model version refused")

// follow applies every settings message of one WatchRankSettings call.
func (l *Local) follow(ctx context.Context, ready chan struct{}, ok func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := l.pc.WatchRankSettings(ctx, &personalizerv1.WatchRankSettingsRequest{})
	if err != nil {
		return err
	}
	for {
		w, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := l.apply(ctx, w.GetSettings()); err != nil {
			return err
		}
		ok()
		select {
		case <-ready:
		default:
			close(ready)
		}
	}
}

// apply makes rs the settings Rank uses, with the model version it names,
// fetched first if it is not the one in use: both swap at once.
func (l *Local) apply(ctx context.Context, rs *personalizerv1.RankSettings) error {
	prev := l.state.Load()
	next := &localState{rs: rs}
	if prev != nil {
		next.model, next.props = prev.model, prev.props
	}
	pol, err := bandit.ParsePolicy(rs.GetPolicy())
	if prev != nil && rs.GetPolicy() == prev.rs.GetPolicy() {
		pol, err = prev.set.Policy, nil
	}
	if err != nil {
		return fmt.Errorf("the loop's policy: %w", err)
	}
	lim := rs.GetLimits()
	next.set = decide.Settings{Mode: (&loop.Service{LearningMode: rs.GetLearningMode()}).Mode(), Epsilon: rs.GetEpsilon(), Policy: pol,
		Limits: decide.Limits{MaxActions: int(lim.GetMaxActions()), MaxIDLength: int(lim.GetMaxIdLength()), MaxFeatureBytes: int(lim.GetMaxFeatureBytes()),
			MaxFeatures: int(lim.GetMaxFeatures()), MaxInteractionFeatures: int(lim.GetMaxInteractionFeatures())},
		MaxRecordBytes: int(rs.GetMaxRecordBytes()), Explain: rs.GetInferenceExplanation()}
	switch want := rs.GetModel(); {
	case want == nil:
		next.model, next.props = nil, nil
	case next.props.GetVersion() != want.GetVersion() || string(next.props.GetSha256()) != string(want.GetSha256()):
		props, m, err := l.fetchModel(ctx)
		if err != nil {
			return err
		}
		next.model, next.props = m, props
	}
	l.state.Store(next)
	l.served.Update(func(v *uint64) { *v = next.props.GetVersion() })
	return nil
}

// WaitModel blocks until Rank uses model version or a later one, or ctx
// ends.
func (l *Local) WaitModel(ctx context.Context, version uint64) error {
	return l.served.Wait(ctx, func(v uint64) bool { return v >= version })
}

// fetchModel returns the model version the service's Rank uses, checked
// against its SHA-256.
func (l *Local) fetchModel(ctx context.Context) (*personalizerv1.ModelProperties, *decide.Model, error) {
	stream, err := l.ac.ExportModel(ctx, &personalizerv1.ExportModelRequest{})
	if err != nil {
		return nil, nil, err
	}
	var props *personalizerv1.ModelProperties
	var data []byte
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		if props == nil {
			props = r.GetProperties()
		}
		data = append(data, r.GetChunk()...)
	}
	m, err := decide.LoadModel(data, props.GetSha256(), props.GetVersion())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errModel, err)
	}
	return props, m, nil
}

// flush sends the buffered records in batches until Close, then what is
// left; ctx ends when Close gives up.
func (l *Local) flush(ctx context.Context) {
	var batch [][]byte
	size := 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	send := func() {
		if len(batch) > 0 {
			l.send(ctx, batch)
			batch, size = nil, 0
		}
	}
	add := func(e []byte) {
		n := len(e)
		if len(batch) > 0 && size+n > l.cfg.MaxBatchBytes {
			send()
		}
		if len(batch) == 0 {
			timer.Reset(l.cfg.FlushInterval)
		}
		batch, size = append(batch, e), size+n
		if len(batch) >= l.cfg.MaxBatch {
			send()
		}
	}
	for {
		select {
		case e := <-l.buf:
			add(e)
		case <-timer.C:
			send()
		case <-l.closing:
			// Rank buffers nothing more: Close set closed under mu.
			for {
				select {
				case e := <-l.buf:
					add(e)
				default:
					send()
					return
				}
			}
		}
	}
}

// entryField finds the entry a LogRanks InvalidArgument names.
var entryField = regexp.MustCompile(`^entries\[(\d+)\]`)

// send makes LogRanks calls until batch is logged, retrying failures with
// backoff (a batch sent twice is learned once) until ctx ends. An invalid
// entry is dropped, counted Rejected, and the entries after it are sent
// again; the service logged those before it.
func (l *Local) send(ctx context.Context, batch [][]byte) {
	wait := l.cfg.Backoff
	for len(batch) > 0 {
		err := l.cc.Invoke(ctx, personalizerv1.PersonalizerService_LogRanks_FullMethodName, &logBatch{batch}, new(personalizerv1.LogRanksResponse), grpc.StaticMethod())
		if err == nil {
			l.done(&l.logged, len(batch))
			return
		}
		if status.Code(err) == codes.InvalidArgument {
			i := invalidEntry(err, len(batch))
			if i < 0 {
				l.done(&l.rejected, len(batch))
				return
			}
			l.done(&l.logged, i)
			l.done(&l.rejected, 1)
			batch = batch[i+1:]
			continue
		}
		select {
		case <-ctx.Done():
			l.done(&l.lost, len(batch))
			return
		case <-time.After(wait):
		}
		l.retries.Add(1)
		wait = min(2*wait, l.cfg.MaxBackoff)
	}
}

// done moves n records from pending to c.
func (l *Local) done(c *atomic.Int64, n int) {
	c.Add(int64(n))
	l.pending.Add(-int64(n))
}

// invalidEntry returns the index of the entry an InvalidArgument from
// LogRanks names, -1 if it names none of n.
func invalidEntry(err error, n int) int {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			if m := entryField.FindStringSubmatch(v.GetField()); m != nil {
				if i, err := strconv.Atoi(m[1]); err == nil && i < n {
					return i
				}
			}
		}
	}
	return -1
}
