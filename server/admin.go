package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// ConfigWriter stores loop configurations, for [Admin].
type ConfigWriter interface {
	// Put stores c as its loop's configuration. When Put returns, the
	// registry the [Server] follows ([Server.Configs]) holds c or a newer
	// version: the next read sees the change.
	Put(ctx context.Context, c *loop.Config) error
	// Delete removes loop's configuration (a tombstone), likewise seen by
	// the registry when Delete returns.
	Delete(ctx context.Context, loop string) error
}

// ModelAdmin resets and imports a loop's model: the learner starts the
// model afresh, or from the file, and publishes it as a new version,
// which reaches the servers as every version does.
type ModelAdmin interface {
	ResetModel(ctx context.Context, loop string) (*eventsv1.ModelInfo, error)
	// ImportModel returns an error wrapping [ErrInvalidModel] for data
	// that is not a model file.
	ImportModel(ctx context.Context, loop string, data []byte) (*eventsv1.ModelInfo, error)
}

// LogAdmin reads and deletes a loop's stored events.
type LogAdmin interface {
	// LogProperties returns the times of the first and last stored event
	// of loop, or an error wrapping [ErrNoLogs] when there is none.
	LogProperties(ctx context.Context, loop string) (from, to time.Time, err error)
	// DeleteLogs removes loop's events stored up to now.
	DeleteLogs(ctx context.Context, loop string) error
	// SetRetention keeps events days days (-1: forever).
	SetRetention(ctx context.Context, days int32) error
}

var (
	// ErrNoLogs is a loop that has no stored events: Personalizer's
	// LogsPropertiesNotFound.
	ErrNoLogs = errors.New("no events are stored for the loop")
	// ErrInvalidModel is an imported file that is not a model:
	// Personalizer's InvalidModelImportFormat.
	ErrInvalidModel = errors.New("the model file is not valid")
)

// DefaultMaxModelBytes is the largest model [Admin] takes when
// [AdminConfig.MaxModelBytes] is 0: the largest file it imports, and the
// most a policy it sets or a model it imports may take for its weights
// (256 MiB: -b 24).
const DefaultMaxModelBytes = 256 << 20

// AdminConfig configures an [Admin].
type AdminConfig struct {
	// Guard decides which loops a caller may address; nil means
	// authentication is off (every caller may do everything). It must be
	// the Guard that authenticates the calls.
	Guard   *Guard
	Configs ConfigWriter
	// Models and Logs may be nil: their operations then answer
	// OperationNotAllowed (gRPC Unimplemented).
	Models      ModelAdmin
	Logs        LogAdmin
	Evaluations EvaluationAdmin // nil: the evaluation routes answer OperationNotAllowed
	// History serves the audit's past model versions and rollbacks, and
	// Decisions finds events in the log for the audit; nil answers
	// OperationNotAllowed (the audit without History gives no breakdown
	// of versions other than the one served).
	History       ModelHistory
	Decisions     DecisionLog
	MaxModelBytes int64
	// ModelSigningKey is the HMAC-SHA256 key that signs model exports
	// (REST ?signed=true, gRPC ExportModel's signed) and checks signed
	// imports; without one, both are refused (unsigned imports are taken).
	ModelSigningKey []byte
	Now             func() time.Time
}

// Admin answers the control plane, over REST ([REST.AddAdmin]) and gRPC
// ([RegisterAdmin]): a loop's service configuration and policy (read from
// the [Server]'s registry, written through a [ConfigWriter]), its model
// (exported from the version the Server serves, reset and imported
// through a [ModelAdmin]) and its logs ([LogAdmin]), and the loops
// themselves. A loop key addresses its own loop only; an admin key any
// loop, and only it creates, lists and deletes loops.
type Admin struct {
	s      *Server
	cfg    AdminConfig
	mu     sync.Mutex // one configuration change at a time: each builds on the last
	models modelCache // past model versions loaded for audits
}

// NewAdmin returns the control plane of s's loops.
func NewAdmin(s *Server, cfg AdminConfig) *Admin {
	if cfg.Guard == nil {
		cfg.Guard = &Guard{cfg: GuardConfig{Loop: s.cfg.Loop}}
	}
	if cfg.MaxModelBytes == 0 {
		cfg.MaxModelBytes = DefaultMaxModelBytes
	}
	if cfg.Now == nil {
		cfg.Now = s.now
	}
	a := &Admin{s: s, cfg: cfg}
	s.audit = a // PersonalizerService.GetDecision answers through a
	return a
}

