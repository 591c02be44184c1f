package installer_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
	"matchstream/installer"
	"matchstream/sysctl"
)

var update = flag.Bool("update", false, "rewrite golden files")

const procs = "../testdata/proc/"

func doctor(proc string, soft uint64) *installer.Doctor {
	return &installer.Doctor{
		Proc:   procs + proc,
		Root:   "testdata/empty-root",
		Target: sysctl.Target{Connections: 1_000_000, Backlog: 65535},
		Ports:  []string{"127.0.0.1:0"},
		NoFile: func() (uint64, uint64, error) { return soft, soft, nil },
	}
}

func byName(checks []installer.Check) map[string]installer.Check {
	m := map[string]installer.Check{}
	for _, c := range checks {
		m[c.Name] = c
	}
	return m
}

func TestDoctorTunedHostPasses(t *testing.T) {
	checks := doctor("tuned", 1_100_000).Run(context.Background())
	if _, warn, fail := installer.Counts(checks); fail != 0 || warn != 0 {
		var b bytes.Buffer
		installer.Print(&b, 1_000_000, checks)
		t.Fatalf("a tuned host does not pass:\n%s", b.String())
	}
}

func TestDoctorUntunedHostFails(t *testing.T) {
	checks := doctor("untuned", 20_000).Run(context.Background())
	var b bytes.Buffer
	installer.Print(&b, 1_000_000, checks)
	path := filepath.Join("testdata", "doctor-untuned.golden")
	if *update {
		os.WriteFile(path, b.Bytes(), 0o644)
	}
	want, _ := os.ReadFile(path)
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("report differs from %s:\n%s", path, b.String())
	}
	m := byName(checks)
	for name, fix := range map[string]string{
		"net.core.somaxconn":             "sysctl -w net.core.somaxconn=65535, and persist it: matchstream install",
		"net.ipv4.tcp_max_syn_backlog":   "sysctl -w net.ipv4.tcp_max_syn_backlog=65535",
		"net.netfilter.nf_conntrack_max": "sysctl -w net.netfilter.nf_conntrack_max=1250000",
		"RLIMIT_NOFILE (this process)":   "LimitNOFILE=1016384",
	} {
		if c := m[name]; c.Status != installer.FAIL || !strings.Contains(c.Fix, fix) {
			t.Errorf("%s: %+v; want FAIL with fix %q", name, c, fix)
		}
	}
	if c := m["net.ipv4.ip_local_port_range"]; c.Status != installer.WARN || !strings.Contains(c.Fix, "'10240 65535'") {
		t.Errorf("port range: %+v", c)
	}
}

func TestDoctorWithoutConntrackWarns(t *testing.T) {
	checks := doctor("noconntrack", 1_100_000).Run(context.Background())
	m := byName(checks)
	for _, k := range []string{"net.netfilter.nf_conntrack_max", "net.netfilter.nf_conntrack_buckets"} {
		if c := m[k]; c.Status != installer.WARN || c.Found != "absent" || !strings.Contains(c.Fix, "module is not loaded") {
			t.Errorf("%s: %+v", k, c)
		}
	}
	if _, _, fail := installer.Counts(checks); fail != 0 {
		t.Errorf("a missing module failed the host")
	}
}

func TestDoctorMemoryAndUnit(t *testing.T) {
	d := doctor("smallmem", 1_100_000)
	if c := byName(d.Run(context.Background()))["memory available"]; c.Status != installer.FAIL || !strings.Contains(c.Fix, "lower --target-connections to 400000") {
		t.Errorf("small memory: %+v", c)
	}
	// An installed unit whose LimitNOFILE is below the target, on a host whose nr_open is lower still.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/systemd/system/matchstream.service"), []byte("[Service]\nLimitNOFILE=50000\n"), 0o644)
	d = doctor("untuned", 1_100_000)
	d.Root = root
	d.Target.Connections = 100_000
	c := byName(d.Run(context.Background()))["LimitNOFILE (/etc/systemd/system/matchstream.service)"]
	if c.Status != installer.FAIL || !strings.Contains(c.Fix, "matchstream install --target-connections 100000") {
		t.Errorf("unit LimitNOFILE: %+v", c)
	}
}

