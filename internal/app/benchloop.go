package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/internal/watch"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// The seed workload (bench --workload seed): Rank requests of 500
// features, 10 actions of 45 features and 50 context features, 7.4 KB of
// protobuf and about 11 KB per event in personalizer.events (the rank
// record with its DSJson context, and the reward): the event size of
// Personalizer's sizing notes, 20 MB/s being about 2,000 events/s of
// 10 KB.
const (
	seedActions  = 10
	seedFeatures = 45
	seedContext  = 50
)

// personalizerCeiling is Personalizer's training throughput per loop, in
// MB/s of events: beyond it "queues fill faster than they are cleaned up".
const personalizerCeiling = 20

// loopBench is what the calls that follow events through the loop
// (pipeline, reward-to-model) use besides the server: the broker, to read
// the topics, and the model service, to see what each version learned.
type loopBench struct {
	client  personalizerv1.PersonalizerServiceClient
	admin   personalizerv1.AdminServiceClient
	models  eventsv1.ModelServiceClient
	brokers []string
	loop    string
	req     *personalizerv1.RankRequest
}

// rankReward ranks b.req and rewards the event, and returns the event id
// and when the Reward call was made.
func (b *loopBench) rankReward(ctx context.Context) (string, time.Time, error) {
	resp, err := b.client.Rank(ctx, b.req)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("rank: %w", err)
	}
	at := time.Now()
	if _, err := b.client.Reward(ctx, &personalizerv1.RewardRequest{EventId: resp.GetEventId(), Value: 1}); err != nil {
		return "", time.Time{}, fmt.Errorf("reward: %w", err)
	}
	return resp.GetEventId(), at, nil
}

// watchVersions follows the loop's model versions at the model service
// into v, the latest, until ctx ends; the first comes at once if the loop
// has one. all, when set, gets every version's metadata.
func (b *loopBench) watchVersions(ctx context.Context, v *watch.Value[*eventsv1.ModelInfo], all func(*eventsv1.ModelInfo)) (<-chan error, error) {
	stream, err := b.models.WatchModel(ctx, &eventsv1.WatchModelRequest{Loop: b.loop})
	if err != nil {
		return nil, fmt.Errorf("watch model versions: %w", err)
	}
	if _, err := stream.Header(); err != nil {
		return nil, fmt.Errorf("watch model versions: %w", err)
	}
	done := make(chan error, 1)
	go func() { // ends with ctx, which ends the stream
		for {
			w, err := stream.Recv()
			if err != nil {
				done <- err
				return
			}
			if all != nil {
				all(w.GetInfo())
			}
			v.Update(func(p **eventsv1.ModelInfo) { *p = w.GetInfo() })
		}
	}()
	return done, nil
}

// waitVersion waits until cond holds for the latest version v that
// watchVersions follows, reporting the watch's end (done) as an error, for
// at most timeout.
func waitVersion(ctx context.Context, v *watch.Value[*eventsv1.ModelInfo], done <-chan error, timeout time.Duration, cond func(*eventsv1.ModelInfo) bool) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() { // ends with ctx
		select {
		case err := <-done:
			cancel(fmt.Errorf("watch model versions: %w", err))
		case <-ctx.Done():
		}
	}()
	timer := time.AfterFunc(timeout, func() { cancel(fmt.Errorf("not learned within %v (--learn-timeout)", timeout)) })
	defer timer.Stop()
	if err := v.Wait(ctx, cond); err != nil {
		return context.Cause(ctx)
	}
	return nil
}

// watchExamples follows the learner's versions until ctx ends, and
// returns them with the examples learned so far.
func (b *loopBench) watchExamples(ctx context.Context) (*watch.Value[*eventsv1.ModelInfo], <-chan error, uint64, error) {
	latest := new(watch.Value[*eventsv1.ModelInfo])
	done, err := b.watchVersions(ctx, latest, nil)
	if err != nil {
		return nil, nil, 0, err
	}
	return latest, done, latest.Get().GetExamples(), nil
}

