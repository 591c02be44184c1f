// Package listen provides the daemon's listening sockets: the stream ports (several, so one host
// carries more than one port's worth of connections and clients spread over them) and the API port.
// Under systemd socket activation they come from the socket units, picked by file-descriptor name
// (never by position: the order across units is undefined); otherwise the daemon binds them itself
// with the configured backlog, and refuses a port another process listens on. It also counts open connections per stream port so
// clients can be sent to the least-loaded one.
package listen

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"

	"matchstream/daemon/handover"
)

// Names of the file descriptors the socket units pass (FileDescriptorName=).
const (
	FDNameStream = "stream"
	// FDNameStreamTLS names a stream port whose clients speak TLS.
	FDNameStreamTLS = "stream-tls"
	FDNameAPI       = "api"
	// FDNameAdmin is the admin listener's name when a predecessor hands it on; the socket units do
	// not pass one (the daemon binds it itself).
	FDNameAdmin = "admin"
)

// Config is the listener section of the daemon configuration.
type Config struct {
	API    string   // host:port of the HTTP API
	Admin  string   // host:port of the admin listener (/metrics, /debug/*); "" for none
	Stream []string // host:port of each stream listener
	// StreamTLS: host:port of each stream listener whose clients speak TLS 1.3 (the certificate is
	// the daemon's); plain and TLS ports serve the same matches.
	StreamTLS []string
	Backlog   int // listen(2) backlog for self-bound sockets (capped by net.core.somaxconn)
	// SomaxconnPath is read to tell the operator when the kernel caps the backlog.
	SomaxconnPath string
	// Activated: the process was socket-activated (LISTEN_FDS was set); Inherited are the
	// descriptors it was passed, named. The CLI reads them from the environment once.
	Activated bool
	Inherited []*os.File
}

// ParseRange expands "host:first-last" (or "host:port") into one address per port.
func ParseRange(s string) ([]string, error) {
	host, ports, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("stream address %q: want host:port or host:first-last", s)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	first, err1 := strconv.Atoi(lo)
	last := first
	var err2 error
	if isRange {
		last, err2 = strconv.Atoi(hi)
	}
	if err1 != nil || err2 != nil || first < 1 || last > 65535 || last < first {
		return nil, fmt.Errorf("stream address %q: ports must be 1-65535, first <= last", s)
	}
	if last-first >= 1024 {
		return nil, fmt.Errorf("stream address %q: %d ports is too many (at most 1024)", s, last-first+1)
	}
	out := make([]string, 0, last-first+1)
	for p := first; p <= last; p++ {
		out = append(out, net.JoinHostPort(host, strconv.Itoa(p)))
	}
	return out, nil
}

// Port is one stream listener and the number of client connections open on it.
type Port struct {
	net.Listener
	Conns atomic.Int64
	TLS   bool // clients speak TLS 1.3 on it
}