func TestDoctorPorts(t *testing.T) {
	d := doctor("tuned", 1_100_000)
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d.Ports = []string{ln.Addr().String(), "127.0.0.1:0"}
	m := byName(d.Run(context.Background()))
	if c := m["port "+ln.Addr().String()]; c.Status != installer.FAIL || !strings.Contains(c.Fix, "ss -ltnp") {
		t.Errorf("busy port: %+v", c)
	}
	// With the socket units installed, systemd holding the port is expected.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/systemd/system/matchstream.socket"), []byte("[Socket]\n"), 0o644)
	d.Root = root
	m = byName(d.Run(context.Background()))
	if c := m["port "+ln.Addr().String()]; c.Status != installer.OK || c.Found != "held by matchstream.socket" {
		t.Errorf("held port: %+v", c)
	}
}

// What the network reaches in clear text: the watcher's posts and the metrics.
func TestDoctorExposure(t *testing.T) {
	for _, tc := range []struct {
		api, admin        string
		apiTLS, clearText bool
		posts, mets       string // statuses
	}{
		{"127.0.0.1:8888", "", false, false, installer.OK, installer.OK},
		{"[::1]:8888", "127.0.0.1:8889", false, false, installer.OK, installer.OK},
		{"localhost:8888", "", false, true, installer.OK, installer.OK},
		{"0.0.0.0:8888", "127.0.0.1:8889", false, false, installer.OK, installer.OK}, // posts refused from afar
		{"0.0.0.0:8888", "127.0.0.1:8889", true, true, installer.OK, installer.OK},
		{"0.0.0.0:8888", "127.0.0.1:8889", false, true, installer.WARN, installer.OK},
		{"0.0.0.0:8888", "", false, true, installer.WARN, installer.WARN},
		{":8888", "0.0.0.0:8889", false, true, installer.WARN, installer.WARN},
		{"10.1.2.3:8888", "10.1.2.3:8889", false, true, installer.WARN, installer.WARN},
	} {
		d := installer.Doctor{API: tc.api, Admin: tc.admin, APITLS: tc.apiTLS, ClearPosts: tc.clearText}
		got := d.Exposure()
		if len(got) != 2 || got[0].Status != tc.posts || got[1].Status != tc.mets {
			t.Errorf("api %s admin %q tls %v clear %v: %+v; want posts %s, admin %s", tc.api, tc.admin, tc.apiTLS, tc.clearText, got, tc.posts, tc.mets)
		}
		for _, c := range got {
			if c.Status == installer.WARN && c.Fix == "" {
				t.Errorf("api %s admin %q: %s warns without a fix", tc.api, tc.admin, c.Name)
			}
		}
	}
}

// The certificate: OK with weeks left, WARN within 14 days, FAIL once expired or when it does not
// load with its key.
func TestDoctorCertificate(t *testing.T) {
	cert := daemontest.NewCert(t, 60*24*time.Hour)
	other := daemontest.NewCert(t, time.Hour)
	expiry := cert.Pair.Leaf.NotAfter
	for _, tc := range []struct {
		name      string
		certFile  string
		keyFile   string
		now       time.Time
		want      string
		foundHint string
	}{
		{"two months left", cert.CertFile, cert.KeyFile, time.Now(), installer.OK, "days"},
		{"ten days left", cert.CertFile, cert.KeyFile, expiry.Add(-10 * 24 * time.Hour), installer.WARN, "(10 days)"},
		{"expired", cert.CertFile, cert.KeyFile, expiry.Add(time.Hour), installer.FAIL, "expires"},
		{"another key", cert.CertFile, other.KeyFile, time.Now(), installer.FAIL, "private key does not match"},
		{"missing", filepath.Join(t.TempDir(), "none.pem"), cert.KeyFile, time.Now(), installer.FAIL, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := installer.Doctor{Cert: tc.certFile, Key: tc.keyFile, Now: func() time.Time { return tc.now }}
			c := d.Certificate()
			if c.Status != tc.want || !strings.Contains(c.Found, tc.foundHint) || (c.Status != installer.OK && c.Fix == "") {
				t.Fatalf("%+v; want %s with %q", c, tc.want, tc.foundHint)
			}
		})
	}
}
