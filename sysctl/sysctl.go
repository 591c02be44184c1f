// Package sysctl is the table of host tuning knobs MatchStream needs (DESIGN.md §7): for each, its
// name and /proc path, whether it is per network namespace, why it matters, and the value it needs
// for a target number of connections. The one table renders the sysctl.d file `matchstream install`
// writes and drives the checks `matchstream doctor` runs, so the two cannot disagree.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Target is what the host must carry.
type Target struct {
	Connections int // concurrent client connections
	Backlog     int // listen backlog of the stream sockets
}

// NoFile is the open-files limit the daemon needs for a target: one fd per connection plus room for
// listeners, the store, API clients and logs.
func NoFile(connections int) int { return connections + 16384 }

// Severity is how bad a knob short of its need is.
type Severity int

const (
	Warn Severity = iota // works, but degrades under the target load
	Fail                 // the target load cannot be carried
)

// Need is a requirement on a knob's value.
type Need interface {
	// Met reports whether a value read from /proc satisfies the need.
	Met(found string) (bool, error)
	// String says what is needed, for doctor's "needed" column.
	String() string
	// Write is the value to persist given what the host has now (found may be ""): never lower than
	// found. ok is false when nothing should be written (already enough, or only checked).
	Write(found string) (value string, ok bool)
}

// Knob is one row of the table.
type Knob struct {
	Name     string // sysctl name, e.g. net.core.somaxconn
	PerNetns bool   // set per network namespace (else global to the host)
	Why      string // one line, shown by doctor
	Persist  bool   // rendered into sysctl.d; false: checked only, never written
	Module   string // kernel module that provides it ("" = always present)
	Severity Severity
	Need     func(Target) Need
}

// Path is the knob's file under a proc root.
func (k Knob) Path(proc string) string {
	return filepath.Join(proc, "sys", strings.ReplaceAll(k.Name, ".", "/"))
}

// Table is every knob, in the order doctor shows them and the .conf lists them.
func Table() []Knob {
	return []Knob{
		{Name: "net.core.somaxconn", PerNetns: true, Persist: true, Severity: Fail,
			Why:  "caps every listen backlog: connect bursts beyond it are dropped or refused",
			Need: func(t Target) Need { return atLeast(t.Backlog) }},
		{Name: "net.ipv4.tcp_max_syn_backlog", PerNetns: true, Persist: true, Severity: Fail,
			Why:  "half-open connections queued during a connect burst",
			Need: func(t Target) Need { return atLeast(t.Backlog) }},
		{Name: "net.core.netdev_max_backlog", Persist: true, Severity: Warn,
			Why:  "per-CPU queue of received packets: a connect burst arrives at once",
			Need: func(t Target) Need { return atLeast(clamp(t.Connections/64, 1000, 65536)) }},
		{Name: "net.ipv4.ip_local_port_range", PerNetns: true, Persist: true, Severity: Warn,
			Why:  "ports for outbound connects of the load tools; starts above the stream ports",
			Need: func(Target) Need { return portRange{10240, 65535} }},
		{Name: "net.ipv4.tcp_syncookies", PerNetns: true, Persist: true, Severity: Warn,
			Why:  "keeps accepting when the SYN queue overflows (connect storms, SYN floods)",
			Need: func(Target) Need { return equal("1") }},
		{Name: "net.ipv4.tcp_mem", Persist: true, Severity: Warn,
			Why:  "pages all TCP buffers may use: one page per connection while an event is in flight",
			Need: func(t Target) Need { return tripleMaxAtLeast(t.Connections + t.Connections/10) }},
		{Name: "net.ipv4.tcp_rmem", PerNetns: true, Severity: Warn,
			Why:  "per-socket receive buffer: its minimum is what a socket keeps under memory pressure",
			Need: func(Target) Need { return tripleMinAtMost(4096) }},
		{Name: "net.ipv4.tcp_wmem", PerNetns: true, Severity: Warn,
			Why:  "per-socket send buffer: its minimum is what a socket keeps under memory pressure",
			Need: func(Target) Need { return tripleMinAtMost(4096) }},
		{Name: "net.core.wmem_max", Persist: true, Severity: Warn,
			Why:  "caps the socket buffer that carries the clients to the next process on a restart",
			Need: func(t Target) Need { return atLeast(ParcelBuffer(t.Connections)) }},
		{Name: "net.netfilter.nf_conntrack_max", Persist: true, Module: "nf_conntrack", Severity: Fail,
			Why:  "tracked connections: when full, new connections are dropped ('table full')",
			Need: func(t Target) Need { return atLeast(ConntrackMax(t.Connections)) }},
		{Name: "net.netfilter.nf_conntrack_buckets", Persist: true, Module: "nf_conntrack", Severity: Warn,
			Why:  "conntrack hash buckets: too few makes every packet walk long chains",
			Need: func(t Target) Need { return atLeast(ConntrackBuckets(t.Connections)) }},
		{Name: "fs.nr_open", Severity: Fail,
			Why:  "ceiling of any process's open-files limit (LimitNOFILE); systemd raises it at boot",
			Need: func(t Target) Need { return atLeast(NoFile(t.Connections)) }},
		{Name: "fs.file-max", Severity: Fail,
			Why:  "open files on the whole host; systemd raises it at boot",
			Need: func(t Target) Need { return atLeast(NoFile(t.Connections) + 65536) }},
	}
}

