package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"matchstream/daemon/handover"
	"matchstream/daemon/listen"
	"matchstream/daemon/match"
	"matchstream/daemon/store"
	"matchstream/daemon/stream"
)

// envSuccessor marks a process started by spawnSuccessor: its NOTIFY_SOCKET is the predecessor's.
const envSuccessor = "MATCHSTREAM_SUCCESSOR"

// handOver detaches the clients, packs them and gives the parcel away with give; it returns how
// many the receiver now holds. On any failure the clients are taken back and served here.
func handOver(streams *stream.Server, drain time.Duration, give func(*os.File) error, log *slog.Logger) (int, error) {
	t0 := time.Now()
	log.Info("hand-over: freezing: posts get 503 until the next process serves")
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	conns, release := streams.Handover(ctx)
	cancel()
	parcel, n, err := handover.Pack(conns)
	if err == nil {
		log.Info("hand-over: clients packed", "clients", n, "took", time.Since(t0).Round(time.Millisecond))
	}
	if err == nil {
		err = give(parcel)
		parcel.Close()
	}
	if err != nil {
		release(0)
		return 0, err
	}
	if n < len(conns) {
		log.Warn("hand-over: the kernel took only part of the clients; the rest are told the server stops",
			"handed", n, "clients", len(conns), "hint", "raise net.core.wmem_max")
	}
	release(n)
	return n, nil
}

// handOverToSystemd leaves the clients in systemd's fd store for the next start of the service
// (SIGTERM with --keep-clients). If that fails they stay here and get the shutdown notice.
func handOverToSystemd(streams *stream.Server, drain time.Duration, log *slog.Logger) {
	n, err := handOver(streams, drain, func(p *os.File) error {
		_, err := handover.Store(p)
		return err
	}, log)
	if err != nil {
		log.Error("hand-over to systemd's fd store failed: clients are told the server stops", "err", err)
		return
	}
	log.Info("hand-over: clients left in systemd's fd store for the next start", "clients", n)
}

// handOverToSuccessor starts a successor process and gives it the listeners and the clients
// (SIGUSR2). A bolt store is released for it first, and taken back if it fails; then the error
// says why and this process must go on serving.
func handOverToSuccessor(streams *stream.Server, lns *listen.Set, rel *releasable, drain time.Duration, log *slog.Logger) error {
	var pid int
	n, err := handOver(streams, drain, func(p *os.File) error {
		if rel != nil {
			if err := rel.Release(); err != nil {
				return err
			}
		}
		var err error
		if pid, err = spawnSuccessor(lns, p, time.Minute, log); err != nil && rel != nil {
			if rerr := rel.Reacquire(); rerr != nil {
				return fmt.Errorf("%w; and reopening the store failed: %w", err, rerr)
			}
		}
		return err
	}, log)
	if err != nil {
		return err
	}
	log.Info("hand-over: the successor serves now", "pid", pid, "clients", n)
	return nil
}

// spawnSuccessor starts this binary again with the same arguments, as socket activation would:
// the listeners and the parcel in LISTEN_FDS, named in LISTEN_FDNAMES, and a NOTIFY_SOCKET of our
// own on which it reports READY=1. It returns once the successor is ready, or fails if the
// successor exits or is not ready within timeout (this process then goes on serving).
//
// /bin/sh sets LISTEN_PID to its own pid and execs the binary, which keeps that pid: Go cannot
// change the environment between fork and exec. The descriptors go through syscall.ForkExec as
// numbers: os/exec would call File.Fd(), which switches the shared sockets to blocking mode.
func spawnSuccessor(lns *listen.Set, parcel *os.File, timeout time.Duration, log *slog.Logger) (int, error) {
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
	add := func(c syscall.Conn, name string) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		return rc.Control(func(fd uintptr) { files = append(files, fd); names = append(names, name) })
	}
	for _, p := range lns.Stream {
		if err := add(p.Listener.(syscall.Conn), listen.FDNameStream); err != nil {
			return 0, fmt.Errorf("successor: %w", err)
		}
	}
	if err := add(lns.API.(syscall.Conn), listen.FDNameAPI); err != nil {
		return 0, fmt.Errorf("successor: %w", err)
	}
	if err := add(parcel, handover.FDName); err != nil {
		return 0, fmt.Errorf("successor: %w", err)
	}
	env := []string{}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LISTEN_FDS="+strconv.Itoa(len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"),
		"NOTIFY_SOCKET="+notify.LocalAddr().String(), envSuccessor+"=1")
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
				return
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

// releasable lets a process give up a store only one process may open (bolt's file lock) while a
// successor takes over, and take it back if the successor fails.
type releasable struct {
	url string
	mu  sync.RWMutex
	s   store.Store // nil while released
}

var errReleased = errors.New("store released to a successor process")

func (r *releasable) get() (store.Store, func(), error) {
	r.mu.RLock()
	if r.s == nil {
		r.mu.RUnlock()
		return nil, nil, errReleased
	}
	return r.s, r.mu.RUnlock, nil
}

func (r *releasable) Append(ctx context.Context, id string, recs []match.Record) error {
	s, done, err := r.get()
	if err != nil {
		return err
	}
	defer done()
	return s.Append(ctx, id, recs)
}

func (r *releasable) Matches(ctx context.Context) ([]string, error) {
	s, done, err := r.get()
	if err != nil {
		return nil, err
	}
	defer done()
	return s.Matches(ctx)
}

func (r *releasable) Events(ctx context.Context, id string, from uint64) ([]match.Record, error) {
	s, done, err := r.get()
	if err != nil {
		return nil, err
	}
	defer done()
	return s.Events(ctx, id, from)
}

func (r *releasable) Ping(ctx context.Context) error {
	s, done, err := r.get()
	if err != nil {
		return err
	}
	defer done()
	return s.Ping(ctx)
}

// Release closes the store so another process can open it.
func (r *releasable) Release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil {
		return nil
	}
	err := r.s.Close()
	r.s = nil
	return err
}

// Reacquire opens the store again after Release.
func (r *releasable) Reacquire() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s != nil {
		return nil
	}
	s, err := OpenStore(r.url)
	if err != nil {
		return err
	}
	r.s = s
	return nil
}

func (r *releasable) Close() error { return r.Release() }
