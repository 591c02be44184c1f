//go:build baselines

package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"matchstream/daemon/certs"
)

// The NATS baseline: the peer people would pick. nats-server (built from the Go module proxy at
// the version the Makefile pins, into bin/, or found on PATH) runs for the run; the same clients
// speak its text protocol (CONNECT, SUB to one subject) and each event is one PUB whose payload
// carries the stamp. The server's PINGs are turned off for the run, as our clients do not answer
// them. With TLS (the nats-tls baseline) the server has a self-signed certificate and
// handshake_first, so its clients start with the TLS handshake, as ours do on a TLS port.

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

func runNATS(ctx context.Context, cfg *Config, withTLS bool) (*Figures, error) {
	exe, err := natsServer()
	if err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	tlsConf := ""
	if withTLS {
		dir, err := os.MkdirTemp("", "matchstream-nats-tls-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		certFile, keyFile, err := certs.SelfSigned(dir, []string{"127.0.0.1"}, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		if tlsCfg, err = ClientTLS(certFile); err != nil {
			return nil, err
		}
		tlsConf = fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n  handshake_first: true\n  timeout: 10\n}\n", certFile, keyFile)
	}
	b, addr, err := startBroker(ctx, "nats-server", exe, func(addr string) string {
		return fmt.Sprintf("listen: %s\nping_interval: \"1h\"\nmax_connections: 1000000\n%s", addr, tlsConf)
	}, func(conf string) []string { return []string{"-c", conf} })
	if err != nil {
		return nil, err
	}
	defer b.stop()
	if tlsCfg != nil {
		tc := tls.Client(b.pub, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("nats-server: tls handshake: %w", err)
		}
		b.pub = tc
	}
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
	name := "nats"
	if withTLS {
		name = "nats-tls"
	}
	return measureWith(ctx, cfg, name, []string{addr}, b.cmd.Process.Pid, natsSubscribeLine, tlsCfg, &fl,
		settleByMarker("nats", publish, &fl), event)
}
