package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/store/bolt"
)

// The CLI's contract with operators and scripts: one clear line on stderr, a hint where one helps,
// and the named exit code.
func TestCLIErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badConf := filepath.Join(dir, "bad.toml")
	os.WriteFile(badConf, []byte("api = \"127.0.0.1:8888\"\nstreem = \"127.0.0.1:9000-9001\"\n"), 0o644)
	goodConf := filepath.Join(dir, "good.toml")
	os.WriteFile(goodConf, []byte("stream = \"127.0.0.1:7000-7003\"\nbacklog = 1024\n"), 0o644)
	brokenToml := filepath.Join(dir, "broken.toml")
	os.WriteFile(brokenToml, []byte("api = \n"), 0o644)
	garbage := filepath.Join(dir, "garbage.jsonl")
	os.WriteFile(garbage, []byte(`{"kind":"goal","colour":"red"}`+"\n"), 0o644)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// The daemons that must fail before serving get a port no other test uses: they bind it first,
	// and a fixed one (port 1) was seen listening by the socket activation test running beside.
	_, spare := freePorts(t, 1)
	unused := fmt.Sprintf("127.0.0.1:%d", spare[0])
	// A listener without SO_REUSEPORT: our bind of the same port must fail.
	busyAddr := busy.Addr().String()

	// A store whose freelist page was overwritten (bbolt panicked on it) and an empty one.
	damaged := filepath.Join(dir, "damaged.db")
	if st, err := bolt.Open(damaged, time.Second); err != nil {
		t.Fatal(err)
	} else {
		st.Close()
	}
	if fi, err := os.Stat(damaged); err != nil {
		t.Fatal(err)
	} else if f, err := os.OpenFile(damaged, os.O_RDWR, 0); err == nil { // every page after the two metas
		f.WriteAt(bytes.Repeat([]byte{0xa5}, int(fi.Size())-2*os.Getpagesize()), int64(2*os.Getpagesize()))
		f.Close()
	}
	empty := filepath.Join(dir, "empty.db")
	os.WriteFile(empty, nil, 0o600)

	state := filepath.Join(dir, "state")
	for _, tc := range []struct {
		name string
		code int
		want []string
		args []string
	}{
		{"unknown flag", 2, []string{"flag provided but not defined"}, []string{"serve", "--nope"}},
		{"every config problem at once", 2, []string{"invalid configuration", "max-line", "client-queue", "handshake-timeout", "gc-percent: 5 is outside"},
			[]string{"serve", "--config", "/dev/null", "--check", "--max-line", "1", "--client-queue", "0", "--handshake-timeout", "1ms", "--gc-percent", "5"}},
		{"bad stream range", 2, []string{"first <= last"}, []string{"serve", "--config", "/dev/null", "--check", "--stream", "127.0.0.1:9005-9000"}},
		{"unknown config key", 2, []string{`unknown key "streem"`, "hint: keys are the flag names"}, []string{"serve", "--config", badConf, "--check"}},
		{"broken toml", 2, []string{"config file " + brokenToml}, []string{"serve", "--config", brokenToml, "--check"}},
		{"missing named config", 2, []string{"no such file"}, []string{"serve", "--config", filepath.Join(dir, "absent.toml"), "--check"}},
		{"config file read", 0, []string{"configuration OK", "stream 4 ports 127.0.0.1:7000..127.0.0.1:7003", "backlog 1024"}, []string{"serve", "--config", goodConf, "--check"}},
		{"flag beats config", 0, []string{"backlog 77"}, []string{"serve", "--config", goodConf, "--check", "--backlog", "77"}},
		{"redis down", 1, []string{"store redis://127.0.0.1:1/0", "redis does not answer"}, []string{"serve", "--config", "/dev/null", "--state-dir", state, "--store", "redis://127.0.0.1:1/0", "--api", "127.0.0.1:0", "--stream", unused}},
		{"unknown store", 2, []string{"scheme must be bolt://"}, []string{"serve", "--config", "/dev/null", "--check", "--store", "mysql://x"}},
		{"port taken", 1, []string{"listen " + busyAddr, "is in use by pid " + strconv.Itoa(os.Getpid())}, []string{"serve", "--config", "/dev/null", "--state-dir", state, "--api", "127.0.0.1:0", "--stream", busyAddr}},
		{"damaged store", 1, []string{"store " + damaged + " is damaged", "restore it from a backup", "mv " + damaged},
			[]string{"serve", "--config", "/dev/null", "--state-dir", state, "--store", "bolt://" + damaged, "--api", "127.0.0.1:0", "--stream", unused}},
		{"empty store", 1, []string{"store " + empty + " is damaged (the file is empty)", "restore it from a backup"},
			[]string{"serve", "--config", "/dev/null", "--state-dir", state, "--store", "bolt://" + empty, "--api", "127.0.0.1:0", "--stream", unused}},
		{"watcher without file", 2, []string{"exactly one match FILE"}, []string{"watcher", "--token", "x"}},
		{"watcher bad file", 2, []string{"line 1", "unknown field"}, []string{"watcher", "--token", "x", garbage}},
		{"watcher no token", 2, []string{"no watcher token", "hint: pass --token"}, []string{"watcher", "--token-file", filepath.Join(dir, "none"), garbage}},
		{"watcher daemon down", 1, []string{"post"}, []string{"watcher", "--api", "http://127.0.0.1:1", "--token", "x", "--retry-for", "0s", sampleJSONL}},
		{"client daemon down", 1, []string{"cannot reach the API"}, []string{"client", "--api", "http://127.0.0.1:1", "--match", "m"}},
		{"client from needs v3", 2, []string{"--from needs --protocol 3"}, []string{"client", "--match", "m", "--from", "3"}},
		{"version", 0, []string{"matchstream "}, []string{"version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := run(t, tc.code, tc.args...)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tc.code != 0 && !strings.HasPrefix(out, "matchstream: ") && !strings.Contains(out, "\nmatchstream: ") {
				t.Errorf("error not reported as 'matchstream: ...':\n%s", out)
			}
			if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
				t.Errorf("a panic instead of an error:\n%s", out)
			}
		})
	}
}