// apiError is an admin operation's failure as both APIs answer it.
type apiError struct {
	http int
	grpc codes.Code
	code string // Personalizer's error code
	msg  string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

var (
	errNoModel     = &apiError{http.StatusNotFound, codes.NotFound, "ResourceNotFound", "no model has been published for the loop yet"}
	errUnsupported = &apiError{http.StatusServiceUnavailable, codes.Unimplemented, "OperationNotAllowed", "this operation is not available on this server"}
)

// classify turns an admin operation's error into its answer; failCode is
// Personalizer's code for the operation's internal failures.
func (a *Admin) classify(err error, failCode string) *apiError {
	var ae *apiError
	var le *loop.Error
	var inv *invalidError
	if e := classifyEvaluation(err); e != nil {
		return e
	}
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &le):
		return &apiError{http.StatusBadRequest, codes.InvalidArgument, le.Code, le.Message}
	case errors.Is(err, ErrInvalidModel):
		return &apiError{http.StatusBadRequest, codes.InvalidArgument, "InvalidModelImportFormat", err.Error()}
	case errors.As(err, &inv):
		return &apiError{http.StatusBadRequest, codes.InvalidArgument, "BadRequest", inv.Error()}
	case errors.Is(err, ErrUnknownEvent):
		return &apiError{http.StatusNotFound, codes.NotFound, "ResourceNotFound", err.Error()}
	case errors.Is(err, ErrInvalidSignature):
		return &apiError{http.StatusBadRequest, codes.InvalidArgument, "InvalidModelImportSignature", err.Error()}
	case errors.Is(err, ErrNoLogs):
		return &apiError{http.StatusNotFound, codes.NotFound, "LogsPropertiesNotFound", "no events are stored for the loop"}
	case errors.Is(err, loop.ErrNotFound):
		return &apiError{http.StatusNotFound, codes.NotFound, "ResourceNotFound", "the loop does not exist"}
	case errors.Is(err, context.Canceled):
		return &apiError{StatusClientClosedRequest, codes.Canceled, "ClientClosedRequest", err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{http.StatusRequestTimeout, codes.DeadlineExceeded, "RequestTimeout", err.Error()}
	}
	if msg, ok := notFound(err); ok { // a model version the learner does not keep
		return &apiError{http.StatusNotFound, codes.NotFound, "ResourceNotFound", msg}
	}
	switch st, _ := status.FromError(err); st.Code() {
	case codes.Unavailable: // the learner, say: the caller may retry
		return &apiError{http.StatusServiceUnavailable, codes.Unavailable, "OperationNotAllowed", "this operation is not allowed at this time; retry later"}
	case codes.FailedPrecondition: // not possible in this deployment, as it says
		return &apiError{http.StatusServiceUnavailable, codes.FailedPrecondition, "OperationNotAllowed", st.Message()}
	}
	a.s.log.Error("admin operation failed", "code", failCode, "err", err)
	return &apiError{http.StatusInternalServerError, codes.Internal, failCode, "internal error"}
}

// loopOf returns the loop a call may address when it names name.
func (a *Admin) loopOf(ctx context.Context, name string) (string, error) {
	l, err := a.cfg.Guard.loopOf(ctx, name, a.s.cfg.Loop)
	return l, denied(err)
}

// requireAdmin refuses a call without an admin key (when keys are on).
func (a *Admin) requireAdmin(ctx context.Context) error {
	return denied(a.cfg.Guard.requireAdmin(ctx))
}

// denied is the answer to a call the [Guard] refused.
func denied(err error) error {
	switch st, _ := status.FromError(err); st.Code() {
	case codes.OK:
		return nil
	case codes.PermissionDenied:
		return &apiError{http.StatusForbidden, codes.PermissionDenied, "InvalidApiAccess", st.Message()}
	default:
		return &apiError{http.StatusUnauthorized, codes.Unauthenticated, "401", st.Message()}
	}
}

// config returns name's current configuration. The server's own loop has
// one before the registry holds it: the configuration made from flags.
func (a *Admin) config(name string) (*loop.Config, error) {
	if c := a.s.reg.Get(name); c != nil {
		return c, nil
	}
	if name == a.s.cfg.Loop {
		return a.s.seed, nil
	}
	return nil, fmt.Errorf("loop %q: %w", name, loop.ErrNotFound)
}

// loopConfig returns the configuration of the loop the call addresses.
func (a *Admin) loopConfig(ctx context.Context, name string) (*loop.Config, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, err
	}
	return a.config(l)
}

// setLimits sets a loop's limits (admin keys only: they protect the
// service from its callers).
func (a *Admin) setLimits(ctx context.Context, name string, l loop.Limits) (*loop.Config, error) {
	if err := a.requireAdmin(ctx); err != nil {
		return nil, err
	}
	return a.change(ctx, name, func(cur *loop.Config) (*loop.Config, error) { return cur.SetLimits(l, a.cfg.Now()) })
}

