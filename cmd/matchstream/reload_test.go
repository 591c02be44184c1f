package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGHUP reloads without dropping a client: a new watcher token in the token file works at once
// and the old one through its grace; a reload that cannot read the configuration is refused and
// the running one stays. The same process serves throughout, and every client gets the whole
// match exactly once.
func TestReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startLoggedDaemon(t, binary, dir)
	lines, v3, w := d.kickOff(t, dir, 20)
	pid := d.pid()
	old := stateToken(t, d.state)
	post := func(tok, name string, part []string) {
		t.Helper()
		run(t, 0, "watcher", "--api", d.url(""), "--token", tok, "--speed", "0", "-q", "--match", sampleID,
			writeFile(t, dir, name, part))
	}
	reloaded := func(what string, n int) {
		t.Helper()
		d.cmd.Process.Signal(syscall.SIGHUP)
		waitUntil(t, what, 20*time.Second, func() bool { return strings.Count(d.logText(), what) >= n })
	}

	tokenFile := filepath.Join(d.state, "watcher.token")
	const next = "reloaded-watcher-token-0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(next+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded("reload: watcher token replaced", 1)
	post(next, "a.jsonl", lines[1:10])
	post(old, "b.jsonl", lines[10:20]) // within its grace

	// A token file that cannot be read: the reload is refused, the running token stays.
	os.Remove(tokenFile)
	if err := os.Mkdir(tokenFile, 0o700); err != nil {
		t.Fatal(err)
	}
	reloaded("reload refused: the running configuration stays", 1)
	// A token file that went away: refused too, rather than a new random token nobody has.
	os.Remove(tokenFile)
	reloaded("reload refused: the running configuration stays", 2)
	if _, err := os.Stat(tokenFile); err == nil {
		t.Fatal("a reload made a new token file")
	}
	post(next, "c.jsonl", lines[20:])

	if got := d.pid(); got != pid {
		t.Fatalf("after the reloads /healthz answers pid %d, want %d", got, pid)
	}
	w.check(t, v3)
}
