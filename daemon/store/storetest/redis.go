package storetest

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Redis is a private redis-server for a test, on a free loopback port, with its data on disk
// (appendonly, fsync always) so it can be stopped and started again without losing anything.
type Redis struct {
	URL  string
	t    testing.TB
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
	// extra are the arguments beyond port and data directory (a replica's, a sentinel's); ready is
	// the log line that says it serves.
	extra []string
	ready string
	tls   bool // the port speaks TLS only (StartRedisTLS)
}

// RedisServer starts a Redis for the test and returns its URL (database 0). A missing redis-server
// fails the test, never skips it: `make test` installs it.
func RedisServer(t testing.TB) string { return StartRedis(t).URL }

// StartRedis starts a Redis for the test; it is killed when the test ends.
func StartRedis(t testing.TB) *Redis { t.Helper(); return StartRedisWith(t) }

// StartRedisWith is StartRedis with further redis-server arguments.
func StartRedisWith(t testing.TB, extra ...string) *Redis {
	t.Helper()
	r := newRedis(t, extra)
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

func newRedis(t testing.TB, extra []string) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is needed: sudo apt-get install redis-server (make test installs it when run as root)")
	}
	port := redisPort(t)
	return &Redis{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), t: t, bin: bin, port: port, dir: t.TempDir(),
		ready: "Ready to accept connections", extra: extra}
}

// Start runs the server (again) on the same port and data directory and waits until it is ready.
func (r *Redis) Start() {
	r.t.Helper()
	port := []string{"--port", fmt.Sprint(r.port)}
	if r.tls {
		port = []string{"--port", "0", "--tls-port", fmt.Sprint(r.port)}
	}
	args := []string{"--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir, "--protected-mode", "no",
		"--repl-diskless-sync-delay", "0"} // a replica syncs at once, not after 5 s
	if len(r.extra) > 0 && r.extra[0] == "--sentinel" {
		args = append([]string{filepath.Join(r.dir, "sentinel.conf")}, r.extra...)
	} else {
		args = append(append(port, args...), r.extra...)
	}
	r.cmd = exec.Command(r.bin, args...)
	out, _ := r.cmd.StdoutPipe()
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), r.ready) {
				close(ready)
				break
			}
		}
		for sc.Scan() { // keep draining so the server never blocks on its log
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		r.t.Fatalf("redis-server %v did not start (no %q in its log)", r.extra, r.ready)
	}
}

// Stop kills the server.
func (r *Redis) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		r.cmd = nil
	}
}

// redisPorts are the ports this process's Redis servers were given.
var redisPorts = struct {
	sync.Mutex
	used map[int]bool
}{used: map[int]bool{}}

// redisPort picks a free port for a Redis below the kernel's ephemeral range (32768 and up by
// default) and below the range the e2e tests give daemons (10000-32000): a test that stops and
// restarts its Redis on the same port must not find it taken by another test's client socket.
func redisPort(t testing.TB) int {
	t.Helper()
	redisPorts.Lock()
	defer redisPorts.Unlock()
	for range 100 {
		p := 5000 + rand.IntN(5000)
		if redisPorts.used[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		redisPorts.used[p] = true
		return p
	}
	t.Fatal("no free port for redis")
	return 0
}

// Restart starts a stopped server again on its port and data, ready once it accepts connections
// (a replica does not wait for its sync, nor a primary that the sentinels will demote).
func (r *Redis) Restart() {
	r.t.Helper()
	ready := r.ready
	if !strings.HasPrefix(ready, "+monitor") {
		r.ready = "Ready to accept connections"
	}
	r.Start()
	r.ready = ready
}

// Lose kills the server and starts it again without its data, as a Redis that kept none (no
// appendonly) or whose disk was replaced: everything it acknowledged is gone.
func (r *Redis) Lose() {
	r.t.Helper()
	r.Stop()
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "sentinel.conf" {
			if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
				r.t.Fatal(err)
			}
		}
	}
	r.Restart()
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

// StartReplica starts a replica of primary, ready once its first sync has finished; killed when
// the test ends.
func StartReplica(t testing.TB, primary *Redis) *Redis {
	t.Helper()
	port := redisPort(t)
	r := &Redis{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), t: t, bin: primary.bin, port: port, dir: t.TempDir(),
		extra: []string{"--replicaof", "127.0.0.1", fmt.Sprint(primary.port)}, ready: "MASTER <-> REPLICA sync: Finished with success"}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// StartSentinel starts a sentinel that monitors primary under name with quorum, declaring it down
// after one second; killed when the test ends.
func StartSentinel(t testing.TB, primary *Redis, name string, quorum int) *Redis {
	t.Helper()
	port := redisPort(t)
	r := &Redis{t: t, bin: primary.bin, port: port, dir: t.TempDir(), extra: []string{"--sentinel"}, ready: "+monitor master " + name}
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n"+
		"sentinel monitor %s 127.0.0.1 %d %d\nsentinel down-after-milliseconds %s 1000\n"+
		"sentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1\n",
		port, r.dir, name, primary.port, quorum, name, name, name)
	if err := os.WriteFile(filepath.Join(r.dir, "sentinel.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// MasterAddr asks a sentinel for the address of the primary it knows under name ("" if none).
func MasterAddr(t testing.TB, sentinel, name string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", sentinel, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	fmt.Fprintf(c, "SENTINEL get-master-addr-by-name %s\r\n", name)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	var parts []string
	for range 5 {
		l, err := r.ReadString('\n')
		if err != nil {
			break
		}
		if l = strings.TrimSpace(l); !strings.HasPrefix(l, "*") && !strings.HasPrefix(l, "$") {
			parts = append(parts, l)
		}
	}
	if len(parts) != 2 {
		return ""
	}
	return parts[0] + ":" + parts[1]
}
