//go:build baselines

package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The NATS baseline: the peer people would pick. nats-server (built from the Go module proxy at
// the version the Makefile pins, into bin/, or found on PATH) runs for the run; the same clients
// speak its text protocol (CONNECT, SUB to one subject) and each event is one PUB whose payload
// carries the stamp. The server's PINGs are turned off for the run, as our clients do not answer
// them.

const natsSubject = "matchstream.bench"

// natsSubscribeLine is what a benchmark client sends: CONNECT, then SUB to the subject.
func natsSubscribeLine(int) string {
	return "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB " + natsSubject + " 1\r\n"
}

func natsPublish(payload string) []byte {
	return []byte("PUB " + natsSubject + " " + strconv.Itoa(len(payload)) + "\r\n" + payload + "\r\n")
}

// natsServer finds nats-server: bin/nats-server beside this binary (make nats-server), then PATH.
func natsServer() (string, error) {
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "nats-server"); fileExists(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("nats-server not found beside this binary or on PATH (make nats-server builds it into bin/)")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func runNATS(ctx context.Context, cfg *Config) (*Figures, error) {
	exe, err := natsServer()
	if err != nil {
		return nil, err
	}
	b, addr, err := startBroker(ctx, "nats-server", exe, func(addr string) string {
		return fmt.Sprintf("listen: %s\nping_interval: \"1h\"\nmax_connections: 1000000\n", addr)
	}, func(conf string) []string { return []string{"-c", conf} })
	if err != nil {
		return nil, err
	}
	defer b.stop()
	r := bufio.NewReader(b.pub)
	if info, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(info, "INFO ") {
		return nil, fmt.Errorf("nats-server: no INFO from it: %q %v", info, err)
	}
	b.pub.Write([]byte("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n"))
	go func() { // answer the server's PINGs on the publisher, in case; drop the rest
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(l, "PING") {
				b.pub.Write([]byte("PONG\r\n"))
			}
		}
	}()
	publish := func(payload string) error { _, err := b.pub.Write(natsPublish(payload)); return err }
	var fl *fleet
	event := func() error { return publish(stampPrefix + strconv.FormatInt(time.Now().UnixNano(), 10) + "\n") }
	return measureWith(ctx, cfg, "nats", []string{addr}, b.cmd.Process.Pid, natsSubscribeLine, &fl,
		settleByMarker("nats", publish, &fl), event)
}
