//go:build baselines

package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Baseline servers, run as a child process (`matchstream bench-baseline`) so their memory is
// measured apart from the bench's clients:
//   - floor: accepts on a thread per CPU with an epoll instance each, reads each client's connect
//     line as soon as it is accepted and answers it with a status line (floorAccept: accepting
//     serially with blocking reads, one client's late line held up the rest of a burst, a floor that
//     flattered the daemon by 2-3x), and for each event writes it to every socket
//     with raw write(2) calls (not announced to the Go scheduler, as the daemon writes), the sockets
//     split over one goroutine per CPU as the daemon splits them (a floor on one core would flatter
//     a daemon that uses them all). Nothing can accept or fan out faster on this kernel.
//   - naive: the goroutine-per-connection server most Go code starts as: each connection has a
//     goroutine blocked reading and a goroutine writing what a channel brings.
// Control protocol on stdin: "EVENT [match]\n" writes one stamped event to every connection (naive:
// of that match, from the connect lines) and answers
// "DONE <ns>\n" on stdout; "COUNT\n" answers "COUNT <accepted>\n"; EOF stops the server.

// ServeBaseline runs a baseline server on ports ports at addr (the daemon's clients are spread
// over its stream ports, and these over as many); it prints "LISTEN <addr>,<addr>..." first.
func ServeBaseline(kind, addr string, ports int, in io.Reader, out io.Writer) error {
	var lns []net.Listener
	var addrs []string
	for range max(1, ports) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		defer ln.Close()
		lns, addrs = append(lns, ln), append(addrs, ln.Addr().String())
		if ports > 1 { // each on a port of its own
			host, _, _ := net.SplitHostPort(addr)
			addr = net.JoinHostPort(host, "0")
		}
	}
	var mu sync.Mutex
	var fds []int                        // floor: raw fds
	var chans []chan []byte              // naive: one channel per connection
	groups := map[string][]chan []byte{} // naive: the channels of each match (from the connect line)
	var keep []net.Conn                  // keeps accepted connections referenced
	if kind == "floor" {
		var lfds []int
		for _, ln := range lns {
			lf, err := ln.(*net.TCPListener).File() // a duplicate of our own, made non-blocking below
			if err != nil {
				return err
			}
			defer lf.Close()
			lfds = append(lfds, int(lf.Fd()))
		}
		if err := floorAccept(lfds, func(fd int) {
			mu.Lock()
			fds = append(fds, fd)
			mu.Unlock()
		}); err != nil {
			return err
		}
	}
	for _, ln := range lns {
		if kind == "floor" {
			break // accepted above
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				keep = append(keep, c)
				ch := make(chan []byte, 16)
				go func() { // reader: blocked in Read, as a naive server is
					r := bufio.NewReader(c)
					line, err := r.ReadString('\n')
					ch <- []byte(`{"kind":"status"}` + "\n") // as a server answers a connect line
					id := ""
					if _, after, ok := strings.Cut(line, ":MATCH:"); ok {
						id, _, _ = strings.Cut(strings.TrimRight(after, "\r\n"), ":")
					}
					mu.Lock()
					chans = append(chans, ch)
					groups[id] = append(groups[id], ch)
					mu.Unlock()
					for err == nil {
						_, err = r.ReadString('\n')
					}
				}()
				go func() { // writer
					for b := range ch {
						if _, err := c.Write(b); err != nil {
							return
						}
					}
				}()
				mu.Unlock()
			}
		}()
	}
	fmt.Fprintf(out, "LISTEN %s\n", strings.Join(addrs, ","))
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case "COUNT":
			mu.Lock()
			n := len(fds)
			if kind != "floor" {
				n = len(chans) // subscribed: its connect line was read
			}
			fmt.Fprintf(out, "COUNT %d\n", n)
			mu.Unlock()
			continue
		}
		cmd, group, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if cmd != "EVENT" {
			continue
		}
		frame := []byte(`{"kind":"comment","comment":"` + stampPrefix + strconv.FormatInt(time.Now().UnixNano(), 10) + `"}` + "\n")
		t0 := time.Now()
		mu.Lock()
		if kind == "floor" {
			workers := runtime.GOMAXPROCS(0)
			size := (len(fds) + workers - 1) / workers
			var wg sync.WaitGroup
			for w := range workers {
				part := fds[min(w*size, len(fds)):min((w+1)*size, len(fds))]
				wg.Go(func() {
					for _, fd := range part {
						writeAll(fd, frame)
					}
				})
			}
			wg.Wait()
		} else {
			targets := chans
			if group != "" {
				targets = groups[group] // mixed load: one match's subscribers
			}
			for _, ch := range targets {
				select {
				case ch <- frame:
				default: // a naive server without a policy would block here; count it as dropped
				}
			}
		}
		mu.Unlock()
		fmt.Fprintf(out, "DONE %d\n", time.Since(t0).Nanoseconds())
	}
	return sc.Err()
}

// writeAll is the floor's write: a raw write(2), which the Go scheduler is not told of (as the
// daemon writes its non-blocking sockets), and a wait in poll(2) in the rare case of a full socket.
func writeAll(fd int, b []byte) {
	for len(b) > 0 {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			b = b[n:]
		case unix.EINTR:
		case unix.EAGAIN:
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, 1000)
		default:
			return
		}
	}
}

// floorAccept serves connects the least costly way an event-driven server can: one thread per CPU,
// each with its own epoll instance sharing the listening socket (EPOLLEXCLUSIVE: one is woken per
// connection), accepting until EAGAIN and reading each connect line as soon as it is accepted (in a
// burst it has arrived by then), so only a client that has not sent it yet costs an epoll
// registration. A client answered with its status line is handed to subscribed.
func floorAccept(lfds []int, subscribed func(fd int)) error {
	listener := map[int]bool{}
	for _, lfd := range lfds {
		if err := unix.SetNonblock(lfd, true); err != nil {
			return err
		}
		listener[lfd] = true
	}
	status := []byte(`{"kind":"status"}` + "\n")
	// answer reads fd's connect line and answers it; false: not all of it has come yet.
	answer := func(fd int) bool {
		var line [256]byte
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&line[0])), uintptr(len(line)))
		switch {
		case e == unix.EAGAIN || e == 0 && n > 0 && bytes.IndexByte(line[:n], '\n') < 0:
			return false // the rest of a split line is not kept: the floor's clients send one segment
		case e != 0 || n == 0:
			unix.Close(fd)
			return true
		}
		writeAll(fd, status)
		subscribed(fd)
		return true
	}
	for range runtime.GOMAXPROCS(0) {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return err
		}
		for _, lfd := range lfds {
			if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, lfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(lfd)}); err != nil {
				return err
			}
		}
		go func() {
			runtime.LockOSThread()
			events := make([]unix.EpollEvent, 256)
			for {
				n, err := unix.EpollWait(ep, events, -1)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return
				}
				for _, ev := range events[:n] {
					lfd := int(ev.Fd)
					if !listener[lfd] {
						if answer(int(ev.Fd)) {
							unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, int(ev.Fd), nil)
						}
						continue
					}
					for {
						fd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
						if err != nil {
							break // EAGAIN: wait for the next; anything else: the listener is closing
						}
						if !answer(fd) {
							unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
						}
					}
				}
			}
		}()
	}
	return nil
}
