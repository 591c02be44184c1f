package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"matchstream/daemon/certs"
	"matchstream/daemon/listen"
)

// spawned is a daemon started for the run, on free loopback ports with a temporary state dir.
type spawned struct {
	api, token string
	stream     []string
	streamTLS  []string // with TLS: its TLS stream ports, and the CA file that trusts its certificate
	caFile     string
	pid        int
	cmd        *exec.Cmd
	done       chan struct{} // closed once the daemon has exited (and been waited for)
	dir        string
}

// spawnDaemon starts a daemon for the bench on free loopback ports. A port checked free can still
// be taken before the daemon binds it (another process's connection): a daemon that exits before
// it is healthy is started again on other ports, up to three times.
func spawnDaemon(ctx context.Context, withTLS bool) (*spawned, error) {
	var err error
	for range 3 {
		var s *spawned
		var exited bool
		if s, exited, err = spawnOnce(ctx, withTLS); err == nil || !exited {
			return s, err
		}
	}
	return nil, err
}

// spawnedPorts is how many stream ports a spawned daemon listens on; the floor and naive baselines
// listen on as many, so their clients are spread over as many ports (on one port, the kernel's
// search for a free source port of 19,000 loopback connects took seconds and slowed their connects).
const spawnedPorts = 4

func spawnOnce(ctx context.Context, withTLS bool) (_ *spawned, exited bool, _ error) {
	exe, err := selfExe()
	if err != nil {
		return nil, false, err
	}
	dir, err := os.MkdirTemp("", "matchstream-bench-")
	if err != nil {
		return nil, false, err
	}
	n := 1 + spawnedPorts
	if withTLS {
		n += spawnedPorts
	}
	_, addrs, err := freeRange(n)
	if err != nil {
		return nil, false, err
	}
	api, stream := addrs[0], addrs[1:1+spawnedPorts]
	rng := func(as []string) string { return fmt.Sprintf("%s-%d", as[0], portOf(as[len(as)-1])) }
	args := []string{"serve", "--config", "/dev/null", "--state-dir", dir, "--api", api,
		"--stream", rng(stream), "--log-level", "error", "--handshake-timeout", "30s"}
	var streamTLS []string
	var caFile string
	if withTLS {
		// The API stays plain (on loopback): the run measures the stream ports, not the posts.
		streamTLS = addrs[1+spawnedPorts:]
		certFile, keyFile, err := certs.SelfSigned(dir, []string{"127.0.0.1"}, 24*time.Hour)
		if err != nil {
			return nil, false, err
		}
		caFile = certFile
		args = append(args, "--stream-tls", rng(streamTLS), "--tls-cert", certFile, "--tls-key", keyFile, "--api-tls=false")
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, false, err
	}
	done := make(chan struct{})
	s := &spawned{api: "http://" + api, stream: stream, streamTLS: streamTLS, caFile: caFile, pid: cmd.Process.Pid, cmd: cmd, dir: dir, done: done}
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r, err := http.Get(s.api + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				break
			}
		}
		select {
		case <-done:
			os.RemoveAll(dir)
			return nil, true, fmt.Errorf("spawned daemon exited before it was healthy (%s)", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, false, fmt.Errorf("spawned daemon not healthy within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "watcher.token"))
	if err != nil {
		s.stop()
		return nil, false, err
	}
	s.token = strings.TrimSpace(string(tok))
	return s, false, nil
}

func portOf(addr string) int {
	p, _ := strconv.Atoi(addr[strings.LastIndex(addr, ":")+1:])
	return p
}

func (s *spawned) stop() {
	s.cmd.Process.Signal(os.Interrupt)
	<-s.done
	os.RemoveAll(s.dir)
}

// freeRange finds n consecutive free loopback ports, as a range and as addresses. They are taken
// below the kernel's ephemeral range (net.ipv4.ip_local_port_range), where the bench's own client
// sockets, and every other process's, get their ports: one of those could otherwise take a port
// between this check and the daemon's bind.
func freeRange(n int) (string, []string, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 2048+n {
				low = v
			}
		}
	}
	for range 100 {
		base := 1024 + rand.IntN(low-1024-n)
		rng := fmt.Sprintf("127.0.0.1:%d-%d", base, base+n-1)
		addrs, _ := listen.ParseRange(rng)
		free := true
		for _, a := range addrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return rng, addrs, nil
		}
	}
	return "", nil, errors.New("no free range of loopback ports below the ephemeral range")
}
