package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"matchstream/sysctl"
)

// On this machine (open files capped at 20,000 per process) a million connections cannot be carried:
// doctor exits 3 and says how to fix the limit.
func TestDoctorOnThisHost(t *testing.T) {
	t.Parallel()
	api, stream := freePorts(t, 2)
	args := []string{"doctor", "--config", "/dev/null", "--state-dir", filepath.Join(t.TempDir(), "s"),
		"--api", fmt.Sprintf("127.0.0.1:%d", api), "--stream", fmt.Sprintf("127.0.0.1:%d-%d", stream[0], stream[1]),
		"--target-connections", "1000000"}
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur >= uint64(sysctl.NoFile(1_000_000)) {
		t.Fatalf("this test expects the machine's 20,000 open-files cap; RLIMIT_NOFILE is %d", lim.Cur)
	}
	out := run(t, exitDoctor, args...)
	for _, w := range []string{"FAIL  RLIMIT_NOFILE (this process)", "fix: run the daemon as matchstream.service (LimitNOFILE=1016384",
		"doctor: 1000000 connections:", "hint: each FAIL line"} {
		if !strings.Contains(out, w) {
			t.Errorf("doctor output lacks %q:\n%s", w, out)
		}
	}
	// On a tuned host (fixture /proc) with a target this process's limit carries, nothing fails.
	args[len(args)-1] = "3000"
	out = run(t, 0, append(args, "--proc", "../../testdata/proc/tuned", "--json")...)
	var rep struct {
		Fail   int `json:"fail"`
		Checks []struct {
			Name, Status string
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Fail != 0 || len(rep.Checks) < 15 {
		t.Fatalf("doctor --json on a tuned host: %v\n%s", err, out)
	}
}

// install into a directory: files written, a second run is a no-op, uninstall empties it again.
func TestInstallCommand(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	args := []string{"install", "--config", "/dev/null", "--root", root, "--target-connections", "100000"}
	out := run(t, 0, args...)
	if !strings.Contains(out, "install: 7 files written") || !strings.Contains(out, "wrote       /etc/systemd/system/matchstream.service") {
		t.Fatalf("first install:\n%s", out)
	}
	if out = run(t, 0, args...); !strings.Contains(out, "install: nothing to do") {
		t.Fatalf("second install:\n%s", out)
	}
	// doctor finds the installed unit's LimitNOFILE.
	out = run(t, exitDoctor, "doctor", "--config", "/dev/null", "--root", root, "--target-connections", "1000000",
		"--state-dir", filepath.Join(root, "state"), "--api", "127.0.0.1:1", "--stream", "127.0.0.1:2-3")
	if !strings.Contains(out, "LimitNOFILE (/etc/systemd/system/matchstream.service)  found 116384") {
		t.Fatalf("doctor does not check the installed unit:\n%s", out)
	}
	run(t, 0, append(args, "--uninstall")...)
	if left, _ := filepath.Glob(filepath.Join(root, "*")); len(left) != 0 {
		t.Fatalf("uninstall left %v", left)
	}
}

// install on the live root as a non-root user stops with the fix, before touching anything.
func TestInstallRefusesNonRoot(t *testing.T) {
	t.Parallel()
	args := []string{"install", "--config", "/dev/null"}
	if os.Geteuid() != 0 {
		out := run(t, exitUsage, args...)
		if !strings.Contains(out, "must run as root") || !strings.Contains(out, "hint: sudo matchstream install") {
			t.Fatalf("non-root install:\n%s", out)
		}
		return
	}
	// As root, run the binary as nobody from a directory nobody can read.
	dir, err := os.MkdirTemp("", "ms-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "matchstream")
	b, _ := os.ReadFile(binary)
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != exitUsage || !strings.Contains(string(out), "must run as root") ||
		!strings.Contains(string(out), "hint: sudo matchstream install") {
		t.Fatalf("install as nobody: %v\n%s", err, out)
	}
}
