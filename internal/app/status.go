package app

import (
	"context"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/open-personalizer/personalizer/learner"
)

// checkpointService is the gRPC health service name that reports whether
// a learner writes its checkpoints: NOT_SERVING while they fail. The
// overall service ("") stays SERVING meanwhile: the learner still learns
// and still serves the last checkpointed version to servers, and a
// restart would not mend the disk (it would only drop what the learner
// holds in memory), so orchestrators must not restart it or hold back
// the servers that depend on it.
const checkpointService = "personalizer.v1.Checkpoint"

// learnerStatus is what a learner's GET /healthz answers, and dev's under
// "learner". It is answered with 200 whether checkpoints fail or not, as
// the server's status is while its learner is away: the process is up
// and serving, and the status says what is wrong.
type learnerStatus struct {
	ModelVersion    uint64   `json:"model_version"`     // latest version published; 0: none yet
	ModelAgeSeconds *float64 `json:"model_age_seconds"` // since that version was made; null without one
	// Examples counts the examples learned, all time; while checkpoints
	// fail it runs ahead of what the published version holds.
	Examples   int64            `json:"examples"`
	Checkpoint checkpointStatus `json:"checkpoint"`
}

// checkpointStatus is the state of a learner's checkpoint.
type checkpointStatus struct {
	Failing      bool       `json:"failing"`                 // the latest write failed: no version is published until one succeeds
	Failures     int64      `json:"failures"`                // failed writes since the process started
	Error        string     `json:"error,omitempty"`         // the latest failure, while failing
	FailingSince *time.Time `json:"failing_since,omitempty"` // the first failure of the streak, while failing
	LastWritten  *time.Time `json:"last_written"`            // null before the first checkpoint
}

// learnerStatusOf is the status of l, whose versions store publishes.
func learnerStatusOf(l *learner.Learner, store *learner.Store) learnerStatus {
	st := l.Stats()
	s := learnerStatus{Examples: st.Learned, Checkpoint: checkpointStatus{
		Failing: st.CheckpointFailing, Failures: st.CheckpointFailures, Error: st.CheckpointError,
	}}
	if info := store.Latest().GetInfo(); info != nil {
		age := ageSeconds(info.GetCreated())
		s.ModelVersion, s.ModelAgeSeconds = info.GetVersion(), &age
	}
	if !st.FailingSince.IsZero() {
		s.Checkpoint.FailingSince = &st.FailingSince
	}
	if !st.LastCheckpoint.IsZero() {
		s.Checkpoint.LastWritten = &st.LastCheckpoint
	}
	return s
}

// devStatus is what dev's GET /healthz answers: what a server answers,
// and the status of its learner.
type devStatus struct {
	serverStatus
	Learner learnerStatus `json:"learner"`
}

// checkpointHealth reports in h, as service checkpointService, whether
// l writes its checkpoints. It sets the status now and returns a stage
// function that keeps it current until its context ends.
func checkpointHealth(l *learner.Learner, h *health.Server) func(context.Context) error {
	set := func(failing bool) {
		st := healthpb.HealthCheckResponse_SERVING
		if failing {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		h.SetServingStatus(checkpointService, st)
	}
	failing := l.Stats().CheckpointFailing
	set(failing)
	return func(ctx context.Context) error {
		for {
			var now bool
			if l.Wait(ctx, func(s learner.Stats) bool { now = s.CheckpointFailing; return now != failing }) != nil {
				return nil // ctx ended
			}
			failing = now
			set(failing)
		}
	}
}

// unixSeconds is t as Unix time in seconds; 0 for the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
