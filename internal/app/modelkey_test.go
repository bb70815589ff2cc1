package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestModelSigningKey reads --model-signing-key: the file's bytes without
// surrounding whitespace, at least 32 of them.
func TestModelSigningKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good, short := filepath.Join(dir, "good"), filepath.Join(dir, "short")
	os.WriteFile(good, []byte("  0123456789abcdef0123456789abcdef\n"), 0o600)
	os.WriteFile(short, []byte("0123456789abcdef0123456789abcde\n"), 0o600)
	if k, err := (&securityConfig{ModelSigningKey: good}).modelSigningKey(); err != nil || string(k) != "0123456789abcdef0123456789abcdef" {
		t.Errorf("good key: %q, %v", k, err)
	}
	if k, err := (&securityConfig{}).modelSigningKey(); err != nil || k != nil {
		t.Errorf("no key: %q, %v", k, err)
	}
	for file, want := range map[string]string{short: "31 bytes, want at least 32", filepath.Join(dir, "missing"): "no such file"} {
		if _, err := (&securityConfig{ModelSigningKey: file}).modelSigningKey(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", file, err, want)
		}
	}
}
