// Package installer is MatchStream's host side: `matchstream install` writes the host files
// (sysctl.d, modprobe.d, limits.d, systemd units, default config) under a root directory and applies
// them, and `matchstream doctor` checks that the host can carry the target load. Both read and write
// only below the roots they are given (--root, --proc), so every path is tested on temp and fixture
// trees, and both take their knob values from the one table in package sysctl.
package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"matchstream/daemon/certs"
	"matchstream/daemon/listen"
	"matchstream/sysctl"
)

// Check statuses.
const (
	OK   = "OK"
	WARN = "WARN"
	FAIL = "FAIL"
)

// Check is one line of doctor's report.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Found  string `json:"found"`
	Needed string `json:"needed"`
	Fix    string `json:"fix,omitempty"`
	Why    string `json:"why,omitempty"`
}

// PerConnectionBytes is what one idle client connection costs the host: the daemon's share
// (0.71-0.75 KB measured by bench with the epoll layer, docs/performance.md) plus the kernel's
// socket (~3.9 KB), rounded up to leave room for buffers in flight. Doctor sizes memory with it.
const PerConnectionBytes = 5 << 10

// Doctor checks a host. The zero values of Proc and Root mean the real /proc and /.
type Doctor struct {
	Proc   string
	Root   string
	Target sysctl.Target
	// Ports are the addresses the daemon will listen on (stream and API).
	Ports []string
	// NoFile returns the process's RLIMIT_NOFILE.
	NoFile func() (soft, hard uint64, err error)
	// Store checks the configured store; nil skips the check.
	Store func(context.Context) (string, error)
	// API and Admin are the API and admin listener addresses (Admin "" for none), for the checks
	// of what the network can reach; API "" skips them.
	API, Admin string
	// APITLS: the API speaks HTTPS. ClearPosts: the daemon accepts watcher posts over plain HTTP
	// from other hosts (--clear-posts).
	APITLS, ClearPosts bool
	// Cert and Key are the daemon's TLS certificate and key files ("" for none); Now is the clock
	// their expiry is checked against (nil: time.Now).
	Cert, Key string
	Now       func() time.Time
}

// ProcessNoFile reads this process's RLIMIT_NOFILE.
func ProcessNoFile() (uint64, uint64, error) {
	var r syscall.Rlimit
	err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	return r.Cur, r.Max, err
}

func (d *Doctor) proc() string {
	if d.Proc == "" {
		return "/proc"
	}
	return d.Proc
}

func (d *Doctor) root() string {
	if d.Root == "" {
		return "/"
	}
	return d.Root
}

// Run runs every check.
func (d *Doctor) Run(ctx context.Context) []Check {
	var out []Check
	for _, k := range sysctl.Table() {
		out = append(out, d.knob(k))
	}
	out = append(out, d.noFile()...)
	out = append(out, d.memory())
	out = append(out, d.ports()...)
	if d.API != "" {
		out = append(out, d.Exposure()...)
	}
	if d.Cert != "" {
		out = append(out, d.Certificate())
	}
	if d.Store != nil {
		c := Check{Name: "store", Needed: "answers"}
		found, err := d.Store(ctx)
		if err != nil {
			c.Status, c.Found, c.Fix = FAIL, err.Error(), "check --store and --state-dir (matchstream serve --check)"
		} else {
			c.Status, c.Found = OK, found
		}
		out = append(out, c)
	}
	return out
}

func (d *Doctor) knob(k sysctl.Knob) Check {
	need := k.Need(d.Target)
	c := Check{Name: k.Name, Needed: need.String(), Why: k.Why}
	found, err := sysctl.Read(d.proc(), k)
	if err != nil {
		c.Status, c.Found = WARN, "absent"
		if k.Module != "" {
			c.Fix = "none needed: the " + k.Module + " module is not loaded, so connections are not tracked; " +
				"if a firewall loads it later, run matchstream install again"
		} else {
			c.Fix = "none: this kernel does not have it"
		}
		return c
	}
	c.Found = found
	met, err := need.Met(found)
	switch {
	case err != nil:
		c.Status, c.Fix = WARN, "unexpected value: "+err.Error()
	case met:
		c.Status = OK
	default:
		c.Status = WARN
		if k.Severity == sysctl.Fail {
			c.Status = FAIL
		}
		c.Fix = fixFor(k, need, found)
	}
	return c
}

func fixFor(k sysctl.Knob, need sysctl.Need, found string) string {
	v, ok := need.Write(found)
	if !ok {
		if strings.HasSuffix(k.Name, "mem") {
			return fmt.Sprintf("sysctl -w %s='4096 %s' (keep a one-page minimum)", k.Name, strings.Join(strings.Fields(found)[1:], " "))
		}
		return "see " + k.Name + " in the kernel's ip-sysctl documentation"
	}
	if strings.Contains(v, " ") {
		v = "'" + v + "'"
	}
	if !k.Persist {
		return fmt.Sprintf("sysctl -w %s=%s (systemd >= 240 sets it to the maximum at boot; do not lower it in sysctl.d)", k.Name, v)
	}
	return fmt.Sprintf("sysctl -w %s=%s, and persist it: matchstream install", k.Name, v)
}

