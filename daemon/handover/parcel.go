// Package handover moves established client connections from a daemon to its successor, so a
// planned restart or upgrade drops nobody.
//
// The connections travel as one "parcel": the receiving end of a Unix stream socket pair whose
// queue holds every connection's file descriptor (SCM_RIGHTS, 253 per message, the kernel's cap)
// and, first of all, a memfd describing them (match, protocol version, last seq sent, or the
// unfinished connect line) in the same order. The parcel is a single descriptor, so it fits where
// one descriptor can go: systemd's fd store (FDSTORE=1, FDNAME=handover, FDPOLL=0) across
// `systemctl restart`, or the successor's LISTEN_FDS when serve hands over on SIGUSR2.
//
// Why not one fd-store entry per connection, named after its state, as systemd's documentation
// suggests: systemd passes every stored name back in LISTEN_FDNAMES, one environment string, and
// Linux refuses an exec whose single environment string passes 128 KiB (MAX_ARG_STRLEN). With
// names of 30 bytes that is about 4,000 connections; the service would then fail to start at all.
// The parcel's size is bounded only by kernel memory.
//
// The vocabulary: a hand-over gives the clients (and, to a successor, the listeners) to the next
// process; the parcel carries them; the successor is a process this one starts (SIGUSR2); the fd
// store is systemd's, which keeps the parcel across `systemctl restart`. Files: parcel.go (Pack,
// Unpack), systemd.go (sd_notify and the fd store), successor.go (Spawn), release.go (a bolt store
// given up for the successor), give.go (the steps: Give, ToSystemd, ToSuccessor). The stream layer
// is the Source: it freezes, detaches and adopts connections (daemon/stream/handover.go).
package handover

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"matchstream/daemon/tlsrecord"
)

// FDName is the name of the parcel among the descriptors a daemon is started with.
const FDName = "handover"

// maxFDs is the most descriptors one sendmsg(2) may carry (SCM_MAX_FD).
const maxFDs = 253

// header starts the memfd; a successor refuses a parcel of another format.
const header = "matchstream-handover 1\n"

// Conn is one client connection in a parcel. A subscribed client has Match, Version and Seq (the
// last event it was sent; 0: only the status); one still in its handshake has Pending, the bytes of
// its connect line received so far.
type Conn struct {
	FD      int    `json:"-"`
	Match   string `json:"m,omitempty"`
	Version int    `json:"v,omitempty"`
	Seq     uint64 `json:"s,omitempty"`
	Pending []byte `json:"p,omitempty"`
	// TLS is the record state of a connection on a TLS port: its traffic secrets and sequence
	// numbers. The parcel is a socket between two processes of the same service on one host, which
	// could read each other's memory anyway.
	TLS *tlsrecord.Snapshot `json:"t,omitempty"`
}