// change applies edit to the configuration of the loop the call
// addresses and stores the result.
func (a *Admin) change(ctx context.Context, name string, edit func(cur *loop.Config) (*loop.Config, error)) (*loop.Config, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, err
	}
	if a.cfg.Configs == nil {
		return nil, errUnsupported
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, err := a.config(l)
	if err != nil {
		return nil, err
	}
	next, err := edit(cur)
	if err != nil {
		return nil, err
	}
	if err := a.cfg.Configs.Put(ctx, next); err != nil {
		return nil, fmt.Errorf("store configuration version %d of loop %q: %w", next.Version, l, err)
	}
	a.s.syncLoops() // the next call here sees the change
	return next, nil
}

// updateService replaces the service configuration. A new log retention
// is applied to the log before the configuration is stored, so that a
// failed call can be repeated as it is.
func (a *Admin) updateService(ctx context.Context, name string, svc loop.Service) (*loop.Config, error) {
	return a.change(ctx, name, func(cur *loop.Config) (*loop.Config, error) {
		next, err := cur.Update(svc, a.cfg.Now())
		if err != nil {
			return nil, err
		}
		if err := autoOptimizable(next); err != nil {
			return nil, err
		}
		if days := next.Service.LogRetentionDays; days != cur.Service.LogRetentionDays {
			if a.cfg.Logs == nil {
				return nil, errUnsupported
			}
			if err := a.cfg.Logs.SetRetention(ctx, days); err != nil {
				return nil, fmt.Errorf("set log retention to %d days: %w", days, err)
			}
		}
		return next, nil
	})
}

// autoOptimizable refuses auto-optimization for a multi-slot loop, as
// Personalizer did: offline evaluation does not take multi-slot logs.
func autoOptimizable(c *loop.Config) error {
	if c.Service.IsAutoOptimizationEnabled && c.Policy.MultiSlot() {
		return &apiError{http.StatusForbidden, codes.FailedPrecondition, "ProblemTypeIncompatibleWithAutoOptimization", "Auto-optimization is not available for a multi-slot loop."}
	}
	return nil
}

// setPolicy sets the learning policy; nil resets it to the default of
// the loop's problem type.
func (a *Admin) setPolicy(ctx context.Context, name string, p *loop.Policy) (*loop.Config, error) {
	return a.change(ctx, name, func(cur *loop.Config) (*loop.Config, error) {
		if p == nil {
			d := cur.Policy.DefaultFor()
			p = &d
		}
		next, err := cur.SetPolicy(*p, a.cfg.Now())
		if err != nil {
			return nil, err
		}
		pol, _ := bandit.ParsePolicy(p.Arguments) // SetPolicy checked it
		return next, a.fits(pol, "InvalidPolicyConfiguration")
	})
}

// fits refuses a policy whose models would take more than the largest
// model this server takes: any caller with a loop's key may set a policy
// or import a model, and the learner allocates what it asks for.
func (a *Admin) fits(p *bandit.Policy, code string) error {
	if n := p.WeightBytes(); n > a.cfg.MaxModelBytes {
		return &loop.Error{Code: code, Message: fmt.Sprintf("A model of this policy takes %d bytes, over the limit of %d bytes (--max-model-bytes); use fewer bits (-b).", n, a.cfg.MaxModelBytes)}
	}
	return nil
}

// servedModel returns the model version the server serves for the loop
// the call addresses.
func (a *Admin) servedModel(ctx context.Context, name string) (*servingModel, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, err
	}
	st := a.s.loop(l)
	if st == nil {
		return nil, &apiError{http.StatusNotFound, codes.NotFound, "ResourceNotFound", fmt.Sprintf("loop %q is not served here", l)}
	}
	sm := st.model.Load()
	if sm == nil {
		return nil, errNoModel
	}
	return sm, nil
}

// modelProperties are Personalizer's model properties of a version.
type modelProperties struct {
	created, modified time.Time
	version, examples uint64
}

func propertiesOf(info *eventsv1.ModelInfo) modelProperties {
	p := modelProperties{modified: timeOrZero(info.GetCreated()), version: info.GetVersion(), examples: info.GetExamples()}
	p.created = p.modified
	if info.GetModelCreated() != nil {
		p.created = info.GetModelCreated().AsTime()
	}
	return p
}

// importModel replaces the loop's model with data, which must be a model
// file (this server's, or VW's) of the loop's problem type, or a signed zip
// of one (see [Admin.importable]): anything else changes nothing.
func (a *Admin) importModel(ctx context.Context, name string, data []byte) (*eventsv1.ModelInfo, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, err
	}
	if a.cfg.Models == nil {
		return nil, errUnsupported
	}
	cfg, err := a.config(l)
	if err != nil {
		return nil, err
	}
	data, err = a.importable(data, l, cfg.Policy.MultiSlot())
	if err != nil {
		return nil, err
	}
	info, err := a.cfg.Models.ImportModel(ctx, l, data)
	if err != nil {
		return nil, fmt.Errorf("import model of loop %q: %w", l, err)
	}
	return info, a.served(ctx, l, info)
}

