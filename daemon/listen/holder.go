package listen

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// InUseError is a port another socket listens on. Bind refuses it rather than share it: the
// daemon's listeners are shared only with its own hand-over successor, which inherits them.
type InUseError struct {
	Addr string
	Port int
	Pid  int    // 0 when the holder could not be found (another user's process, without root)
	Cmd  string // the holder's command line, when found
	Err  error  // EADDRINUSE
}

func (e *InUseError) Error() string {
	who := "another process"
	if e.Pid > 0 {
		who = "pid " + strconv.Itoa(e.Pid)
		if e.Cmd != "" {
			who += " (" + e.Cmd + ")"
		}
	}
	return fmt.Sprintf("listen %s: port %d is in use by %s: is another daemon running? stop it, or give this one other ports (--api, --stream)",
		e.Addr, e.Port, who)
}

func (e *InUseError) Unwrap() error { return e.Err }

// holder finds the process that has a TCP socket listening on port, from /proc (procDir): the
// socket's inode in net/tcp or net/tcp6, then the process with a descriptor on that inode. It
// returns 0 if none can be seen (a process of another user, read without root).
func holder(procDir string, port int) (pid int, cmd string) {
	inodes := map[string]bool{}
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		listeningInodes(filepath.Join(procDir, f), port, inodes)
	}
	if len(inodes) == 0 {
		return 0, ""
	}
	procs, _ := os.ReadDir(procDir)
	for _, p := range procs {
		n, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join(procDir, p.Name(), "fd")
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			if ino, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
				b, _ := os.ReadFile(filepath.Join(procDir, p.Name(), "cmdline"))
				cmd := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
				if len(cmd) > 120 {
					cmd = cmd[:117] + "..."
				}
				return n, cmd
			}
		}
	}
	return 0, ""
}

// listeningInodes adds the inodes of the sockets in a /proc/net/tcp-format file that listen on port.
func listeningInodes(path string, port int, into map[string]bool) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
			into[fields[9]] = true
		}
	}
}