// warmUp sends one event and waits until the learner has published a
// version that learned it: a loop just started may not have its joiner's
// partitions assigned yet, and its first events would wait for that.
func (b *loopBench) warmUp(ctx context.Context, stdout io.Writer, timeout time.Duration) error {
	start := time.Now()
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	latest, done, base, err := b.watchExamples(watchCtx)
	if err != nil {
		return err
	}
	if _, _, err := b.rankReward(ctx); err != nil {
		return err
	}
	if err := waitVersion(ctx, latest, done, timeout, func(i *eventsv1.ModelInfo) bool { return i.GetExamples() > base }); err != nil {
		return fmt.Errorf("warming up: %w", err)
	}
	fmt.Fprintf(stdout, "warmed up: a first event learned after %.1fs\n", time.Since(start).Seconds())
	return nil
}

// runPipeline sends Rank and Reward as fast as it can (or at qps) for d,
// then waits until the learner has learned every event, and prints the
// sustained rate, the input of joiner and learner in MB/s, and each
// role's CPU per event (pids: role name to process id, local processes).
// The loop must be idle when it starts: events learned meanwhile count.
func (b *loopBench) runPipeline(ctx context.Context, stdout io.Writer, concurrency int, d time.Duration, qps float64, pids []rolePID, timeout time.Duration) error {
	eventsStart, err := kafkalog.EndOffsets(ctx, b.brokers, eventlog.EventsTopic)
	if err != nil {
		return err
	}
	joinedStart, err := kafkalog.EndOffsets(ctx, b.brokers, eventlog.JoinedTopic)
	if err != nil {
		return err
	}
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	latest, done, base, err := b.watchExamples(watchCtx)
	if err != nil {
		return err
	}
	cpu0, err := rolesCPU(pids)
	if err != nil {
		return err
	}
	start := time.Now()
	r, err := measure(ctx, func(ctx context.Context) error {
		_, _, err := b.rankReward(ctx)
		return err
	}, concurrency, d, qps)
	if err != nil {
		return err
	}
	events := uint64(len(r.lat))
	fmt.Fprintf(stdout, "sent  %v (Rank and Reward)\n", r)
	if err := waitVersion(ctx, latest, done, timeout, func(i *eventsv1.ModelInfo) bool { return i.GetExamples() >= base+events }); err != nil {
		return fmt.Errorf("waiting for the learner to learn %d events: %w", events, err)
	}
	elapsed := time.Since(start)
	cpu1, err := rolesCPU(pids)
	if err != nil {
		return err
	}
	stop()
	rate := float64(events) / elapsed.Seconds()
	fmt.Fprintf(stdout, "learned %d events in %.1fs: %.0f events/s\n", events, elapsed.Seconds(), rate)

	// The topics' bytes, read once everything is learned, outside the
	// time measured.
	in, err := topicBytes(ctx, b.brokers, eventlog.EventsTopic, eventsStart)
	if err != nil {
		return err
	}
	out, err := topicBytes(ctx, b.brokers, eventlog.JoinedTopic, joinedStart)
	if err != nil {
		return err
	}
	mb := func(bytes int64) float64 { return float64(bytes) / elapsed.Seconds() / 1e6 }
	fmt.Fprintf(stdout, "joiner  reads %d records (%.0f B/event): %.1f MB/s; Personalizer's ceiling %d MB/s per loop\n",
		in.records, float64(in.bytes)/float64(events), mb(in.bytes), personalizerCeiling)
	fmt.Fprintf(stdout, "learner reads %d records (%.0f B/event): %.1f MB/s\n", out.records, float64(out.bytes)/float64(events), mb(out.bytes))
	if len(pids) > 0 {
		fmt.Fprintf(stdout, "%-8s %8s %16s %14s %12s\n", "role", "cpu-s", "events/s/core", "cores/1000ev/s", "peak RSS MB")
	}
	for i, p := range pids {
		cpu := (cpu1[i] - cpu0[i]).Seconds()
		perCore := "-"
		if cpu > 0 {
			perCore = strconv.FormatFloat(float64(events)/cpu, 'f', 0, 64)
		}
		fmt.Fprintf(stdout, "%-8s %8.1f %16s %14.2f %12.0f\n", p.role, cpu, perCore, cpu/float64(events)*1000, float64(peakRSS(p.pid))/1e6)
	}
	return nil
}