func (d *Doctor) noFile() []Check {
	need := uint64(sysctl.NoFile(d.Target.Connections))
	c := Check{Name: "RLIMIT_NOFILE (this process)", Needed: ">= " + strconv.FormatUint(need, 10),
		Why: "one file descriptor per client connection"}
	soft, hard, err := d.NoFile()
	switch {
	case err != nil:
		c.Status, c.Found = FAIL, err.Error()
	case soft >= need:
		c.Status, c.Found = OK, fmt.Sprintf("%d (hard %d)", soft, hard)
	default:
		c.Status, c.Found = FAIL, fmt.Sprintf("%d (hard %d)", soft, hard)
		c.Fix = fmt.Sprintf("run the daemon as matchstream.service (LimitNOFILE=%d, from matchstream install)", need)
		if hard >= need {
			c.Fix += fmt.Sprintf(", or ulimit -n %d in this shell", need)
		} else {
			c.Fix += fmt.Sprintf("; for a shell, raise the hard limit to %d (/etc/security/limits.d/matchstream.conf, written by matchstream install) and log in again", need)
		}
	}
	out := []Check{c}
	if limit, path, ok := d.unitNoFile(); ok {
		u := Check{Name: "LimitNOFILE (" + path + ")", Needed: ">= " + strconv.FormatUint(need, 10), Found: strconv.FormatUint(limit, 10)}
		if limit >= need {
			u.Status = OK
		} else {
			u.Status, u.Fix = FAIL, fmt.Sprintf("matchstream install --target-connections %d (rewrites the unit)", d.Target.Connections)
		}
		if nrOpen, err := readUint(filepath.Join(d.proc(), "sys/fs/nr_open")); err == nil && limit > nrOpen {
			u.Status = FAIL
			u.Needed += fmt.Sprintf(" and <= fs.nr_open (%d)", nrOpen)
			u.Fix = fmt.Sprintf("sysctl -w fs.nr_open=%d, or a lower --target-connections", limit)
		}
		out = append(out, u)
	}
	return out
}

// unitNoFile reads LimitNOFILE= of the installed service unit (/etc overrides /usr/lib).
func (d *Doctor) unitNoFile() (uint64, string, bool) {
	for _, p := range []string{"etc/systemd/system/matchstream.service", "usr/lib/systemd/system/matchstream.service"} {
		b, err := os.ReadFile(filepath.Join(d.root(), p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "LimitNOFILE="); ok {
				n, err := strconv.ParseUint(strings.Split(v, ":")[0], 10, 64)
				return n, "/" + p, err == nil
			}
		}
	}
	return 0, "", false
}

// unitsInstalled reports whether the socket units exist: then systemd holds the ports.
func (d *Doctor) unitsInstalled() bool {
	for _, p := range []string{"etc/systemd/system/matchstream.socket", "usr/lib/systemd/system/matchstream.socket"} {
		if _, err := os.Stat(filepath.Join(d.root(), p)); err == nil {
			return true
		}
	}
	return false
}

func (d *Doctor) memory() Check {
	need := uint64(d.Target.Connections) * PerConnectionBytes
	c := Check{Name: "memory available", Needed: fmt.Sprintf(">= %s (%d KiB per connection)", human(need), PerConnectionBytes>>10),
		Why: "each connection costs the daemon and the kernel memory, idle or not"}
	avail, err := memAvailable(filepath.Join(d.proc(), "meminfo"))
	switch {
	case err != nil:
		c.Status, c.Found = WARN, err.Error()
	case avail < need:
		c.Status, c.Found = FAIL, human(avail)
		c.Fix = fmt.Sprintf("add memory or lower --target-connections to %d", avail/PerConnectionBytes)
	case avail < need+need/4:
		c.Status, c.Found = WARN, human(avail)
		c.Fix = "less than 25% headroom: the page cache and bursts need room too"
	default:
		c.Status, c.Found = OK, human(avail)
	}
	return c
}

func (d *Doctor) ports() []Check {
	var out []Check
	held := d.unitsInstalled()
	for _, addr := range d.Ports {
		c := Check{Name: "port " + addr, Needed: "free, or held by matchstream's socket units"}
		ln, err := listen.Bind(addr, 1)
		switch {
		case err == nil:
			ln.Close()
			c.Status, c.Found = OK, "free"
		case errors.Is(err, syscall.EADDRINUSE) && held:
			c.Status, c.Found = OK, "held by matchstream.socket"
		case errors.Is(err, syscall.EADDRINUSE):
			_, port, _ := strings.Cut(addr, ":")
			c.Status, c.Found = FAIL, "in use by another process"
			var iu *listen.InUseError
			if errors.As(err, &iu) && iu.Pid > 0 {
				c.Found = fmt.Sprintf("in use by pid %d (%s)", iu.Pid, iu.Cmd)
			}
			c.Fix = fmt.Sprintf("stop it, or find it with: ss -ltnp 'sport = :%s'", port)
		default:
			c.Status, c.Found, c.Fix = FAIL, err.Error(), "check the address in --stream / --api"
		}
		out = append(out, c)
	}
	return out
}

