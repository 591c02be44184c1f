package handover

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EnvSuccessor marks a process started by Spawn: its NOTIFY_SOCKET is the predecessor's, which
// waits for READY=1 only, and must be forgotten after it.
const EnvSuccessor = "MATCHSTREAM_SUCCESSOR"

// Inherit is a descriptor the successor is started with, and its LISTEN_FDNAMES name.
type Inherit struct {
	Conn syscall.Conn
	Name string
}

// Spawn starts this binary again with the same arguments, as socket activation would: the
// descriptors in LISTEN_FDS, named in LISTEN_FDNAMES, and a NOTIFY_SOCKET of our own on which it
// reports READY=1. It returns once the successor is ready, or fails if the successor exits or is
// not ready within timeout (this process then goes on serving).
//
// /bin/sh sets LISTEN_PID to its own pid and execs the binary, which keeps that pid: Go cannot
// change the environment between fork and exec. The descriptors go through syscall.ForkExec as
// numbers: os/exec would call File.Fd(), which switches the shared sockets to blocking mode.
func Spawn(fds []Inherit, timeout time.Duration, log *slog.Logger) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("successor: %w", err)
	}
	raw := make([]byte, 8)
	rand.Read(raw)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "@matchstream-successor-" + hex.EncodeToString(raw), Net: "unixgram"})
	if err != nil {
		return 0, fmt.Errorf("successor: notify socket: %w", err)
	}
	defer notify.Close()

	files := []uintptr{0, 1, 2}
	var names []string
	for _, f := range fds {
		rc, err := f.Conn.SyscallConn()
		if err == nil {
			err = rc.Control(func(fd uintptr) { files = append(files, fd); names = append(names, f.Name) })
		}
		if err != nil {
			return 0, fmt.Errorf("successor: %w", err)
		}
	}
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", EnvSuccessor:
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LISTEN_FDS="+strconv.Itoa(len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"),
		"NOTIFY_SOCKET="+notify.LocalAddr().String(), EnvSuccessor+"=1")
	argv := append([]string{"/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, exe}, os.Args[1:]...)
	pid, err := syscall.ForkExec("/bin/sh", argv, &syscall.ProcAttr{Env: env, Files: files})
	if err != nil {
		return 0, fmt.Errorf("successor: start %s: %w", exe, err)
	}
	log.Info("hand-over: successor started", "pid", pid)

	exited := make(chan error, 1)
	go func() {
		proc, _ := os.FindProcess(pid)
		st, err := proc.Wait() // reaps it if it dies; after we exit it is init's child
		if err == nil {
			err = errors.New(st.String())
		}
		exited <- err
	}()
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				return // notify is closed when Spawn returns
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == "READY=1" {
					close(ready)
					return
				}
			}
		}
	}()
	select {
	case <-ready:
		return pid, nil
	case err := <-exited:
		return 0, fmt.Errorf("successor %d exited before it was ready: %v", pid, err)
	case <-time.After(timeout):
		syscall.Kill(pid, syscall.SIGKILL)
		return 0, fmt.Errorf("successor %d not ready within %s: killed", pid, timeout)
	}
}
