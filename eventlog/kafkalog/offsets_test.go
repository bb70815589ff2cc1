package kafkalog_test

import (
	"maps"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/eventlog"
	"github.com/open-personalizer/personalizer/eventlog/kafkalog"
)

// TestOffsetsAt looks records up by time: partition 0 has ten records a
// minute apart, partition 1 five, partition 2 none, and partition 3 ten
// records an hour before the others.
func TestOffsetsAt(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := startBroker(t, t.TempDir())
	w := newWriter(t, b, eventlog.EventsTopic)
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var recs []eventlog.Record
	for p, n := range map[int]int{0: 10, 1: 5, 3: 10} {
		for i := range n {
			at := base.Add(time.Duration(i) * time.Minute)
			if p == 3 {
				at = at.Add(-time.Hour)
			}
			recs = append(recs, eventlog.Record{Partition: p, Value: []byte("v"), Time: at})
		}
	}
	if err := w.Write(ctx, recs...); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		at   time.Time
		want map[int]int64
	}{
		{"before everything", base.Add(-2 * time.Hour), map[int]int64{0: 0, 1: 0, 2: 0, 3: 0}},
		{"the zero time", time.Time{}, map[int]int64{0: 0, 1: 0, 2: 0, 3: 0}},
		{"at a record's time", base.Add(3 * time.Minute), map[int]int64{0: 3, 1: 3, 2: 0, 3: 10}},
		{"between records", base.Add(3*time.Minute + time.Second), map[int]int64{0: 4, 1: 4, 2: 0, 3: 10}},
		{"past a partition's last record", base.Add(7 * time.Minute), map[int]int64{0: 7, 1: 5, 2: 0, 3: 10}},
		{"after everything", base.Add(time.Hour), map[int]int64{0: 10, 1: 5, 2: 0, 3: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kafkalog.OffsetsAt(ctx, b.Addrs(), eventlog.EventsTopic, tt.at)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("OffsetsAt(%v) = %v, want %v", tt.at, got, tt.want)
			}
		})
	}

	t.Run("unknown topic", func(t *testing.T) {
		if _, err := kafkalog.OffsetsAt(ctx, b.Addrs(), "no.such.topic", base); err == nil {
			t.Error("OffsetsAt succeeded, want error")
		}
	})
}
