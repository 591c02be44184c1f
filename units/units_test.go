package units_test

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"matchstream/units"
)

var update = flag.Bool("update", false, "rewrite golden files")

func params(connections int) units.Params {
	return units.Params{Binary: "/usr/bin/matchstream", Config: "/etc/matchstream/matchstream.toml",
		API: "0.0.0.0:8888", Stream: []string{"0.0.0.0:9000", "0.0.0.0:9001", "0.0.0.0:9002"},
		Backlog: 65535, Connections: connections, Watchdog: 30 * time.Second}
}

func TestGolden(t *testing.T) {
	for name, n := range map[string]int{"100k": 100_000, "1m": 1_000_000} {
		got, err := units.Render(params(n))
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range units.Names {
			path := filepath.Join("testdata", name, u)
			if *update {
				os.MkdirAll(filepath.Dir(path), 0o755)
				os.WriteFile(path, []byte(got[u]), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -update)", err)
			}
			if got[u] != string(want) {
				t.Errorf("%s differs:\n%s", path, got[u])
			}
		}
	}
}

// writeUnits renders units whose ExecStart names a binary that exists (systemd-analyze needs it).
func writeUnits(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	p := params(1_000_000)
	p.Binary = bin
	got, err := units.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	for n, text := range got {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is needed (Debian package systemd): ", err)
	}
	return p
}

// systemd-analyze verify prints problems as warnings and still exits 0: any output fails the test.
func TestVerify(t *testing.T) {
	sa := systemdAnalyze(t)
	dir := writeUnits(t)
	var paths []string
	for _, n := range units.Names {
		paths = append(paths, filepath.Join(dir, n))
	}
	// --man=no: the man page arrives with the package; it is not installed on the test host.
	cmd := exec.Command(sa, append([]string{"verify", "--man=no"}, paths...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The service's exposure score stays at or below 1.5 (DESIGN.md §8).
func TestSecurityScore(t *testing.T) {
	sa := systemdAnalyze(t)
	dir := writeUnits(t)
	out, _ := exec.Command(sa, "security", "--offline=true", filepath.Join(dir, "matchstream.service")).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure %.1f", score)
	if score > 1.5 {
		t.Fatalf("exposure %.1f > 1.5:\n%s", score, out)
	}
}
