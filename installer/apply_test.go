package installer_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"matchstream/installer"
	"matchstream/sysctl"
)

// Apply writes each rendered knob under the proc root it is given and the conntrack hash size under
// the sys root; a knob of a module that is not loaded is skipped, not an error.
func TestApplyOnFixtureTrees(t *testing.T) {
	proc, sys := t.TempDir(), t.TempDir()
	tg := sysctl.Target{Connections: 1_000_000, Backlog: 65535}
	conf := sysctl.Render(tg, func(sysctl.Knob) string { return "" })
	for _, k := range sysctl.Table() {
		if k.Module != "" {
			continue // conntrack not loaded on this fixture host
		}
		os.MkdirAll(filepath.Dir(k.Path(proc)), 0o755)
		os.WriteFile(k.Path(proc), []byte("0\n"), 0o644)
	}
	var out bytes.Buffer
	if err := installer.Apply(&out, conf, proc, sys); err != nil {
		t.Fatal(err)
	}
	for _, k := range sysctl.Table() {
		v, err := sysctl.Read(proc, k)
		if k.Module != "" || !k.Persist || strings.HasSuffix(k.Name, "tcp_mem") {
			continue
		}
		if ok, _ := k.Need(tg).Met(v); err != nil || !ok {
			t.Errorf("%s = %q after Apply", k.Name, v)
		}
	}
	if !strings.Contains(out.String(), "skipped net.netfilter.nf_conntrack_max: its module is not loaded") {
		t.Errorf("output:\n%s", out.String())
	}

	// With the module loaded, the hash size is set through /sys as well.
	hs := filepath.Join(sys, "module/nf_conntrack/parameters/hashsize")
	os.MkdirAll(filepath.Dir(hs), 0o755)
	os.WriteFile(hs, []byte("65536\n"), 0o644)
	os.MkdirAll(filepath.Join(proc, "sys/net/netfilter"), 0o755)
	for _, n := range []string{"nf_conntrack_max", "nf_conntrack_buckets"} {
		os.WriteFile(filepath.Join(proc, "sys/net/netfilter", n), []byte("0\n"), 0o644)
	}
	out.Reset()
	if err := installer.Apply(&out, conf, proc, sys); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(hs); strings.TrimSpace(string(b)) != "312500" {
		t.Errorf("hashsize = %q", b)
	}
}
