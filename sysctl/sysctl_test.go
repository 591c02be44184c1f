package sysctl_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"matchstream/sysctl"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n%s", name, got)
	}
}

var targets = map[string]sysctl.Target{
	"100k": {Connections: 100_000, Backlog: 65535},
	"1m":   {Connections: 1_000_000, Backlog: 65535},
}

// The rendered files for two targets, on a host like this one (untuned) and for a package
// (no host known: tcp_mem is left to the kernel's memory-based default).
func TestRenderGolden(t *testing.T) {
	for name, tg := range targets {
		golden(t, "60-matchstream-"+name+".conf", sysctl.Render(tg, sysctl.Reader("../testdata/proc/untuned")))
		golden(t, "60-matchstream-"+name+"-package.conf", sysctl.Render(tg, func(sysctl.Knob) string { return "" }))
		golden(t, "matchstream-conntrack-"+name+".conf", sysctl.RenderModprobe(tg))
		golden(t, "limits-"+name+".conf", sysctl.RenderLimits(tg))
	}
}

// What install writes satisfies what doctor checks: every rendered value meets its knob's need.
func TestRenderedValuesMeetNeeds(t *testing.T) {
	for name, tg := range targets {
		for _, host := range []string{"untuned", "tuned"} {
			conf := sysctl.Render(tg, sysctl.Reader("../testdata/proc/"+host))
			written := map[string]string{}
			for _, l := range strings.Split(conf, "\n") {
				if k, v, ok := strings.Cut(strings.TrimPrefix(l, "-"), " = "); ok && !strings.HasPrefix(l, "#") {
					written[k] = v
				}
			}
			for _, k := range sysctl.Table() {
				v, ok := written[k.Name]
				if !ok {
					if v, _ = sysctl.Read("../testdata/proc/"+host, k); v == "" {
						continue
					}
				}
				met, err := k.Need(tg).Met(v)
				if k.Persist && (err != nil || !met) && ok {
					t.Errorf("%s on %s: wrote %s = %q, which does not meet %s", name, host, k.Name, v, k.Need(tg))
				}
			}
		}
	}
}

func TestNeeds(t *testing.T) {
	tg := sysctl.Target{Connections: 1_000_000, Backlog: 65535}
	need := map[string]sysctl.Need{}
	for _, k := range sysctl.Table() {
		need[k.Name] = k.Need(tg)
		if k.Why == "" || strings.Contains(k.Name, "ip_conntrack") {
			t.Errorf("%s: every knob says why, and uses current kernel names", k.Name)
		}
	}
	for _, tc := range []struct {
		knob, found string
		met         bool
	}{
		{"net.core.somaxconn", "4096", false},
		{"net.core.somaxconn", "65535", true},
		{"net.ipv4.ip_local_port_range", "32768 60999", false},
		{"net.ipv4.ip_local_port_range", "10240 65535", true},
		{"net.ipv4.ip_local_port_range", "1024 65535", false}, // would hand out our stream ports
		{"net.ipv4.tcp_syncookies", "0", false},
		{"net.ipv4.tcp_mem", "287898 383866 575796", false},
		{"net.ipv4.tcp_mem", "287898 825000 1100000", true},
		{"net.ipv4.tcp_wmem", "4096 16384 4194304", true},
		{"net.ipv4.tcp_wmem", "65536 16384 4194304", false},
		{"fs.nr_open", "1048576", true}, // 1M + 16384 fits the kernel's default
		{"fs.nr_open", "1000000", false},
		{"net.netfilter.nf_conntrack_max", "262144", false},
	} {
		got, err := need[tc.knob].Met(tc.found)
		if err != nil || got != tc.met {
			t.Errorf("%s = %q: met %v, %v; want %v", tc.knob, tc.found, got, err, tc.met)
		}
	}
	if _, err := need["net.core.somaxconn"].Met("abc"); err == nil {
		t.Error("a non-number was accepted")
	}
}