// runRewardToModel sends Rank and Reward for d (as fast as it can, or at
// qps), and measures for every event the time from its Reward call to the
// first model version the server serves that learned it: the server's
// version (polled every pollEvery) whose joined_offsets pass the offset
// where the joiner wrote the event in personalizer.joined.
func (b *loopBench) runRewardToModel(ctx context.Context, stdout io.Writer, concurrency int, d time.Duration, qps float64, wait time.Duration) error {
	const pollEvery = 5 * time.Millisecond
	joinedStart, err := kafkalog.EndOffsets(ctx, b.brokers, eventlog.JoinedTopic)
	if err != nil {
		return err
	}
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()

	var mu sync.Mutex
	type announced struct {
		info *eventsv1.ModelInfo
		at   time.Time // when the learner's announcement reached bench
	}
	infos := map[uint64]announced{}
	type servedAt struct {
		version uint64
		at      time.Time
	}
	var served []servedAt // in the order the server took them
	type position struct {
		partition int
		offset    int64
		at        time.Time // when bench read the line
	}
	positions := map[string]position{} // joined lines of the loop since the start, by event id
	rewards := map[string]time.Time{}  // when each event's Reward call was made

	var latest watch.Value[*eventsv1.ModelInfo]
	watchDone, err := b.watchVersions(watchCtx, &latest, func(i *eventsv1.ModelInfo) {
		mu.Lock()
		infos[i.GetVersion()] = announced{i, time.Now()}
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	reader, err := kafkalog.NewTopicReader(ctx, b.brokers, eventlog.JoinedTopic, joinedStart)
	if err != nil {
		return err
	}
	defer reader.Close()
	var bg sync.WaitGroup
	defer bg.Wait() // after stop
	defer stop()
	errs := make(chan error, 2)
	prefix := b.loop + "/"
	bg.Go(func() {
		for {
			rec, err := reader.Fetch(watchCtx)
			if err != nil {
				if watchCtx.Err() == nil {
					errs <- fmt.Errorf("read %s: %w", eventlog.JoinedTopic, err)
				}
				return
			}
			if id, ok := strings.CutPrefix(string(rec.Key), prefix); ok {
				mu.Lock()
				positions[id] = position{rec.Partition, rec.Offset, time.Now()}
				mu.Unlock()
			}
		}
	})
	bg.Go(func() {
		tick := time.NewTicker(pollEvery)
		defer tick.Stop()
		var last uint64
		for {
			p, err := b.admin.GetModelProperties(watchCtx, &personalizerv1.GetModelPropertiesRequest{Loop: b.loop})
			now := time.Now()
			// NotFound: no model yet.
			if err != nil && watchCtx.Err() == nil && status.Code(err) != codes.NotFound {
				errs <- fmt.Errorf("served model: %w", err)
				return
			}
			if v := p.GetProperties().GetVersion(); v > last {
				last = v
				mu.Lock()
				served = append(served, servedAt{v, now})
				mu.Unlock()
			}
			select {
			case <-watchCtx.Done():
				return
			case <-tick.C:
			}
		}
	})

	r, err := measure(ctx, func(ctx context.Context) error {
		id, at, err := b.rankReward(ctx)
		if err == nil {
			mu.Lock()
			rewards[id] = at
			mu.Unlock()
		}
		return err
	}, concurrency, d, qps)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sent  %v (Rank and Reward)\n", r)

	// covered returns, for every event a served version covers, the
	// time from its Reward call to the first such version, and its
	// stages: until bench read the joined line, then until the learner
	// announced that version, then until the server served it; and how
	// many events are not decided yet (not covered, or a served version
	// before the one found is not announced to bench yet).
	covered := func() (lat [4][]time.Duration, missing int) {
		mu.Lock()
		defer mu.Unlock()
		for id, at := range rewards {
			pos, ok := positions[id]
			if !ok {
				missing++
				continue
			}
			found := false
			for _, s := range served {
				a, ok := infos[s.version]
				if !ok {
					break
				}
				if a.info.GetJoinedOffsets()[int32(pos.partition)] > pos.offset {
					for i, d := range []time.Duration{s.at.Sub(at), pos.at.Sub(at), a.at.Sub(pos.at), s.at.Sub(a.at)} {
						lat[i] = append(lat[i], d)
					}
					found = true
					break
				}
			}
			if !found {
				missing++
			}
		}
		return lat, missing
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	for {
		lat, missing := covered()
		if missing == 0 {
			for _, l := range lat {
				slices.Sort(l)
			}
			q := func(i int, p float64) time.Duration {
				return lat[i][min(len(lat[i])-1, int(p*float64(len(lat[i]))))].Round(time.Millisecond)
			}
			mu.Lock()
			versions := len(served)
			mu.Unlock()
			fmt.Fprintf(stdout, "reward-to-model  events %d  p50 %v  p90 %v  p99 %v  max %v  (%d versions served)\n",
				len(lat[0]), q(0, 0.5), q(0, 0.9), q(0, 0.99), q(0, 1), versions)
			fmt.Fprintf(stdout, "stages p50/p99  reward to joined line read %v/%v  to version announced %v/%v  to version served %v/%v\n",
				q(1, 0.5), q(1, 0.99), q(2, 0.5), q(2, 0.99), q(3, 0.5), q(3, 0.99))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case err := <-watchDone:
			return fmt.Errorf("watch model versions: %w", err)
		case <-deadline.C:
			return fmt.Errorf("%d of %d events not in a served model version %v after the last Reward (--learn-timeout)", missing, len(rewards), wait)
		case <-check.C:
		}
	}
}

// rolePID is a process bench reads the CPU time of, by role.
type rolePID struct {
	role string
	pid  int
}

// parsePIDs parses --pids: role=pid pairs separated by commas.
func parsePIDs(s string) ([]rolePID, error) {
	var out []rolePID
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		role, pid, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(pid)
		if !ok || role == "" || err != nil || n <= 0 {
			return nil, fmt.Errorf("--pids: %q: want role=pid, as server=123", f)
		}
		if _, err := processCPU(n); err != nil {
			return nil, fmt.Errorf("--pids: %s: %w", role, err)
		}
		out = append(out, rolePID{role, n})
	}
	return out, nil
}

// rolesCPU returns the CPU time each process has used.
func rolesCPU(pids []rolePID) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, p := range pids {
		var err error
		if out[i], err = processCPU(p.pid); err != nil {
			return nil, fmt.Errorf("%s: %w", p.role, err)
		}
	}
	return out, nil
}

// peakRSS returns a process's peak resident memory (VmHWM in
// /proc/pid/status), 0 if it cannot be read.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// topicSize is how many records a topic range holds and their bytes
// (keys, values and headers).
type topicSize struct{ records, bytes int64 }

// topicBytes reads topic from start to its current end and sums it.
func topicBytes(ctx context.Context, brokers []string, topic string, start map[int]int64) (topicSize, error) {
	end, err := kafkalog.EndOffsets(ctx, brokers, topic)
	if err != nil {
		return topicSize{}, err
	}
	left := int64(0)
	for p, e := range end {
		left += e - start[p]
	}
	var s topicSize
	if left == 0 {
		return s, nil
	}
	r, err := kafkalog.NewTopicReader(ctx, brokers, topic, start)
	if err != nil {
		return s, err
	}
	defer r.Close()
	for left > 0 {
		rec, err := r.Fetch(ctx)
		if err != nil {
			return s, fmt.Errorf("read %s: %w", topic, err)
		}
		if rec.Offset >= end[rec.Partition] {
			continue
		}
		left--
		s.records++
		s.bytes += int64(rec.Size())
	}
	return s, nil
}
