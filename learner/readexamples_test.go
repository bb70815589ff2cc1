package learner

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestReadExamples reads lines from a reader, blank ones skipped, and
// cannot rewind.
func TestReadExamples(t *testing.T) {
	src := ReadExamples("stdin", strings.NewReader("a\n\nb"))
	var got []string
	for {
		x, err := src.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%s", x.At.Line, x.Data))
	}
	if strings.Join(got, " ") != "1:a 3:b" {
		t.Errorf("lines %q", got)
	}
	if err := src.Rewind(); err == nil || err.Error() != "stdin cannot be read again" {
		t.Errorf("Rewind: %v", err)
	}
}
