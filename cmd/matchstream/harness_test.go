package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
)

// The end-to-end tests run the real binary, built once by TestMain, on loopback ports.
var binary string

func TestMain(m *testing.M) {
	// These tests wait on processes, sockets and timers far more than they compute: four at a time
	// rather than one per core, unless -parallel was given.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", "4")
	}
	dir, err := os.MkdirTemp("", "matchstream-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "matchstream")
	// With the bench baselines: TestBenchSpawn runs them beside the daemon.
	build := exec.Command("go", "build", "-race", "-tags", "baselines", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// handedOut are the ports freePorts gave to a test of this run: the tests run in parallel, and a
// port one test checked free must not be given to another before its daemon binds it.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freePorts finds n consecutive free loopback ports (for a --stream range) plus one for the API.
// They are below the kernel's ephemeral range (32768 and up by default), so no client socket of a
// parallel test takes one between the check and the daemon's bind.
func freePorts(t *testing.T, n int) (api int, stream []int) {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		base := 10000 + rand.IntN(22000-n)
		taken := false
		for p := base; p <= base+n; p++ {
			taken = taken || handedOut.ports[p]
		}
		if taken {
			continue
		}
		var lns []net.Listener
		ok := true
		for p := base; p <= base+n; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			for p := base; p <= base+n; p++ {
				handedOut.ports[p] = true
				if p > base {
					stream = append(stream, p)
				}
			}
			return base, stream
		}
	}
	t.Fatal("no free ports")
	return 0, nil
}

// daemonProc is one `matchstream serve` process.
type daemonProc struct {
	t        *testing.T
	cmd      *exec.Cmd
	stateDir string
	apiPort  int
	stream   []int
	log      *syncBuffer
	args     []string
	exited   chan struct{}
	// cert, when set, is the daemon's certificate: its API speaks HTTPS, and hc trusts it.
	cert *daemontest.Cert
	hc   *http.Client
}

type syncBuffer = daemontest.SyncBuffer

func startDaemon(t *testing.T, stateDir string, extra ...string) *daemonProc {
	t.Helper()
	return startDaemonCert(t, stateDir, nil, extra...)
}

// startDaemonCert is startDaemon with a certificate: the last of its four stream ports is a TLS
// port (d.stream keeps the plain ones) and the API speaks HTTPS.
func startDaemonCert(t *testing.T, stateDir string, cert *daemontest.Cert, extra ...string) *daemonProc {
	t.Helper()
	api, stream := freePorts(t, 4)
	d := &daemonProc{t: t, stateDir: stateDir, apiPort: api, stream: stream, log: &syncBuffer{}, cert: cert, hc: http.DefaultClient}
	ports := fmt.Sprintf("127.0.0.1:%d-%d", stream[0], stream[len(stream)-1])
	var tlsArgs []string
	if cert != nil {
		ports = fmt.Sprintf("127.0.0.1:%d-%d", stream[0], stream[len(stream)-2])
		tlsArgs = []string{"--stream-tls", fmt.Sprintf("127.0.0.1:%d", stream[len(stream)-1]),
			"--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile}
		d.stream = stream[:len(stream)-1]
		d.hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cert.ClientConfig()}}
	}
	d.args = append(append([]string{"serve", "--config", "/dev/null", "--state-dir", stateDir,
		"--api", fmt.Sprintf("127.0.0.1:%d", api), "--stream", ports, "--log-level", "debug"}, tlsArgs...), extra...)
	d.start()
	return d
}

func (d *daemonProc) start() {
	d.t.Helper()
	d.cmd = exec.Command(binary, d.args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	d.t.Cleanup(d.kill)
	waitUntil(d.t, "daemon healthy", 20*time.Second, func() bool {
		select {
		case <-d.exited:
			d.t.Fatalf("daemon exited:\n%s", d.log.String())
		default:
		}
		resp, err := d.hc.Get(d.url("/healthz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (d *daemonProc) kill() {
	if d.cmd.Process != nil {
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemonProc) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		d.t.Fatalf("daemon did not stop on SIGTERM:\n%s", d.log.String())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		d.t.Fatalf("daemon exited %d on SIGTERM:\n%s", code, d.log.String())
	}
}

func (d *daemonProc) url(path string) string {
	scheme := "http"
	if d.cert != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, d.apiPort, path)
}

func (d *daemonProc) apiURL() string { return d.url("") }

func (d *daemonProc) token() string {
	b, err := os.ReadFile(filepath.Join(d.stateDir, "watcher.token"))
	if err != nil {
		d.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (d *daemonProc) getJSON(path string, v any) int {
	d.t.Helper()
	return daemontest.GetJSONWith(d.t, d.hc, d.url(path), v)
}

// subscribers is the subscriber count of a match from GET /matches.
func (d *daemonProc) subscribers(id string) int {
	var list []struct {
		ID          string `json:"id"`
		Subscribers int    `json:"subscribers"`
	}
	d.getJSON("/matches", &list)
	for _, m := range list {
		if m.ID == id {
			return m.Subscribers
		}
	}
	return -1
}

// metrics reads GET /metrics into name{labels} → value.
func (d *daemonProc) metrics() map[string]float64 {
	d.t.Helper()
	return daemontest.FetchMetrics(d.t, d.url("/metrics"))
}

// run runs the binary with args and returns its combined output; the test fails unless it exits
// with wantCode.
func run(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("matchstream %v: %v", args, err)
	}
	if code != wantCode {
		t.Fatalf("matchstream %s: exit %d, want %d:\n%s", strings.Join(args, " "), code, wantCode, out)
	}
	return string(out)
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
