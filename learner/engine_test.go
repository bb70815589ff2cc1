package learner

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/eventlog"
)

var (
	_ Rewinder = (*FileExamples)(nil)
	_ Examples = (*JoinedExamples)(nil)
	_ Report   = (*vwReport)(nil)
	_ Report   = (*retrainReport)(nil)
)

// readAll returns where every line of src is and its data.
func readAll(t *testing.T, src Examples) (at []Where, data []string) {
	t.Helper()
	for {
		x, err := src.Next(context.Background())
		if err == io.EOF {
			return at, data
		}
		if err != nil {
			t.Fatal(err)
		}
		at, data = append(at, x.At), append(data, string(x.Data))
	}
}

// TestFileExamples reads a file plain and gzipped: blank lines are
// skipped but numbered, the last line needs no newline, and Rewind
// starts again.
func TestFileExamples(t *testing.T) {
	t.Parallel()
	const text = "a\n\n  \nb\r\n" + "c"
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(text))
	zw.Close()
	tests := []struct {
		name string
		data []byte
	}{
		{"plain", []byte(text)},
		{"gzip.gz", z.Bytes()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), tt.name)
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := OpenExamples(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			wantAt := []Where{{Line: 1}, {Line: 4}, {Line: 5}}
			wantData := []string{"a", "b\r", "c"}
			for pass := range 2 {
				if pass > 0 {
					if err := f.Rewind(); err != nil {
						t.Fatal(err)
					}
				}
				at, data := readAll(t, f)
				if !slices.Equal(at, wantAt) || !slices.Equal(data, wantData) {
					t.Errorf("pass %d: lines %q at %v, want %q at %v", pass, data, at, wantData, wantAt)
				}
			}
		})
	}
}

