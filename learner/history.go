package learner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

// DefaultHistory is the default [Config.History]: the model versions a
// learner keeps.
const DefaultHistory = 20

// ErrNotKept is a model version the history does not hold: never
// published, or evicted by newer ones.
var ErrNotKept = errors.New("model version not kept")

// History keeps the last published versions of a loop's model, one file
// per version in its directory (the version's ModelInfo and model bytes,
// a GetModelResponse), so that audits can score past decisions with the
// model that made them and a rollback can bring one back, across
// restarts. Memory holds only the version numbers: a version is read from
// its file when asked for. The learner's Run goroutine adds; any
// goroutine reads.
type History struct {
	dir  string
	keep int

	mu       sync.Mutex
	versions []uint64 // kept, oldest first
}

// historySuffix ends the name of a version's file: <version>.version.
const historySuffix = ".version"

// OpenHistory opens the history in dir (created if need be) that keeps
// the last keep versions, and forgets what it holds past latest (the
// checkpoint's version: a file of a later version belongs to a model that
// no checkpoint holds) and beyond keep.
func OpenHistory(dir string, keep int, latest uint64) (*History, error) {
	if keep < 1 {
		return nil, fmt.Errorf("model history must keep at least 1 version, got %d", keep)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("model history: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model history: %w", err)
	}
	h := &History{dir: dir, keep: keep}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), historySuffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		if v > latest {
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		h.versions = append(h.versions, v)
	}
	slices.Sort(h.versions)
	h.prune()
	return h, nil
}

func (h *History) path(v uint64) string {
	return filepath.Join(h.dir, strconv.FormatUint(v, 10)+historySuffix)
}

// Add keeps v and forgets the oldest versions beyond the history's size.
func (h *History) Add(v *eventsv1.GetModelResponse) error {
	data, err := v.MarshalVT()
	if err != nil {
		return fmt.Errorf("encode model version %d: %w", v.GetInfo().GetVersion(), err)
	}
	if err := writeFileAtomic(h.path(v.GetInfo().GetVersion()), data); err != nil {
		return fmt.Errorf("keep model version %d: %w", v.GetInfo().GetVersion(), err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.versions = append(h.versions, v.GetInfo().GetVersion())
	h.prune()
	return nil
}

// prune removes the oldest versions beyond keep; h.mu is held (or h is
// not shared yet).
func (h *History) prune() {
	for len(h.versions) > h.keep {
		os.Remove(h.path(h.versions[0]))
		h.versions = h.versions[1:]
	}
}

// Versions returns the kept versions, oldest first.
func (h *History) Versions() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.versions)
}

// Get returns kept version v, or an error wrapping [ErrNotKept] that
// says which versions are kept.
func (h *History) Get(v uint64) (*eventsv1.GetModelResponse, error) {
	h.mu.Lock()
	_, kept := slices.BinarySearch(h.versions, v)
	h.mu.Unlock()
	var data []byte
	err := fs.ErrNotExist
	if kept {
		data, err = os.ReadFile(h.path(v))
	}
	if errors.Is(err, fs.ErrNotExist) { // evicted meanwhile, too
		return nil, h.notKept(v)
	}
	if err != nil {
		return nil, fmt.Errorf("read model version %d: %w", v, err)
	}
	mv := &eventsv1.GetModelResponse{}
	if err := proto.Unmarshal(data, mv); err != nil {
		return nil, fmt.Errorf("model version %d: %w", v, err)
	}
	return mv, nil
}

// notKept is the error for version v, naming the versions kept.
func (h *History) notKept(v uint64) error {
	vs := h.Versions()
	switch {
	case len(vs) == 0:
		return notKeptf("model version %d is not kept; no version is", v)
	case len(vs) == 1:
		return notKeptf("model version %d is not kept; the learner keeps version %d only", v, vs[0])
	}
	return notKeptf("model version %d is not kept; the learner keeps the last %d versions, now %d to %d", v, h.keep, vs[0], vs[len(vs)-1])
}

// notKeptError is an [ErrNotKept] whose message says it all (it goes to
// callers as it is).
type notKeptError struct{ msg string }

func notKeptf(format string, args ...any) error {
	return &notKeptError{fmt.Sprintf(format, args...)}
}

func (e *notKeptError) Error() string        { return e.msg }
func (e *notKeptError) Is(target error) bool { return target == ErrNotKept }

// notKeptStatus is NotFound with err's message when err is an
// [ErrNotKept], else nil.
func notKeptStatus(err error) error {
	var nk *notKeptError
	if errors.As(err, &nk) {
		return status.Error(codes.NotFound, nk.msg)
	}
	return nil
}
