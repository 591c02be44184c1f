//go:build baselines

package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// broker is a third-party server (mosquitto, nats-server) started for a baseline run from a
// config file in a directory of its own, with the bench's publishing connection to it.
type broker struct {
	cmd *exec.Cmd
	dir string
	pub net.Conn
}

// startBroker writes conf (from the free address it is given) into a temporary directory, starts
// exe with it as args name and dials addr until the broker answers.
func startBroker(ctx context.Context, name, exe string, conf func(addr string) string, args func(confPath string) []string) (*broker, string, error) {
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp("", "matchstream-"+name+"-")
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf(addr)), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	b := &broker{cmd: exec.CommandContext(ctx, exe, args(path)...), dir: dir}
	if err := b.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b.pub, err = net.Dial("tcp", addr); err == nil {
			return b, addr, nil
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, "", fmt.Errorf("%s did not start: %w", name, err)
		}
	}
}

func (b *broker) stop() {
	if b.pub != nil {
		b.pub.Close()
	}
	b.cmd.Process.Kill()
	b.cmd.Wait()
	os.RemoveAll(b.dir)
}

// settleByMarker is the readiness check of a broker whose subscriptions are asynchronous: it
// publishes the ready marker until every client of *fl has one.
func settleByMarker(name string, publish func(payload string) error, fl **fleet) func(int) error {
	return func(int) error {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			if err := publish(readyMarker); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if (*fl).allReady(2 * time.Second) {
				return nil
			}
		}
		return fmt.Errorf("%s: not every client subscribed within 30s", name)
	}
}