// Number is the TCP port the listener is bound to.
func (p *Port) Number() int {
	if a, ok := p.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// Set is every listener of the daemon.
type Set struct {
	API       net.Listener
	Admin     net.Listener // nil: no admin listener
	Stream    []*Port
	Activated bool // the sockets came from systemd
	// Events counts the Server-Sent Events connections taken over from the API listener (the
	// daemon sets it; nil until then).
	Events *Port
	// Parcel is the previous process's client connections (package handover), when it was
	// passed with the listeners under the name handover.FDName; the daemon unpacks and closes it.
	Parcel *os.File
}

// Open takes the listeners from the inherited descriptors of socket activation, or binds them.
func Open(cfg Config, log *slog.Logger) (*Set, error) {
	if cfg.Activated {
		s, err := fromActivation(cfg.Inherited, log)
		if err == nil && s.Admin == nil && cfg.Admin != "" {
			// Loopback-only and never needed to start the service, so no socket unit holds it.
			if s.Admin, err = Bind(cfg.Admin, 128); err != nil {
				s.Close()
				return nil, err
			}
		}
		if err == nil && !slices.ContainsFunc(s.Stream, func(p *Port) bool { return p.TLS }) {
			// The packaged socket units hold the plain ports; TLS ports, which need a certificate
			// first, are bound here unless a socket unit of the operator's passes them (named
			// FDNameStreamTLS: the way to a port below 1024, which the sandboxed service cannot bind).
			if err = s.bindStream(cfg.StreamTLS, cfg.Backlog, true); err != nil {
				s.Close()
				return nil, err
			}
		}
		return s, err
	}
	s := &Set{}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := s.bindStream(cfg.Stream, cfg.Backlog, false); err != nil {
		return nil, err
	}
	if err := s.bindStream(cfg.StreamTLS, cfg.Backlog, true); err != nil {
		return nil, err
	}
	ln, err := Bind(cfg.API, cfg.Backlog)
	if err != nil {
		return nil, err
	}
	s.API = ln
	if cfg.Admin != "" {
		if s.Admin, err = Bind(cfg.Admin, 128); err != nil {
			return nil, err
		}
	}
	if max, err := readInt(cfg.SomaxconnPath); err == nil && max < cfg.Backlog {
		log.Warn("listen backlog capped by the kernel", "backlog", cfg.Backlog, "net.core.somaxconn", max,
			"hint", "raise it (sysctl -w net.core.somaxconn=N) and restart the daemon")
	}
	ok = true
	return s, nil
}

// bindStream binds a stream port for each of addrs (TLS ports if tls) and adds them to s.
func (s *Set) bindStream(addrs []string, backlog int, tls bool) error {
	for _, addr := range addrs {
		ln, err := Bind(addr, backlog)
		if err != nil {
			return err
		}
		s.Stream = append(s.Stream, &Port{Listener: ln, TLS: tls})
	}
	return nil
}

// Activation returns the descriptors systemd (or a predecessor) passed this process, and whether
// it was socket-activated at all; it unsets the environment that named them, so it runs once, in
// the CLI.
func Activation() (files []*os.File, activated bool) {
	if os.Getenv("LISTEN_FDS") == "" {
		return nil, false
	}
	return activation.Files(true), true
}

func fromActivation(files []*os.File, log *slog.Logger) (*Set, error) {
	s := &Set{Activated: true}
	for _, f := range files {
		if f.Name() == handover.FDName {
			if s.Parcel != nil {
				s.Parcel.Close()
			}
			s.Parcel = f // not a listener: net.FileListener would accept it without complaint
			continue
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("socket activation: fd %q: %w", f.Name(), err)
		}
		switch f.Name() {
		case FDNameStream:
			s.Stream = append(s.Stream, &Port{Listener: ln})
		case FDNameStreamTLS:
			s.Stream = append(s.Stream, &Port{Listener: ln, TLS: true})
		case FDNameAPI:
			if s.API != nil {
				ln.Close()
				s.Close()
				return nil, errors.New("socket activation: more than one fd named " + FDNameAPI)
			}
			s.API = ln
		case FDNameAdmin:
			if s.Admin != nil {
				s.Admin.Close()
			}
			s.Admin = ln
		default:
			log.Warn("socket activation: ignoring fd with unknown name", "name", f.Name())
			ln.Close()
		}
	}
	if len(s.Stream) == 0 || s.API == nil {
		s.Close()
		return nil, fmt.Errorf("socket activation: got %d fds; need at least one named %q and one named %q (FileDescriptorName= in the socket units)",
			len(files), FDNameStream, FDNameAPI)
	}
	return s, nil
}

// Close closes every listener (and the parcel, if still here).
func (s *Set) Close() {
	if s.Parcel != nil {
		s.Parcel.Close()
	}
	if s.API != nil {
		s.API.Close()
	}
	if s.Admin != nil {
		s.Admin.Close()
	}
	for _, p := range s.Stream {
		p.Close()
	}
}

// LeastLoaded returns the stream port with the fewest open connections (the first on a tie)
// among the plain ports, or among the TLS ports; nil if there is none of that kind.
func (s *Set) LeastLoaded(tls bool) *Port {
	var best *Port
	for _, p := range s.Stream {
		if p.TLS != tls {
			continue
		}
		if best == nil || p.Conns.Load() < best.Conns.Load() {
			best = p
		}
	}
	return best
}

// Bind listens on a TCP address with SO_REUSEADDR and the given backlog. Go's net.Listen always
// uses net.core.somaxconn; this passes the configured value to listen(2).
//
// Not SO_REUSEPORT: with it, a second daemon started on the same ports (another state directory,
// a copy run by hand) binds them too, and the kernel splits new clients and watcher posts between
// two processes that know nothing of each other. A port in use is an *InUseError naming the
// holder's pid. The daemon's own successor never binds: it inherits the listeners (LISTEN_FDS).
func Bind(addr string, backlog int) (net.Listener, error) {
	ap, err := resolve(addr)
	if err != nil {
		return nil, err
	}
	family := syscall.AF_INET
	var sa syscall.Sockaddr
	if ap.Addr().Is4() {
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, syscall.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("listen %s: socket: %w", addr, err)
	}
	f := os.NewFile(uintptr(fd), "tcp:"+addr)
	defer f.Close() // FileListener dups the fd
	// SO_REUSEADDR lets a restarted daemon bind while old connections are in TIME_WAIT; on Linux
	// it never lets two sockets listen on one port.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return nil, fmt.Errorf("listen %s: setsockopt: %w", addr, err)
	}
	if err := syscall.Bind(fd, sa); err != nil {
		if err == syscall.EADDRINUSE {
			pid, cmd := holder("/proc", int(ap.Port()))
			return nil, &InUseError{Addr: addr, Port: int(ap.Port()), Pid: pid, Cmd: cmd, Err: err}
		}
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if backlog <= 0 {
		backlog = syscall.SOMAXCONN
	}
	if err := syscall.Listen(fd, backlog); err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

func resolve(addr string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: %w", addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: bad port", addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen address %q: host must be an IP address", addr)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

func readInt(path string) (int, error) {
	if path == "" {
		return 0, errors.New("no path")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// RawConn is the listening socket's raw access, for accepting with accept4(2) directly.
func RawConn(ln net.Listener) (syscall.RawConn, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("listener %s has no file descriptor", ln.Addr())
	}
	return sc.SyscallConn()
}
