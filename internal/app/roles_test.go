package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
	"github.com/open-personalizer/personalizer/joiner"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func TestJoinerCommandFlags(t *testing.T) {
	t.Parallel()
	parse := func(args []string, env map[string]string) (joinerConfig, error) {
		var cfg joinerConfig
		fs := flag.NewFlagSet("joiner", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg.registerFlags(fs)
		err := parseFlags(fs, args, func(k string) string { return env[k] })
		if err == nil {
			err = cfg.validate()
		}
		return cfg, err
	}
	cfg, err := parse([]string{"--reward-wait", "4h", "--default-reward=-0.5"}, map[string]string{
		"PERSONALIZER_KAFKA_BROKERS":      "a:9092, b:9092",
		"PERSONALIZER_REWARD_AGGREGATION": "Median",
		"PERSONALIZER_LEARNING_MODE":      "apprentice",
		"PERSONALIZER_REWARD_WAIT":        "1m", // the command line wins
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.brokers(); len(got) != 2 || got[0] != "a:9092" || got[1] != "b:9092" {
		t.Errorf("brokers %q", got)
	}
	r := cfg.Joiner.Rules
	if r.RewardWait != 4*time.Hour || r.DefaultReward != -0.5 || r.Aggregation != joiner.Median ||
		r.LearningMode != eventsv1.LearningMode_LEARNING_MODE_APPRENTICE || r.Backward != 2*time.Minute || cfg.Kafka.Compression != "none" || cfg.Kafka.MaxRecordBytes != eventlog.DefaultMaxRecordBytes || r.MaxSkew != time.Minute {
		t.Errorf("config %+v", cfg)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--kafka-brokers", " , "}, "--kafka-brokers"},
		{[]string{"--group", ""}, "--group"},
		{[]string{"--reward-aggregation", "mean"}, "aggregation"},
		{[]string{"--learning-mode", "Sometimes"}, "learning mode"},
		{[]string{"--kafka-compression", "brotli"}, "compression"},
		{[]string{"--join-slack", "-1s"}, "slack"},
	}
	for _, tt := range tests {
		if _, err := parse(tt.args, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want it to mention %q", tt.args, err, tt.want)
		}
	}
}

// TestBrokerCommand runs `personalizer broker` and talks Kafka to it.
func TestBrokerCommand(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	out := &announce{ready: ready}
	dir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"broker", "--broker-addr", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn"}, out, io.Discard, noEnv)
	}()
	var addr string
	select {
	case line := <-ready:
		_, a, _ := strings.Cut(line, "Kafka ")
		addr, _, _ = strings.Cut(a, ",")
	case err := <-done:
		t.Fatalf("broker exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the broker announced nothing")
	}
	qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
	defer qcancel()
	for _, topic := range []string{eventlog.EventsTopic, eventlog.JoinedTopic, eventlog.AuditTopic, eventlog.DeadLetterTopic} {
		if n, err := kafkalog.PartitionCount(qctx, []string{addr}, topic); err != nil || n != kafkalog.DefaultEventsPartitions {
			t.Errorf("%s: %d partitions, %v", topic, n, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("broker: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "broker", "*")); len(m) == 0 {
		t.Error("no data in <data-dir>/broker")
	}
}

// announce hands the first line written to it to ready (buffered). Only
// the writing goroutine touches its fields.
type announce struct {
	buf   []byte
	sent  bool
	ready chan<- string
}

func (a *announce) Write(p []byte) (int, error) {
	a.buf = append(a.buf, p...)
	if line, _, ok := strings.Cut(string(a.buf), "\n"); ok && !a.sent {
		a.ready <- line
		a.sent = true
	}
	return len(p), nil
}

// TestDevLearningModes runs dev in each learning mode: Rank answers with
// the model's choice online and with the baseline otherwise, and the
// joined lines carry the mode's label.
func TestDevLearningModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode      string
		baseline  bool // Rank always answers with the first action
		skipLearn bool
	}{
		{"Online", false, false},
		{"Apprentice", true, false},
		{"LoggingOnly", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			d, client := startTestDev(t, testConfig(t, t.TempDir(), "--learning-mode", tt.mode))
			defer d.close()
			const events = 24
			answeredBaseline := 0
			for i := range events {
				req := &personalizerv1.RankRequest{
					EventId: proto.String(fmt.Sprintf("e%d", i)),
					ContextFeatures: []*personalizerv1.Namespace{{Name: "U", Features: []*personalizerv1.Feature{
						{Name: "i", Value: &personalizerv1.Feature_NumberValue{NumberValue: float64(i)}}}}},
					Actions: []*personalizerv1.Action{{Id: "first"}, {Id: "second"}, {Id: "third"}},
				}
				resp, err := client.Rank(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.RewardActionId == "first" && resp.Ranking[0].Id == "first" {
					answeredBaseline++
				}
				if _, err := client.Reward(ctx, &personalizerv1.RewardRequest{EventId: req.GetEventId(), Value: 0.5}); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.joiner.Wait(ctx, func(s joiner.Stats) bool { return s.Emitted >= events }); err != nil {
				t.Fatal(err)
			}
			if tt.baseline && answeredBaseline != events {
				t.Errorf("%d of %d answers were the baseline, want all", answeredBaseline, events)
			}
			if !tt.baseline && answeredBaseline == events {
				t.Errorf("every answer was the baseline: no exploration online")
			}
			matched := 0
			for _, recs := range readJoined(t, d) {
				for _, r := range recs {
					var line struct {
						Cost     float64 `json:"_label_cost"`
						Original float64 `json:"_original_label_cost"`
						A        []int   `json:"a"`
						Skip     bool    `json:"_skipLearn"`
					}
					if err := json.Unmarshal(r.Value, &line); err != nil {
						t.Fatal(err)
					}
					want := -0.5
					if tt.mode == "Apprentice" {
						want = 0
						if line.A[0] == 1 {
							want, matched = -1, matched+1
						}
					}
					if line.Cost != want || line.Original != -0.5 || line.Skip != tt.skipLearn {
						t.Errorf("%s: cost %v original %v skip %v, want %v -0.5 %v", r.Value, line.Cost, line.Original, line.Skip, want, tt.skipLearn)
					}
					if tt.mode == "LoggingOnly" && line.A[0] != 1 {
						t.Errorf("logged %v, want the baseline first", line.A)
					}
				}
			}
			if tt.mode == "Apprentice" && (matched == 0 || matched == events) {
				t.Errorf("the model chose the baseline %d of %d times; with no model yet it explores uniformly", matched, events)
			}
		})
	}
}

// readJoined returns every record of personalizer.joined by partition.
func readJoined(t *testing.T, d *dev) map[int][]eventlog.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := &harness{t: t, ctx: ctx, brokers: d.broker.Addrs()}
	return h.readTopic(eventlog.JoinedTopic)
}
