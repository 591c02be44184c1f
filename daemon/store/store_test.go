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

// A Sentinel URL carries the primary's password as a parameter: hidden too, and the URL is
// accepted, like each deployment's form.
func TestShownHidesPasswordParameters(t *testing.T) {
	raw := "redis+sentinel://sen:hunter2@s1:26379/0?master_name=m&username=app&password=hunter3&sentinel_password=hunter4"
	got := store.Shown(raw)
	for _, secret := range []string{"hunter2", "hunter3", "hunter4"} {
		if strings.Contains(got, secret) {
			t.Fatalf("Shown(%q) = %q", raw, got)
		}
	}
	if !strings.Contains(got, "master_name=m") {
		t.Fatalf("Shown lost the rest: %q", got)
	}
	for _, ok := range []string{raw, "rediss://h:6379/0", "redis+cluster://c1:7000", "rediss+sentinel://s:26379/0?master_name=m"} {
		if _, err := store.ParseURL(ok); err != nil {
			t.Errorf("ParseURL(%s): %v", store.Shown(ok), err)
		}
	}
}
