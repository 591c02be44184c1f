package stream

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Every client socket and listener is non-blocking, so its read(2), write(2), writev(2) and
// accept4(2) never wait: they are made as raw system calls, without telling the Go scheduler, as is
// a poll of epoll that does not wait. unix.Read and unix.Write announce
// each call as one that may block; with both cores writing, the runtime's monitor then kept taking
// the writers' processors away mid-call and handing them to new threads (a CPU profile of a
// 15,000-client fan-out had 7% of the daemon's time in those switches and the monitor's wake-ups).

// rawRead is read(2) on a non-blocking fd.
func rawRead(fd int, b []byte) (int, error) { return rawIO(unix.SYS_READ, fd, b) }

// rawWrite is write(2) on a non-blocking fd.
func rawWrite(fd int, b []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, b) }

func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// maxIov is IOV_MAX: writev(2) takes at most this many buffers.
const maxIov = 1024

// rawWritev is writev(2) on a non-blocking fd, of at most maxIov of bufs; one buffer is a write(2).
// A batch of a few frames builds its iovec array on the stack.
func rawWritev(fd int, bufs [][]byte) (int, error) {
	if len(bufs) == 1 {
		return rawWrite(fd, bufs[0])
	}
	bufs = bufs[:min(len(bufs), maxIov)]
	var small [8]unix.Iovec
	iov := small[:0]
	if len(bufs) > len(small) {
		iov = make([]unix.Iovec, 0, len(bufs))
	}
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	if len(iov) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawAccept is accept4(2) on a non-blocking listener, without the peer's address.
func rawAccept(lfd int) (int, error) {
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// pollNow is epoll_wait(2) that does not wait: the events ready now, if any. A poller that finds
// more work this way after a batch keeps its processor; one that blocks in epoll_wait gives it up
// and, woken, has to get one back (in a connect burst, a thread switch per batch).
func pollNow(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