func memAvailable(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no MemAvailable in %s", path)
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

func human(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

// Counts tallies a report.
func Counts(checks []Check) (ok, warn, fail int) {
	for _, c := range checks {
		switch c.Status {
		case OK:
			ok++
		case WARN:
			warn++
		default:
			fail++
		}
	}
	return
}

// Print writes the report as aligned lines, one per check, and a summary line.
func Print(w io.Writer, target int, checks []Check) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range checks {
		fix := ""
		if c.Fix != "" {
			fix = "fix: " + c.Fix
		}
		fmt.Fprintf(tw, "%s\t%s\tfound %s\tneeded %s\t%s\n", c.Status, c.Name, c.Found, c.Needed, fix)
	}
	tw.Flush()
	ok, warn, fail := Counts(checks)
	verdict := "this host can carry it"
	if fail > 0 {
		verdict = "this host cannot carry it yet"
	}
	fmt.Fprintf(w, "doctor: %d connections: %d OK, %d WARN, %d FAIL: %s\n", target, ok, warn, fail, verdict)
}

// loopback reports whether a listen address is reachable from this host only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Exposure checks what the network can reach in clear text: the watcher's posts, which carry its
// bearer token, and the metrics and debug state.
func (d *Doctor) Exposure() []Check {
	posts := Check{Name: "watcher posts", Needed: "over HTTPS or from this host",
		Why: "every post carries the watcher's bearer token"}
	switch {
	case loopback(d.API):
		posts.Status, posts.Found = OK, "loopback only ("+d.API+")"
	case d.APITLS:
		posts.Status, posts.Found = OK, "HTTPS on "+d.API
	case d.ClearPosts:
		posts.Status, posts.Found = WARN, "clear text on "+d.API+" (--clear-posts)"
		posts.Fix = "give the daemon a certificate (--tls-cert, --tls-key: the API speaks HTTPS), or drop --clear-posts and post from this host"
	default:
		posts.Status, posts.Found = OK, "plain HTTP on "+d.API+": posts from other hosts are refused (403), local watchers only"
	}
	admin := Check{Name: "admin listener", Needed: "on loopback",
		Why: "/metrics and /debug/* show every match, client and queue"}
	switch {
	case d.Admin != "" && loopback(d.Admin):
		admin.Status, admin.Found = OK, d.Admin+"; the API shows /metrics and /debug/* to this host only"
	case d.Admin != "":
		admin.Status, admin.Found, admin.Fix = WARN, "reachable on "+d.Admin, "--admin 127.0.0.1:8889, and scrape it from this host or through a tunnel"
	case loopback(d.API):
		admin.Status, admin.Found = OK, "none; the API, on loopback, serves /metrics"
	default:
		admin.Status, admin.Found = WARN, "none: the API serves /metrics and /debug/* on "+d.API
		admin.Fix = "--admin 127.0.0.1:8889 (install configures it)"
	}
	return []Check{posts, admin}
}

// certWarnBefore is how long before its expiry doctor warns of a certificate (certbot renews 30
// days ahead, so a certificate this close has missed a renewal).
const certWarnBefore = 14 * 24 * time.Hour

// Certificate checks the daemon's TLS certificate: it loads with its key, and does not expire
// within certWarnBefore.
func (d *Doctor) Certificate() Check {
	c := Check{Name: "tls certificate", Needed: "loads with its key; valid for 14 days more",
		Why: "TLS clients refuse an expired certificate: every TLS stream and HTTPS request would fail"}
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	pair, err := certs.Read(d.Cert, d.Key)
	if err != nil {
		c.Status, c.Found = FAIL, err.Error()
		c.Fix = "check --tls-cert and --tls-key (PEM chain and its key, readable by the matchstream group: /etc/matchstream/tls, 0640 root:matchstream)"
		return c
	}
	left := pair.Leaf.NotAfter.Sub(now())
	c.Found = fmt.Sprintf("%s, expires %s (%d days)", pair.Leaf.Subject.CommonName, pair.Leaf.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
	switch {
	case left <= 0:
		c.Status, c.Fix = FAIL, "renew it, then systemctl reload matchstream"
	case left < certWarnBefore:
		c.Status, c.Fix = WARN, "renew it (certbot renew), then systemctl reload matchstream; a deploy hook can do both"
	default:
		c.Status = OK
	}
	return c
}
