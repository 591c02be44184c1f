package handover

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Source is what holds the clients: the stream layer. Handover freezes it and returns every
// client that can travel, and release, to be called once with how many of them (a prefix) the
// receiver now holds; the rest are served again.
type Source interface {
	Handover(ctx context.Context) (conns []Conn, release func(handed int))
}

// Give detaches the clients, packs them into a parcel and gives it away with give, waiting at most
// drain for the clients' queues to empty first. It returns how many the receiver now holds. On any
// failure the clients are taken back and served here.
func Give(src Source, drain time.Duration, give func(*os.File) error, log *slog.Logger) (int, error) {
	t0 := time.Now()
	log.Info("hand-over: freezing: posts get 503 until the next process serves")
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	conns, release := src.Handover(ctx)
	cancel()
	parcel, n, err := Pack(conns)
	if err == nil {
		log.Info("hand-over: clients packed", "clients", n, "took", time.Since(t0).Round(time.Millisecond))
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

// ToSystemd leaves the clients in systemd's fd store for the next start of the service (SIGTERM
// with --keep-clients). If that fails they stay here and get the shutdown notice.
func ToSystemd(src Source, n Notifier, drain time.Duration, log *slog.Logger) {
	handed, err := Give(src, drain, func(p *os.File) error {
		_, err := n.Store(p)
		return err
	}, log)
	if err != nil {
		log.Error("hand-over to systemd's fd store failed: clients are told the server stops", "err", err)
		return
	}
	log.Info("hand-over: clients left in systemd's fd store for the next start", "clients", handed)
}

// ToSuccessor starts a successor process and gives it fds (the listeners) and the clients
// (SIGUSR2). A releasable store (rel, may be nil) is released for it first, and taken back if it
// fails; then the error says why and this process must go on serving.
func ToSuccessor(src Source, fds []Inherit, rel *Releasable, drain time.Duration, log *slog.Logger) error {
	var pid int
	handed, err := Give(src, drain, func(p *os.File) error {
		if rel != nil {
			if err := rel.Release(); err != nil {
				return err
			}
		}
		var err error
		if pid, err = Spawn(append(fds, Inherit{Conn: p, Name: FDName}), time.Minute, log); err != nil && rel != nil {
			if rerr := rel.Reacquire(); rerr != nil {
				return fmt.Errorf("%w; and reopening the store failed: %w", err, rerr)
			}
		}
		return err
	}, log)
	if err != nil {
		return err
	}
	log.Info("hand-over: the successor serves now", "pid", pid, "clients", handed)
	return nil
}