// TestJoinedExamples reads two partitions up to their ends: records of
// other loops, repeats and records past an end are skipped, and a
// partition with nothing to read is not waited for.
func TestJoinedExamples(t *testing.T) {
	t.Parallel()
	log := eventlog.NewMem(map[string]int{eventlog.JoinedTopic: 3})
	rec := func(p int, key string) eventlog.Record {
		return eventlog.Record{Topic: eventlog.JoinedTopic, Partition: p, Key: []byte(key), Value: []byte("v " + key)}
	}
	if err := log.Direct().Write(context.Background(),
		rec(0, testLoop+"/a"), rec(0, "other/b"), rec(0, testLoop+"/c"), rec(0, testLoop+"/a"), rec(0, testLoop+"/after"),
		rec(1, testLoop+"/before"), rec(1, testLoop+"/d"), rec(1, testLoop+"/c"), rec(1, testLoop+"/after"),
		rec(2, testLoop+"/nothing"),
	); err != nil {
		t.Fatal(err)
	}
	open := func(_ context.Context, start map[int]int64) (eventlog.Reader, error) {
		return log.Reader(eventlog.JoinedTopic, start), nil
	}
	start, end := map[int]int64{0: 0, 1: 1, 2: 1}, map[int]int64{0: 4, 1: 3, 2: 1}
	j, err := OpenJoined(context.Background(), open, testLoop, start, end, 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	if n := j.PartitionsLeft(); n != 2 {
		t.Errorf("%d partitions to read, want 2", n)
	}
	at, data := readAll(t, j)
	slices.Sort(data) // the partitions interleave
	if want := []string{"v " + testLoop + "/a", "v " + testLoop + "/c", "v " + testLoop + "/d"}; !slices.Equal(data, want) {
		t.Errorf("read %q at %v, want %q", data, at, want)
	}
	if st := j.Skipped(); st.Duplicates != 2 || st.OtherLoops != 1 || j.PartitionsLeft() != 0 {
		t.Errorf("skipped %+v, %d partitions left; want 2 duplicates, 1 of another loop, none left", st, j.PartitionsLeft())
	}

	// Nothing to read: no reader is opened.
	j, err = OpenJoined(context.Background(), func(context.Context, map[int]int64) (eventlog.Reader, error) {
		return nil, errors.New("opened")
	}, testLoop, start, map[int]int64{0: 0}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Next(context.Background()); err != io.EOF || j.Close() != nil {
		t.Errorf("Next with nothing to read = %v, want io.EOF", err)
	}
}

// lines is a source of the given lines, numbered from 1.
type lines struct {
	lines []string
	next  int
}

func (l *lines) Next(context.Context) (Example, error) {
	if l.next == len(l.lines) {
		return Example{}, io.EOF
	}
	l.next++
	return Example{Data: []byte(l.lines[l.next-1]), At: Where{Line: l.next}}, nil
}

// record is a [Report] that keeps what it is told, and fails at line
// failAt if set.
type record struct {
	steps  []string
	best   int
	done   *Summary
	failAt int
}

func (r *record) Example(s *Step) error {
	switch {
	case s.At.Line == r.failAt:
		return errors.New("report failed")
	case s.Err != nil:
		r.steps = append(r.steps, fmt.Sprintf("%d skipped, dropped %v", s.At.Line, errors.Is(s.Err, bandit.ErrSkip)))
	default:
		r.steps = append(r.steps, fmt.Sprintf("%d labeled %v, %d examples, action %d", s.At.Line, s.Labeled, s.Counts.Examples, s.Pred.PMF()[0].Action))
	}
	return nil
}

func (r *record) BestPass(*bandit.Model) error { r.best++; return nil }
func (r *record) Done(s *Summary) error        { r.done = s; return nil }

// TestEngine runs the engine on lines: the report sees every line in
// order, skipped ones with their error, and the summary; the model is
// what Train makes of the same lines. A report's error ends the run, and
// several passes need a Rewinder.
func TestEngine(t *testing.T) {
	t.Parallel()
	recs := joined(0, 40)
	var data []string
	for _, r := range recs {
		data = append(data, string(r.Value))
	}
	data = slices.Insert(data, 3, "{not json", `{"_skipLearn":true,"a":[1],"c":{"_multi":[{"A":{"x":1}}]}}`)
	policy := policyForTest(t, bandit.DefaultPolicy)

	eng := &Engine{Model: bandit.NewModel(policy)}
	var rep record
	s, err := eng.Run(context.Background(), &lines{lines: data}, &rep)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.steps) != 42 || rep.steps[3] != "4 skipped, dropped false" || rep.steps[4] != "5 skipped, dropped true" ||
		!strings.HasPrefix(rep.steps[41], "42 labeled true, 40 examples") {
		t.Errorf("reported %q", rep.steps)
	}
	if rep.done == nil || rep.done.Counts != s.Counts || rep.best != 0 {
		t.Errorf("Done(%+v), %d best passes; Run returned %+v", rep.done, rep.best, s)
	}
	if s.Examples != 40 || s.Labeled != 40 || s.Dropped != 1 || s.Malformed != 1 || s.Passes != 1 || s.Model != eng.Model {
		t.Errorf("summary %+v", s)
	}
	var got bytes.Buffer
	if _, err := eng.Model.WriteTo(&got); err != nil {
		t.Fatal(err)
	}
	sameModel(t, got.Bytes(), trainLines(t, bandit.DefaultPolicy, recs), recs)

	t.Run("report fails", func(t *testing.T) {
		t.Parallel()
		rep := record{failAt: 10}
		s, err := (&Engine{Model: bandit.NewModel(policy)}).Run(context.Background(), &lines{lines: data}, &rep)
		if err == nil || err.Error() != "report failed" || rep.done != nil || s.Examples != 8 {
			t.Errorf("Run = %+v, %v; Done(%v); want the report's error at the 8th example", s, err, rep.done)
		}
	})
	t.Run("passes", func(t *testing.T) {
		t.Parallel()
		_, err := (&Engine{Model: bandit.NewModel(policy), Passes: 2}).Run(context.Background(), &lines{lines: data}, &record{})
		if err == nil || !strings.Contains(err.Error(), "cannot be read again") {
			t.Errorf("two passes over lines: %v", err)
		}
	})
}
