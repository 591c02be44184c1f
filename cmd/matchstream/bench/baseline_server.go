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
//   - floor: accepts with blocking accept4(2) calls on a thread of their own, reads each client's
//     connect line and answers it with a status line, and for each event writes it to every socket
//     with raw write(2) calls (not announced to the Go scheduler, as the daemon writes), the sockets
//     split over one goroutine per CPU as the daemon splits them (a floor on one core would flatter
//     a daemon that uses them all). Nothing can accept or fan out faster on this kernel.
//   - naive: the goroutine-per-connection server most Go code starts as: each connection has a
//     goroutine blocked reading and a goroutine writing what a channel brings.
// Control protocol on stdin: "EVENT [match]\n" writes one stamped event to every connection (naive:
// of that match, from the connect lines) and answers
// "DONE <ns>\n" on stdout; "COUNT\n" answers "COUNT <accepted>\n"; EOF stops the server.

// ServeBaseline runs a baseline server on addr; it prints "LISTEN <addr>" first.
func ServeBaseline(kind, addr string, in io.Reader, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	var mu sync.Mutex
	var fds []int                        // floor: raw fds
	var chans []chan []byte              // naive: one channel per connection
	groups := map[string][]chan []byte{} // naive: the channels of each match (from the connect line)
	var keep []net.Conn                  // keeps accepted connections referenced
	if kind == "floor" {
		lf, err := ln.(*net.TCPListener).File() // a duplicate, in blocking mode: accept4 waits in the kernel
		if err != nil {
			return err
		}
		defer lf.Close()
		lfd := int(lf.Fd())
		go func() {
			status := []byte(`{"kind":"status"}` + "\n")
			for {
				fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC) // blocking: writes block too, no EAGAIN
				if err == unix.EINTR || err == unix.ECONNABORTED {
					continue
				}
				if err != nil {
					return
				}
				// The least a server must do for a client: read its connect line, answer it.
				var line [256]byte
				for got := 0; got < len(line); {
					n, err := unix.Read(fd, line[got:])
					if n <= 0 || err != nil || bytes.IndexByte(line[got:got+n], '\n') >= 0 {
						break
					}
					got += n
				}
				unix.Write(fd, status)
				unix.SetNonblock(fd, true) // for the raw writes of the fan-out
				mu.Lock()
				fds = append(fds, fd)
				mu.Unlock()
			}
		}()
	}
	go func() {
		if kind == "floor" {
			return // accepted above
		}
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
	fmt.Fprintf(out, "LISTEN %s\n", ln.Addr())
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
