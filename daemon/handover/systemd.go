package handover

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Notifier speaks sd_notify(3) on one socket: the service manager's (NOTIFY_SOCKET, read once by
// the CLI and passed down), or a predecessor's that waits for READY=1. The zero Notifier is a
// process not run by systemd: every message is dropped. go-systemd's SdNotify reads the socket
// from the environment on each call, which would make it process-wide state; and it cannot send
// descriptors, which the fd store needs.
type Notifier struct {
	Socket string
}

// Enabled reports whether messages go anywhere.
func (n Notifier) Enabled() bool { return n.Socket != "" }

// Notify sends state ("READY=1", "STATUS=...", "WATCHDOG=1"), with fds attached if any.
func (n Notifier) Notify(state string, fds ...int) error {
	if n.Socket == "" {
		return nil
	}
	addr := n.Socket
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract socket
	}
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	defer unix.Close(sock)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(sock, []byte(state), oob, &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		return fmt.Errorf("notify: send to %s: %w", n.Socket, err)
	}
	return nil
}

// Store gives the parcel to systemd's fd store (the service needs FileDescriptorStoreMax= ≥ 1),
// which hands it to the next start of the service. FDPOLL=0: systemd would otherwise drop the
// parcel at once, as its sending end is closed (POLLHUP). It returns false, nil when not run by
// systemd.
func (n Notifier) Store(parcel *os.File) (bool, error) {
	if !n.Enabled() {
		return false, nil
	}
	rc, err := parcel.SyscallConn()
	if err != nil {
		return false, fmt.Errorf("fd store: %w", err)
	}
	cerr := rc.Control(func(fd uintptr) {
		err = n.Notify("FDSTORE=1\nFDNAME="+FDName+"\nFDPOLL=0", int(fd))
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("fd store: %w", err)
	}
	return true, nil
}
