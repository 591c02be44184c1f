package store_test

import (
	"strings"
	"testing"

	"matchstream/daemon/store"
)

// A store URL's password never reaches an error or a log line.
func TestShownHidesThePassword(t *testing.T) {
	raw := "redis://user:hunter2@10.0.0.5:6379/0"
	if got := store.Shown(raw); strings.Contains(got, "hunter2") || !strings.Contains(got, "10.0.0.5:6379") {
		t.Fatalf("Shown(%q) = %q", raw, got)
	}
	if _, err := store.ParseURL("mysql://user:hunter2@h/db"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("ParseURL error %v", err)
	}
}