// ConntrackMax is the conntrack table size for a target: every connection plus a quarter for
// connections closing (TIME_WAIT) and the rest of the host's traffic.
func ConntrackMax(connections int) int { return max(262144, connections+connections/4) }

// ConntrackBuckets is the hash size: a quarter of the table keeps chains short.
func ConntrackBuckets(connections int) int { return ConntrackMax(connections) / 4 }

// ParcelBuffer is the net.core.wmem_max a restart needs to hand every client to the next process
// (package daemon/handover): the parcel queues one message of about 768 bytes per 253 connections
// on a socket whose buffer the kernel caps at twice wmem_max. Twice that again, for margin; never
// below the kernel's default.
func ParcelBuffer(connections int) int { return max(212992, (connections/253+2)*768) }

func clamp(v, lo, hi int) int { return min(max(v, lo), hi) }

func fields(found string) []int64 {
	var out []int64
	for _, f := range strings.Fields(found) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

type atLeast int

func (n atLeast) Met(found string) (bool, error) {
	v := fields(found)
	if len(v) != 1 {
		return false, fmt.Errorf("not a number: %q", found)
	}
	return v[0] >= int64(n), nil
}
func (n atLeast) String() string { return ">= " + strconv.Itoa(int(n)) }
func (n atLeast) Write(found string) (string, bool) {
	if ok, err := n.Met(found); err == nil && ok {
		return strings.TrimSpace(found), true // keep the host's higher value
	}
	return strconv.Itoa(int(n)), true
}

type equal string

func (e equal) Met(found string) (bool, error)    { return strings.TrimSpace(found) == string(e), nil }
func (e equal) String() string                    { return "= " + string(e) }
func (e equal) Write(found string) (string, bool) { return string(e), true }

type portRange [2]int

func (r portRange) Met(found string) (bool, error) {
	v := fields(found)
	if len(v) != 2 {
		return false, fmt.Errorf("not a port range: %q", found)
	}
	return v[0] <= int64(r[0]) && v[0] > 9999 && v[1] >= int64(r[1]), nil
}
func (r portRange) String() string { return fmt.Sprintf("%d %d", r[0], r[1]) }
func (r portRange) Write(found string) (string, bool) {
	return fmt.Sprintf("%d %d", r[0], r[1]), true
}

// tripleMaxAtLeast: "min pressure max" in pages; the max must reach n. Written only when the
// kernel's own memory-based default falls short, and then never lowering any of the three.
type tripleMaxAtLeast int

func (n tripleMaxAtLeast) Met(found string) (bool, error) {
	v := fields(found)
	if len(v) != 3 {
		return false, fmt.Errorf("not three numbers: %q", found)
	}
	return v[2] >= int64(n), nil
}
func (n tripleMaxAtLeast) String() string { return "max >= " + strconv.Itoa(int(n)) + " pages" }
func (n tripleMaxAtLeast) Write(found string) (string, bool) {
	v := fields(found)
	if len(v) != 3 {
		return "", false // unknown host: leave the kernel's memory-based default alone
	}
	if v[2] >= int64(n) {
		return "", false
	}
	return fmt.Sprintf("%d %d %d", v[0], max(v[1], int64(n)*3/4), int64(n)), true
}

// tripleMinAtMost: "min default max" bytes; checked only.
type tripleMinAtMost int

func (n tripleMinAtMost) Met(found string) (bool, error) {
	v := fields(found)
	if len(v) != 3 {
		return false, fmt.Errorf("not three numbers: %q", found)
	}
	return v[0] <= int64(n), nil
}
func (n tripleMinAtMost) String() string              { return "min <= " + strconv.Itoa(int(n)) }
func (n tripleMinAtMost) Write(string) (string, bool) { return "", false }

// Render writes the sysctl.d file for a target. read returns a knob's current value ("" when
// unknown: rendering for a package, or a missing module), so no value is ever lowered.
func Render(t Target, read func(Knob) string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by matchstream install for %d connections, backlog %d.\n", t.Connections, t.Backlog)
	b.WriteString("# Regenerate with `matchstream install`; hand edits are backed up, not merged.\n")
	b.WriteString("# fs.nr_open and fs.file-max are not set here: systemd raises them to the maximum at boot,\n")
	b.WriteString("# so a value in sysctl.d could only lower them. `matchstream doctor` checks them.\n")
	for _, k := range Table() {
		if !k.Persist {
			continue
		}
		v, ok := k.Need(t).Write(read(k))
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "\n# %s\n", k.Why)
		if k.Module != "" {
			fmt.Fprintf(&b, "# (needs the %s module; '-' makes systemd-sysctl skip it when not loaded)\n-", k.Module)
		}
		fmt.Fprintf(&b, "%s = %s\n", k.Name, v)
	}
	return b.String()
}