// modelWait bounds how long a reset or import waits for the new version
// to be served here.
const modelWait = 30 * time.Second

// served waits until this server ranks with the version info describes,
// so that a call after a reset or an import sees the new model.
func (a *Admin) served(ctx context.Context, l string, info *eventsv1.ModelInfo) error {
	if !a.s.Serves(l) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, modelWait)
	defer cancel()
	if err := a.s.WaitLoopModel(ctx, l, info.GetVersion()); err != nil {
		return fmt.Errorf("model version %d of loop %q published, not served here yet: %w", info.GetVersion(), l, err)
	}
	return nil
}

// resetModel starts the loop's model afresh.
func (a *Admin) resetModel(ctx context.Context, name string) (*eventsv1.ModelInfo, error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return nil, err
	}
	if a.cfg.Models == nil {
		return nil, errUnsupported
	}
	info, err := a.cfg.Models.ResetModel(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("reset model of loop %q: %w", l, err)
	}
	return info, a.served(ctx, l, info)
}

// logProperties returns the times of the loop's first and last stored event.
func (a *Admin) logProperties(ctx context.Context, name string) (from, to time.Time, err error) {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return from, to, err
	}
	if a.cfg.Logs == nil {
		return from, to, errUnsupported
	}
	return a.cfg.Logs.LogProperties(ctx, l)
}

// deleteLogs removes the loop's stored events.
func (a *Admin) deleteLogs(ctx context.Context, name string) error {
	l, err := a.loopOf(ctx, name)
	if err != nil {
		return err
	}
	if a.cfg.Logs == nil {
		return errUnsupported
	}
	if err := a.cfg.Logs.DeleteLogs(ctx, l); err != nil {
		return fmt.Errorf("delete logs of loop %q: %w", l, err)
	}
	return nil
}

// MaxLoopNameLength bounds a loop's name.
const MaxLoopNameLength = 64

// validLoopName reports whether name is 1 to 64 letters, digits, '-', '_'
// and '.'.
func validLoopName(name string) bool {
	if name == "" || len(name) > MaxLoopNameLength {
		return false
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.", c) >= 0) {
			return false
		}
	}
	return true
}

// createLoop stores c, a new loop's first configuration (admin keys only).
func (a *Admin) createLoop(ctx context.Context, c *loop.Config) (*loop.Config, error) {
	if err := a.requireAdmin(ctx); err != nil {
		return nil, err
	}
	if !validLoopName(c.Loop) {
		return nil, &loop.Error{Code: "BadRequest", Message: "A loop name is 1 to 64 letters, digits, '-', '_' and '.'."}
	}
	if a.cfg.Configs == nil {
		return nil, errUnsupported
	}
	c.Service.RewardAggregation = strings.ToLower(c.Service.RewardAggregation)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := autoOptimizable(c); err != nil {
		return nil, err
	}
	pol, _ := bandit.ParsePolicy(c.Policy.Arguments) // Validate checked it
	if err := a.fits(pol, "InvalidPolicyConfiguration"); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.s.reg.Get(c.Loop) != nil {
		return nil, &apiError{http.StatusConflict, codes.AlreadyExists, "LoopAlreadyExists", fmt.Sprintf("loop %q exists", c.Loop)}
	}
	if err := a.cfg.Configs.Put(ctx, c); err != nil {
		return nil, fmt.Errorf("store loop %q: %w", c.Loop, err)
	}
	a.s.syncLoops() // served here from the next call
	return c, nil
}

// listLoops returns every loop's configuration, by name (admin keys only).
func (a *Admin) listLoops(ctx context.Context) ([]*loop.Config, error) {
	if err := a.requireAdmin(ctx); err != nil {
		return nil, err
	}
	cs := a.s.reg.Loops()
	slices.SortFunc(cs, func(x, y *loop.Config) int { return strings.Compare(x.Loop, y.Loop) })
	return cs, nil
}

// deleteLoop removes a loop's configuration (admin keys only).
func (a *Admin) deleteLoop(ctx context.Context, name string) error {
	if err := a.requireAdmin(ctx); err != nil {
		return err
	}
	if a.cfg.Configs == nil {
		return errUnsupported
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.s.reg.Get(name) == nil {
		return fmt.Errorf("loop %q: %w", name, loop.ErrNotFound)
	}
	if err := a.cfg.Configs.Delete(ctx, name); err != nil {
		return fmt.Errorf("delete loop %q: %w", name, err)
	}
	a.s.syncLoops()
	return nil
}