// Environment variables sit between flags and the config file.
func TestCLIEnv(t *testing.T) {
	t.Setenv("MATCHSTREAM_BACKLOG", "333")
	t.Setenv("MATCHSTREAM_STREAM", "127.0.0.1:6000-6001")
	out := run(t, 0, "serve", "--config", "/dev/null", "--check")
	for _, w := range []string{"backlog 333", "stream 2 ports 127.0.0.1:6000..127.0.0.1:6001"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	out = run(t, 0, "serve", "--config", "/dev/null", "--check", "--backlog", "5")
	if !strings.Contains(out, "backlog 5") {
		t.Errorf("flag did not beat env:\n%s", out)
	}
}

// A second daemon on ports a running one holds refuses to start, naming the port and the pid,
// for the stream ports and for the API port alike; the first goes on serving alone.
func TestSecondDaemonRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := startDaemon(t, filepath.Join(dir, "first"))
	pid := first.cmd.Process.Pid
	stream := fmt.Sprintf("127.0.0.1:%d-%d", first.stream[0], first.stream[len(first.stream)-1])
	_, other := freePorts(t, 2)
	for _, tc := range []struct {
		name      string
		api, strm string
		port      int
	}{
		{"same ports", fmt.Sprintf("127.0.0.1:%d", first.apiPort), stream, first.stream[0]},
		{"same stream ports on every address", "127.0.0.1:0", fmt.Sprintf("0.0.0.0:%d-%d", first.stream[0], first.stream[1]), first.stream[0]},
		{"same API port", fmt.Sprintf("127.0.0.1:%d", first.apiPort), fmt.Sprintf("127.0.0.1:%d-%d", other[0], other[1]), first.apiPort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := run(t, 1, "serve", "--config", "/dev/null", "--state-dir", filepath.Join(dir, "second"),
				"--api", tc.api, "--stream", tc.strm)
			want := fmt.Sprintf("port %d is in use by pid %d (", tc.port, pid)
			if !strings.Contains(out, want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Fatalf("want one line with %q, got:\n%s", want, out)
			}
		})
	}
	if code := first.getJSON("/healthz", &struct{}{}); code != 200 {
		t.Fatalf("the first daemon after the attempts: /healthz %d", code)
	}
}