// RenderModprobe writes the modprobe.d options that size the conntrack hash when the module loads.
func RenderModprobe(t Target) string {
	return fmt.Sprintf("# Written by matchstream install for %d connections.\n"+
		"# The conntrack hash size, set when the module loads (nf_conntrack_buckets is the same knob at run time).\n"+
		"options nf_conntrack hashsize=%d\n", t.Connections, ConntrackBuckets(t.Connections))
}

// RenderLimits writes the limits.d file for the login sessions that run the load tools (bench,
// client). The daemon itself takes LimitNOFILE from its unit: PAM limits do not apply to services.
func RenderLimits(t Target) string {
	n := NoFile(t.Connections)
	return fmt.Sprintf("# Written by matchstream install for %d connections.\n"+
		"# For login shells running the load tools; the service takes LimitNOFILE= from its unit.\n"+
		"*    soft nofile %d\n*    hard nofile %d\nroot soft nofile %d\nroot hard nofile %d\n", t.Connections, n, n, n, n)
}

// Reader returns a function reading knobs under a proc root ("" for a knob that is absent).
func Reader(proc string) func(Knob) string {
	return func(k Knob) string {
		v, err := Read(proc, k)
		if err != nil {
			return ""
		}
		return v
	}
}

// Read reads a knob's value under a proc root, with whitespace normalised to single spaces.
func Read(proc string, k Knob) (string, error) {
	b, err := os.ReadFile(k.Path(proc))
	if err != nil {
		return "", err
	}
	return strings.Join(strings.Fields(string(b)), " "), nil
}
