package app

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/internal/sim"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// TestDashboardMultiProcess checks the dashboard of a server in its own
// process, its learner in another: the reward over time it shows is the
// learner's, bucket for bucket, and it lists both servers of the loop
// with the version each serves.
func TestDashboardMultiProcess(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	top := startTopology(ctx, t)
	learnerAddr := top.learnerAddr
	models := eventsv1.NewModelServiceClient(dial(t, learnerAddr))
	var grpcAddrs, httpAddrs []string
	for range 2 {
		_, g, h := top.server()
		grpcAddrs, httpAddrs = append(grpcAddrs, g), append(httpAddrs, h)
	}

	// At 120 events a second the ranks span 6.7 s, more than a bucket
	// (liveBucket, 5 s): the series has at least two buckets however fast
	// the machine is, and ?since= can leave one out.
	const events = 800
	client := personalizerv1.NewPersonalizerServiceClient(dial(t, grpcAddrs[0]))
	if _, err := sim.Run(ctx, client, sim.Config{Events: events, Seed: 7, Concurrency: 4, Rate: 120}, testWriter{t}); err != nil {
		t.Fatal(err)
	}
	latest := waitExamples(ctx, t, models, events) // every event learned: the buckets are final
	dashboard := func(addr, query string) dashboardStats {
		t.Helper()
		code, body := restCall(t, "GET", "http://"+addr+"/personalizer/v1.0/dashboard"+query, nil)
		var s dashboardStats
		if err := json.Unmarshal(body, &s); code != 200 || err != nil {
			t.Fatalf("GET /dashboard%s: %d %s", query, code, body)
		}
		return s
	}

	// The reward over time: the learner's buckets, all and since one.
	learned, err := models.GetLiveRewards(ctx, &eventsv1.GetLiveRewardsRequest{Loop: "default"})
	if err != nil {
		t.Fatal(err)
	}
	buckets := learned.GetBuckets()
	var total int64
	for _, b := range buckets {
		total += b.GetEvents()
	}
	if total != events || len(buckets) < 2 {
		t.Fatalf("the learner's buckets hold %d events in %d buckets, want %d in at least 2", total, len(buckets), events)
	}
	sameBuckets := func(what string, got *rewardSeries, want []*eventsv1.LiveRewardBucket) {
		t.Helper()
		if got == nil || got.BucketSeconds != liveBucket.Seconds() || len(got.Points) != len(want) {
			t.Fatalf("%s: rewards %+v, want %d buckets of %v", what, got, len(want), liveBucket)
		}
		estimate := func(e *eventsv1.LiveEstimate) evaluate.LiveEstimate {
			out := evaluate.LiveEstimate{Value: e.GetValue()}
			if e.GetInterval() != nil {
				out.Interval = &evaluate.Interval{Lower: e.GetInterval().GetLower(), Upper: e.GetInterval().GetUpper()}
			}
			return out
		}
		for i, p := range got.Points {
			b := want[i]
			if !p.Start.Equal(b.GetStart().AsTime()) || p.Events != b.GetEvents() || p.Reward != b.GetReward() || p.Explored != b.GetExplored() ||
				!sameEstimate(p.Baseline, estimate(b.GetBaseline())) || !sameEstimate(p.Random, estimate(b.GetRandom())) {
				t.Errorf("%s: bucket %d is %+v, the learner's %v", what, i, p, b)
			}
		}
	}
	s := dashboard(httpAddrs[0], "")
	if s.RewardsError != "" || s.Learner != nil {
		t.Errorf("rewards error %q, learner %+v; want neither", s.RewardsError, s.Learner)
	}
	sameBuckets("all", s.Rewards, buckets)
	since := buckets[1].GetStart().AsTime()
	sameBuckets("since", dashboard(httpAddrs[0], "?since="+since.Format(time.RFC3339)).Rewards, buckets[1:])

	// The servers: each lists both, serving the latest version, until
	// they do (each pulls it on its own).
	created := latest.GetCreated().AsTime()
	for i, addr := range httpAddrs {
		want := []servingServer{{Server: grpcAddrs[0], Version: latest.GetVersion(), Created: &created},
			{Server: grpcAddrs[1], Version: latest.GetVersion(), Created: &created}}
		slices.SortFunc(want, func(a, b servingServer) int { return strings.Compare(a.Server, b.Server) })
		for j := range want {
			want[j].Self = want[j].Server == grpcAddrs[i]
		}
		wantJSON, _ := json.Marshal(want)
		tick := time.NewTicker(50 * time.Millisecond)
		for {
			got, _ := json.Marshal(dashboard(addr, "").Servers)
			if string(got) == string(wantJSON) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("server %d lists servers %s, want %s", i, got, wantJSON)
			case <-tick.C:
			}
		}
		tick.Stop()
	}
}

func sameEstimate(a, b evaluate.LiveEstimate) bool {
	return a.Value == b.Value && (a.Interval == nil) == (b.Interval == nil) && (a.Interval == nil || *a.Interval == *b.Interval)
}
