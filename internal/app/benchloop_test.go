package app

import (
	"context"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestBenchLoop runs bench's calls that follow events through the loop on
// loops it spawns: pipeline on dev (every event sent is learned, the
// joiner reads its rank and reward, the learner one line each, and the
// dev process's CPU is reported), and reward-to-model on the
// multi-process topology (every event sent is found in a served model
// version), and dashboard there too (the spawned server's CPU with the
// page closed and open, the page's requests made; which requests,
// TestPageClient's). That a version covers exactly what it learned is
// TestVersionJoinedOffsets's (learner).
func TestBenchLoop(t *testing.T) {
	spawnEnv = []string{asCommand + "=1"}
	const sent = `sent  requests ([1-9][0-9]*)  QPS [0-9]+  latency p50 \S+  p90 \S+  p99 \S+  max \S+ \(Rank and Reward\)`
	for _, tc := range []struct {
		name string
		args []string
		want []string // the output's lines, as regular expressions; the first group of the second is the events sent
	}{
		{
			"pipeline",
			[]string{"--spawn", "dev", "--call", "pipeline", "--workload", "seed", "--concurrency", "2", "--qps", "100"},
			[]string{
				`spawned dev: dev [0-9]+; reward wait 200ms, join slack 250ms, tick interval 500ms, model export frequency 200ms`,
				`pipeline: 7430 B request \(10 actions x 45 features, 50 context features\), 2 in flight, 500ms, at 100 QPS`,
				`warmed up: a first event learned after [0-9.]+s`,
				sent,
				`learned (N) events in [0-9.]+s: [0-9]+ events/s`,
				`joiner  reads ([0-9]+) records \([0-9]+ B/event\): [0-9.]+ MB/s; Personalizer's ceiling 20 MB/s per loop`,
				`learner reads (N) records \([0-9]+ B/event\): [0-9.]+ MB/s`,
				`role +cpu-s +events/s/core +cores/1000ev/s +peak RSS MB`,
				`dev +[0-9.]+ +([0-9]+|-) +[0-9.]+ +[0-9]+`,
			},
		},
		{
			"reward-to-model",
			[]string{"--spawn", "multi", "--call", "reward-to-model", "--concurrency", "2", "--qps", "40", "--actions", "3"},
			[]string{
				`spawned multi: broker [0-9]+, learner [0-9]+, joiner [0-9]+, server [0-9]+; reward wait 200ms, join slack 250ms, tick interval 500ms, model export frequency 200ms`,
				`reward-to-model: [0-9]+ B request \(3 actions x 15 features, 15 context features\), 2 in flight, 500ms, at 40 QPS`,
				`warmed up: a first event learned after [0-9.]+s`,
				sent,
				`reward-to-model  events (N)  p50 \S+  p90 \S+  p99 \S+  max \S+  \([1-9][0-9]* versions served\)`,
				`stages p50/p99  reward to joined line read \S+/\S+  to version announced \S+/\S+  to version served \S+/\S+`,
			},
		},
		{
			"dashboard",
			[]string{"--spawn", "multi", "--call", "dashboard", "--concurrency", "2", "--qps", "100", "--pairs", "1"},
			[]string{
				`spawned multi: broker [0-9]+, learner [0-9]+, joiner [0-9]+, server ([0-9]+); reward wait 200ms, join slack 250ms, tick interval 500ms, model export frequency 200ms`,
				`dashboard cost: server pid (N), Rank at 100 QPS, 2 in flight, 1 pairs of 500ms runs \(page closed, then open\), after a 500ms warm-up`,
				`1 closed +load \S+  server [0-9.]+ cores, [0-9.]+ µs/Rank  requests [1-9][0-9]*  QPS [0-9]+  latency p50 \S+  p90 \S+  p99 \S+  max \S+`,
				`1 open +load \S+  server [0-9.]+ cores, [0-9.]+ µs/Rank  requests [1-9][0-9]*  QPS [0-9]+  latency p50 \S+  p90 \S+  p99 \S+  max \S+  page: [1-9][0-9]* requests`,
				`page open - closed, share of the closed run's server CPU per Rank: min \S+%  median \S+%  max \S+%`,
				`page alone   load \S+  server idle [0-9.]+ cores; [1-9][0-9]* page requests back to back in 500ms: -?[0-9]+ µs of server CPU each \(less idle\)`,
				`page's cost at its rate in the open runs, [0-9.]+ requests/s: -?[0-9.]+ ms of server CPU per second, -?\S+% of the closed runs' median`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut strings.Builder
			args := append([]string{"bench", "--duration", "500ms", "--reward-wait", "200ms", "--model-export-frequency", "200ms"}, tc.args...)
			if err := run(context.Background(), args, &out, &errOut, noEnv); err != nil {
				t.Fatalf("%v\n%s\n%s", err, out.String(), errOut.String())
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("output\n%s\nwant %d lines", out.String(), len(tc.want))
			}
			n := ""
			for i, re := range tc.want {
				m := regexp.MustCompile("^" + strings.ReplaceAll(re, "(N)", "("+n+")") + "$").FindStringSubmatch(lines[i])
				if m == nil {
					t.Errorf("line %q does not match %q", lines[i], re)
					continue
				}
				if re == sent || tc.name == "dashboard" && i == 0 {
					n = m[1] // the events sent; the server's pid
				}
				if strings.HasPrefix(re, "joiner") {
					// Each event's rank and reward, and the joiner's ticks.
					events, _ := strconv.Atoi(n)
					if recs, _ := strconv.Atoi(m[1]); recs < 2*events {
						t.Errorf("joiner read %d records of %d events", recs, events)
					}
				}
			}
		})
	}
}

// TestBenchLoopErrors checks the flags of the loop calls.
func TestBenchLoopErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--workload", "huge"}, `--workload "huge"`},
		{[]string{"--pids", "server"}, `--pids: "server": want role=pid`},
		{[]string{"--pids", "server=0"}, `--pids: "server=0": want role=pid`},
		{[]string{"--pids", "server=2147483647"}, `--pids: server:`},
		{[]string{"--spawn", "cluster"}, `--spawn "cluster": want dev or multi`},
	} {
		err := run(context.Background(), append([]string{"bench", "--duration", "100ms"}, tc.args...), io.Discard, io.Discard, noEnv)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one about %s", tc.args, err, tc.want)
		}
	}
}
