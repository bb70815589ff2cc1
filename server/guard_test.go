package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// writeKeys writes a keys file of lines and returns its path.
func writeKeys(t *testing.T, path string, lines ...string) string {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "keys")
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func withKey(key string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("ocp-apim-subscription-key", key))
}

func TestGuardAuthenticates(t *testing.T) {
	t.Parallel()
	a1, l1 := NewKey("A", "web")
	a2, l2 := NewKey("A", "")
	b1, lb := NewKey("B", "other")
	file := writeKeys(t, "", "# keys of loops A and B", "", l1, l2, lb)
	g, err := NewGuard(GuardConfig{Loop: "A", KeysFile: file}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"no key", context.Background(), codes.Unauthenticated},
		{"empty key", withKey(""), codes.Unauthenticated},
		{"wrong key", withKey("not-a-key"), codes.Unauthenticated},
		{"first key of A", withKey(a1), codes.OK},
		{"second key of A", withKey(a2), codes.OK},
		{"bearer", metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+a2)), codes.OK},
		{"key of B", withKey(b1), codes.PermissionDenied},
	}
	for _, tt := range tests {
		ctx, err := g.Authenticate(tt.ctx)
		if got := status.Code(err); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if err != nil {
			continue
		}
		if k, ok := ctx.Value(callerKey{}).(*apiKey); !ok || k.loop != "A" {
			t.Errorf("%s: caller %+v", tt.name, k)
		}
	}
	if k := must(g.Authenticate(withKey(a1))).Value(callerKey{}).(*apiKey); k.name != "web" {
		t.Errorf("key name %q, want web", k.name)
	}

	// Revoke a1: the file without it, reloaded.
	writeKeys(t, file, l2, lb)
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Authenticate(withKey(a1)); status.Code(err) != codes.Unauthenticated {
		t.Errorf("revoked key: %v", err)
	}
	if _, err := g.Authenticate(withKey(a2)); err != nil {
		t.Errorf("remaining key: %v", err)
	}
	// A file that does not parse keeps the keys in force.
	writeKeys(t, file, "A nothex")
	if err := g.Reload(); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("bad file reloaded: %v", err)
	}
	if _, err := g.Authenticate(withKey(a2)); err != nil {
		t.Errorf("after a failed reload: %v", err)
	}
}

func must(ctx context.Context, err error) context.Context {
	if err != nil {
		panic(err)
	}
	return ctx
}

func TestGuardRejectsBadKeysFiles(t *testing.T) {
	t.Parallel()
	_, line := NewKey("A", "")
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"one field", []string{"A"}, ":1: want"},
		{"four fields", []string{"#", line + " name extra"}, ":2: want"},
		{"short hash", []string{"A abcd"}, "64 hex digits"},
		{"duplicate", []string{line, line + " again"}, "listed twice"},
	}
	for _, tt := range tests {
		_, err := NewGuard(GuardConfig{Loop: "A", KeysFile: writeKeys(t, "", tt.lines...)}, time.Now)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := NewGuard(GuardConfig{Loop: "A", KeysFile: filepath.Join(t.TempDir(), "none")}, time.Now); err == nil {
		t.Error("a missing keys file was accepted")
	}
}

// TestGuardRateLimit counts refusals on a frozen clock: each key has its
// own bucket of burst tokens and nothing refills until the clock moves.
func TestGuardRateLimit(t *testing.T) {
	t.Parallel()
	k1, l1 := NewKey("A", "")
	k2, l2 := NewKey("A", "")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g, err := NewGuard(GuardConfig{Loop: "A", KeysFile: writeKeys(t, "", l1, l2), RateLimit: 2, RateBurst: 5}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	refused := func(key string, n int) int {
		ctx := must(g.Authenticate(withKey(key)))
		r := 0
		for range n {
			if g.Limit(ctx) != nil {
				r++
			}
		}
		return r
	}
	if got := refused(k1, 12); got != 7 {
		t.Errorf("key 1: %d of 12 refused, want 7 (burst 5)", got)
	}
	if got := refused(k2, 5); got != 0 {
		t.Errorf("key 2: %d of 5 refused, want 0: its bucket is its own", got)
	}
	now = now.Add(time.Second) // 2 tokens at 2/s
	if got := refused(k1, 3); got != 1 {
		t.Errorf("key 1 a second later: %d of 3 refused, want 1", got)
	}
	// Reloading keeps a key's bucket: k1 stays empty.
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := refused(k1, 1); got != 1 {
		t.Errorf("key 1 after reload: %d of 1 refused, want 1", got)
	}
	if err := g.Limit(must(g.Authenticate(withKey(k1)))); err == nil || !strings.Contains(err.Error(), "2 requests/s (burst 5)") {
		t.Errorf("refusal %v does not name the limit", err)
	}

	// Without keys every caller shares one bucket.
	open, err := NewGuard(GuardConfig{Loop: "A", RateLimit: 1, RateBurst: 3}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 10 {
		ctx := must(open.Authenticate(context.Background()))
		if open.Limit(ctx) != nil {
			n++
		}
	}
	if n != 7 {
		t.Errorf("without keys: %d of 10 refused, want 7", n)
	}
}
