package installer_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"matchstream/installer"
	"matchstream/sysctl"
	"matchstream/units"
)

func files(t *testing.T, connections int) []installer.File {
	t.Helper()
	fs, err := installer.Files(installer.Params{
		Target:     sysctl.Target{Connections: connections, Backlog: 65535},
		StreamSpec: "0.0.0.0:9000-9001",
		Units: units.Params{Binary: "/usr/bin/matchstream", Config: "/etc/matchstream/matchstream.toml",
			API: "0.0.0.0:8888", Stream: []string{"0.0.0.0:9000", "0.0.0.0:9001"}, Backlog: 65535,
			Connections: connections, Watchdog: 30 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// snapshot is every file and directory below root with its content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			out[rel+"/"] = ""
			return nil
		}
		b, _ := os.ReadFile(p)
		out[rel] = string(b)
		return nil
	})
	return out
}

func newRoot(t *testing.T) string {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("box\n"), 0o644)
	return root
}

func installer_(root string, dry bool, out *bytes.Buffer) *installer.Installer {
	return &installer.Installer{Root: root, DryRun: dry, Out: out,
		Now: func() time.Time { return time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC) }}
}

func TestInstallIdempotentAndUninstall(t *testing.T) {
	root := newRoot(t)
	before := snapshot(t, root)
	var out bytes.Buffer

	res, err := installer_(root, false, &out).Install(files(t, 1_000_000))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 7 || len(res.BackedUp) != 0 {
		t.Fatalf("fresh install: %+v", res)
	}
	for _, f := range files(t, 1_000_000) {
		b, err := os.ReadFile(filepath.Join(root, f.Path))
		if err != nil || string(b) != f.Content {
			t.Errorf("%s not written as rendered", f.Path)
		}
	}
	if st, _ := os.Stat(filepath.Join(root, "etc/sysctl.d/60-matchstream.conf")); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}

	res, err = installer_(root, false, &out).Install(files(t, 1_000_000))
	if err != nil || len(res.Changed) != 0 || len(res.Unchanged) != 7 || len(res.Kept) != 0 {
		t.Fatalf("second run is not a no-op: %+v %v", res, err)
	}

	if _, err := installer_(root, false, &out).Uninstall(); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, root)
	if len(after) != len(before) {
		t.Fatalf("uninstall left the root changed:\nbefore %v\nafter  %v", keys(before), keys(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("uninstall changed %s", k)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestInstallBacksUpWhatItDidNotWrite(t *testing.T) {
	root := newRoot(t)
	limits := filepath.Join(root, "etc/security/limits.d/matchstream.conf")
	os.MkdirAll(filepath.Dir(limits), 0o755)
	os.WriteFile(limits, []byte("* soft nofile 4096\n"), 0o644) // someone's own file, there before us
	conf := filepath.Join(root, "etc/matchstream/matchstream.toml")
	os.MkdirAll(filepath.Dir(conf), 0o755)
	os.WriteFile(conf, []byte("api = \"10.0.0.1:8888\"\n"), 0o640) // an operator's config: never replaced
	before := snapshot(t, root)
	var out bytes.Buffer

	res, err := installer_(root, false, &out).Install(files(t, 100_000))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.BackedUp) != 1 || !strings.HasSuffix(res.BackedUp[0], "matchstream.conf.matchstream-backup-20261123T120000") {
		t.Fatalf("pre-existing file not backed up: %+v", res)
	}
	if b, _ := os.ReadFile(conf); string(b) != "api = \"10.0.0.1:8888\"\n" || len(res.Kept) != 1 {
		t.Fatalf("existing config replaced: %s", b)
	}

	// A hand edit of a file we wrote is backed up before the next run replaces it.
	sysconf := filepath.Join(root, "etc/sysctl.d/60-matchstream.conf")
	os.WriteFile(sysconf, []byte("net.core.somaxconn = 1024\n"), 0o644)
	in := installer_(root, false, &out)
	in.Now = func() time.Time { return time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC) }
	res, err = in.Install(files(t, 100_000))
	if err != nil || len(res.Changed) != 1 || len(res.BackedUp) != 1 {
		t.Fatalf("after a hand edit: %+v %v", res, err)
	}
	if b, _ := os.ReadFile(sysconf + ".matchstream-backup-20261124T080000"); string(b) != "net.core.somaxconn = 1024\n" {
		t.Fatalf("hand edit lost: %q", b)
	}

	// Uninstall puts the pre-existing file back; the hand edit's backup stays for its owner.
	if _, err := installer_(root, false, &out).Uninstall(); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, root)
	delete(after, "etc/sysctl.d/60-matchstream.conf.matchstream-backup-20261124T080000")
	delete(after, "etc/sysctl.d/")
	for k, v := range before {
		if after[k] != v {
			t.Errorf("after uninstall %s = %q, want %q", k, after[k], v)
		}
	}
	if len(after) != len(before) {
		t.Errorf("after uninstall: %v\nbefore: %v", keys(after), keys(before))
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	root := newRoot(t)
	before := snapshot(t, root)
	var out bytes.Buffer
	res, err := installer_(root, true, &out).Install(files(t, 1_000_000))
	if err != nil || len(res.Changed) != 7 {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if after := snapshot(t, root); len(after) != len(before) {
		t.Fatalf("dry run wrote files: %v", keys(after))
	}
	for _, w := range []string{"--- /dev/null\n+++ b/etc/sysctl.d/60-matchstream.conf\n@@ -0,0 +1,", "+LimitNOFILE=1016384\n", "+ListenStream=0.0.0.0:9001\n"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("dry-run diff lacks %q", w)
		}
	}
	// After a real install, a dry run for another target shows only what changes.
	installer_(root, false, &bytes.Buffer{}).Install(files(t, 1_000_000))
	out.Reset()
	installer_(root, true, &out).Install(files(t, 100_000))
	if !strings.Contains(out.String(), "-LimitNOFILE=1016384\n+LimitNOFILE=116384\n") || strings.Contains(out.String(), "ListenStream") {
		t.Errorf("dry-run diff for a new target:\n%s", out.String())
	}
}