// Pack puts conns into a new parcel and returns it with the number of connections it holds: the
// first n of conns, in order. Fewer than all fit when the kernel will not queue more (the socket
// buffer is raised as far as it allows first); the caller treats the rest as not handed over. The
// caller's own descriptors stay open: closing them later does not close the connections, which
// the parcel now also holds, so nothing reaches the clients.
func Pack(conns []Conn) (parcel *os.File, n int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("handover: socketpair: %w", err)
	}
	send, recv := fds[0], fds[1]
	defer unix.Close(send)
	ok := false
	defer func() {
		if !ok {
			unix.Close(recv)
		}
	}()
	// Everything queued is charged to the sending socket until the successor reads it; nobody
	// reads before we are done, so the buffer is the limit. SO_SNDBUFFORCE works for root only.
	for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF} {
		if unix.SetsockoptInt(send, unix.SOL_SOCKET, opt, 1<<30) == nil {
			break
		}
	}
	if err := unix.SetNonblock(send, true); err != nil {
		return nil, 0, fmt.Errorf("handover: %w", err)
	}
	mfd, err := unix.MemfdCreate("matchstream-handover", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, 0, fmt.Errorf("handover: memfd: %w", err)
	}
	meta := os.NewFile(uintptr(mfd), "matchstream-handover")
	defer meta.Close()
	// The memfd goes first; what it says is written after the connections are queued, because
	// only then is it known how many were.
	if err := sendFDs(send, []int{mfd}); err != nil {
		return nil, 0, fmt.Errorf("handover: %w", err)
	}
	batch := make([]int, 0, maxFDs)
	for n < len(conns) {
		batch = batch[:0]
		for _, c := range conns[n:min(n+maxFDs, len(conns))] {
			batch = append(batch, c.FD)
		}
		if err := sendFDs(send, batch); err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ETOOMANYREFS) {
				break // full: the rest are not handed over
			}
			return nil, 0, fmt.Errorf("handover: %w", err)
		}
		n += len(batch)
	}
	w := bufio.NewWriterSize(meta, 1<<16)
	w.WriteString(header)
	enc := json.NewEncoder(w)
	for _, c := range conns[:n] {
		if err := enc.Encode(c); err != nil {
			return nil, 0, fmt.Errorf("handover: write state: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return nil, 0, fmt.Errorf("handover: write state: %w", err)
	}
	ok = true
	return os.NewFile(uintptr(recv), FDName), n, nil
}

// sendFDs queues one byte carrying fds.
func sendFDs(sock int, fds []int) error {
	for {
		err := unix.Sendmsg(sock, []byte{0}, unix.UnixRights(fds...), nil, unix.MSG_DONTWAIT)
		if err != unix.EINTR {
			return err
		}
	}
}

// Unpack takes every connection out of a parcel, with its descriptor (close-on-exec, in blocking
// mode as sent; the caller sets what it needs). It closes the parcel. On error, the descriptors
// already received are closed.
func Unpack(parcel *os.File) (conns []Conn, err error) {
	defer parcel.Close()
	rc, err := parcel.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	var fds []int
	var rerr error
	cerr := rc.Control(func(sock uintptr) { fds, rerr = receiveAll(int(sock)) })
	if rerr == nil {
		rerr = cerr
	}
	defer func() {
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}()
	if rerr != nil {
		return nil, fmt.Errorf("handover: receive: %w", rerr)
	}
	if len(fds) == 0 {
		return nil, errors.New("handover: the parcel is empty")
	}
	meta := os.NewFile(uintptr(fds[0]), "matchstream-handover")
	fds = fds[1:]
	defer meta.Close()
	if _, err := meta.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("handover: state: %w", err)
	}
	r := bufio.NewReaderSize(meta, 1<<16)
	if h, err := r.ReadString('\n'); err != nil || h != header {
		return nil, fmt.Errorf("handover: state: not a parcel of this version (header %q)", h)
	}
	dec := json.NewDecoder(r)
	for {
		var c Conn
		if err := dec.Decode(&c); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("handover: state of connection %d: %w", len(conns), err)
		}
		conns = append(conns, c)
	}
	if len(conns) != len(fds) {
		return nil, fmt.Errorf("handover: the state lists %d connections but %d arrived", len(conns), len(fds))
	}
	for i := range conns {
		conns[i].FD = fds[i]
	}
	return conns, nil
}

// receiveAll reads the parcel to its end and returns every descriptor in order.
func receiveAll(sock int) ([]int, error) {
	var fds []int
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	for {
		n, oobn, flags, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fds, err
		}
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return fds, perr
		}
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err != nil {
				return fds, err
			}
			fds = append(fds, got...)
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return fds, errors.New("descriptors were dropped (MSG_CTRUNC): is the open-files limit large enough?")
		}
		if n == 0 && oobn == 0 {
			return fds, nil // the sender's end is closed and the queue is empty
		}
	}
}

// Unstored is the message that takes the parcel out of systemd's fd store once it was unpacked,
// so a later stop and start does not find it again.
const Unstored = "FDSTOREREMOVE=1\nFDNAME=" + FDName
