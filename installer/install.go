package installer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"matchstream/sysctl"
	"matchstream/units"
)

// File is one host file the installer manages. Path is relative to the root.
type File struct {
	Path         string
	Content      string
	Mode         fs.FileMode
	OnlyIfAbsent bool // the default config: written once, never replaced
}

// ManifestPath is where the installer records what it wrote (relative to the root): the content
// hash of each file, the backup of any file it replaced that was not its own, and the directories it
// created. It is how a second run knows a file was edited by hand, and how --uninstall removes
// exactly what was written.
const ManifestPath = "var/lib/matchstream/install-manifest.json"

type manifest struct {
	Files map[string]manifestFile `json:"files"`
	Dirs  []string                `json:"dirs"`
}

type manifestFile struct {
	SHA256 string `json:"sha256"`
	// Restore is the backup of a file that was there before the first install: uninstall puts it back.
	Restore string `json:"restore,omitempty"`
}

// Params are what the host files are rendered from.
type Params struct {
	Target     sysctl.Target
	Units      units.Params
	StreamSpec string // --stream as given, for the default config
	Admin      string // the admin listener, for the default config ("" for none)
	// ReadKnob returns a knob's current value ("" if unknown): the sysctl file never lowers one.
	ReadKnob func(sysctl.Knob) string
}

// Files renders every host file for p.
func Files(p Params) ([]File, error) {
	us, err := units.Render(p.Units)
	if err != nil {
		return nil, err
	}
	read := p.ReadKnob
	if read == nil {
		read = func(sysctl.Knob) string { return "" }
	}
	files := []File{
		{Path: "etc/sysctl.d/60-matchstream.conf", Content: sysctl.Render(p.Target, read), Mode: 0o644},
		{Path: "etc/modprobe.d/matchstream-conntrack.conf", Content: sysctl.RenderModprobe(p.Target), Mode: 0o644},
		{Path: "etc/security/limits.d/matchstream.conf", Content: sysctl.RenderLimits(p.Target), Mode: 0o644},
	}
	for _, n := range units.Names {
		files = append(files, File{Path: "etc/systemd/system/" + n, Content: us[n], Mode: 0o644})
	}
	files = append(files, File{Path: strings.TrimPrefix(p.Units.Config, "/"), Mode: 0o644, OnlyIfAbsent: true,
		Content: DefaultConfig(p.Units.API, p.Admin, p.StreamSpec, p.Target)})
	return files, nil
}

// DefaultConfig is the config file written when there is none.
func DefaultConfig(api, admin, stream string, t sysctl.Target) string {
	return fmt.Sprintf(`# MatchStream configuration. Keys are the flags of 'matchstream serve --help';
# flags and MATCHSTREAM_* environment variables override what is set here.
api = %q
# /metrics, /debug/queues and /healthz for this host's operator and Prometheus ("" for none)
admin = %q
stream = %q
backlog = %d
target-connections = %d
# store = "bolt:///var/lib/matchstream/matchstream.db"
# client-queue = 64
# write-timeout = "30s"
# handshake-timeout = "10s"
#
# TLS: a certificate in /etc/matchstream/tls/ (0640 root:matchstream; certbot's, copied there by
# /usr/share/matchstream/certbot-deploy-hook), TLS 1.3 stream ports next to the plain ones, and
# HTTPS on the API port. Watcher posts from other hosts need HTTPS (or clear-posts = true).
# 'systemctl reload matchstream' reads a renewed certificate; changing these needs a restart.
# tls-cert = "/etc/matchstream/tls/fullchain.pem"
# tls-key = "/etc/matchstream/tls/privkey.pem"
# stream-tls = "0.0.0.0:9443-9444"
# api-tls = true
# clear-posts = false
`, api, admin, stream, t.Backlog, t.Connections)
}

// Installer writes host files below Root.
type Installer struct {
	Root   string
	DryRun bool
	Out    io.Writer
	Now    func() time.Time
}

func (in *Installer) path(rel string) string { return filepath.Join(in.Root, rel) }

func (in *Installer) loadManifest() (manifest, error) {
	m := manifest{Files: map[string]manifestFile{}}
	b, err := os.ReadFile(in.path(ManifestPath))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, fmt.Errorf("read install manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("install manifest %s: %w", in.path(ManifestPath), err)
	}
	if m.Files == nil {
		m.Files = map[string]manifestFile{}
	}
	return m, nil
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Result says what a run did (or, dry, would do).
type Result struct {
	Changed   []string
	Unchanged []string
	Kept      []string // present and left alone
	BackedUp  []string // backups made
}

// Install writes files. A file that is already as wanted is left alone; one this installer wrote
// last time is replaced; any other existing file (hand-edited, or not ours) is first backed up.
func (in *Installer) Install(files []File) (*Result, error) {
	m, err := in.loadManifest()
	if err != nil {
		return nil, err
	}
	res := &Result{}
	dirty := false // the manifest needs writing
	for _, f := range files {
		full := in.path(f.Path)
		old, err := os.ReadFile(full)
		exists := err == nil
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("read %s: %w", full, err)
		}
		rec, ours := m.Files[f.Path]
		switch {
		case exists && string(old) == f.Content:
			res.Unchanged = append(res.Unchanged, f.Path)
			if !ours {
				m.Files[f.Path] = manifestFile{SHA256: sum(old)}
				dirty = true
			}
			continue
		case exists && f.OnlyIfAbsent:
			res.Kept = append(res.Kept, f.Path)
			continue
		}
		if in.DryRun {
			fmt.Fprint(in.Out, unifiedDiff("/"+f.Path, string(old), f.Content))
			res.Changed = append(res.Changed, f.Path)
			continue
		}
		newRec := manifestFile{SHA256: sum([]byte(f.Content)), Restore: rec.Restore}
		if exists && (!ours || rec.SHA256 != sum(old)) {
			backup := full + ".matchstream-backup-" + in.Now().UTC().Format("20060102T150405")
			if err := os.WriteFile(backup, old, 0o600); err != nil {
				return res, fmt.Errorf("back up %s: %w", full, err)
			}
			res.BackedUp = append(res.BackedUp, strings.TrimPrefix(backup, in.Root))
			if !ours {
				newRec.Restore = backup // not ours at all: uninstall puts it back
			}
		}
		created, err := mkdirAll(filepath.Dir(full), in.Root)
		if err != nil {
			return res, err
		}
		for _, d := range created {
			if !slices.Contains(m.Dirs, d) {
				m.Dirs = append(m.Dirs, d)
			}
		}
		if err := writeAtomic(full, []byte(f.Content), f.Mode); err != nil {
			return res, err
		}
		m.Files[f.Path] = newRec
		res.Changed = append(res.Changed, f.Path)
		dirty = true
	}
	if in.DryRun || !dirty {
		return res, nil
	}
	return res, in.saveManifest(m)
}

func (in *Installer) saveManifest(m manifest) error {
	full := in.path(ManifestPath)
	created, err := mkdirAll(filepath.Dir(full), in.Root)
	if err != nil {
		return err
	}
	for _, d := range created {
		if !slices.Contains(m.Dirs, d) {
			m.Dirs = append(m.Dirs, d)
		}
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return writeAtomic(full, append(b, '\n'), 0o600)
}

// Uninstall removes what Install wrote: files still as written (an edited one is kept and named),
// puts back files it had replaced, and removes the directories it created when they are empty.
func (in *Installer) Uninstall() (*Result, error) {
	m, err := in.loadManifest()
	if err != nil {
		return nil, err
	}
	res := &Result{}
	paths := make([]string, 0, len(m.Files))
	for p := range m.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		rec := m.Files[p]
		full := in.path(p)
		cur, err := os.ReadFile(full)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return res, fmt.Errorf("read %s: %w", full, err)
		case sum(cur) != rec.SHA256:
			res.Kept = append(res.Kept, p)
			continue
		default:
			if in.DryRun {
				fmt.Fprint(in.Out, unifiedDiff("/"+p, string(cur), ""))
			} else if err := os.Remove(full); err != nil {
				return res, fmt.Errorf("remove %s: %w", full, err)
			}
		}
		if rec.Restore != "" && !in.DryRun {
			if err := os.Rename(rec.Restore, full); err != nil && !errors.Is(err, os.ErrNotExist) {
				return res, fmt.Errorf("restore %s: %w", full, err)
			}
		}
		res.Changed = append(res.Changed, p)
	}
	if in.DryRun {
		return res, nil
	}
	if err := os.Remove(in.path(ManifestPath)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, err
	}
	// Deepest first; a directory that holds anything else stays.
	sort.Slice(m.Dirs, func(i, j int) bool { return len(m.Dirs[i]) > len(m.Dirs[j]) })
	for _, d := range m.Dirs {
		os.Remove(in.path(d))
	}
	return res, nil
}

// mkdirAll creates dir and its missing parents, returning those it created (relative to root).
func mkdirAll(dir, root string) ([]string, error) {
	var missing []string
	for d := dir; d != root && d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	out := make([]string, 0, len(missing))
	for _, d := range missing {
		rel, _ := filepath.Rel(root, d)
		out = append(out, rel)
	}
	return out, nil
}

func writeAtomic(path string, b []byte, mode fs.FileMode) error {
	tmp := path + ".matchstream-tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil { // WriteFile's mode is filtered by the umask
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// InContainer reports whether this is a chroot or a container, where kernel settings must not be
// applied (they would change the host's, or fail).
func InContainer() bool {
	if exec.Command("ischroot").Run() == nil {
		return true
	}
	return exec.Command("systemd-detect-virt", "--container", "--quiet").Run() == nil
}

// Apply sets the rendered sysctls now, sizes the conntrack hash when the module is loaded, and makes
// systemd reread the units. proc and sys are the live /proc and /sys.
func Apply(out io.Writer, conf, proc, sys string) error {
	var errs []error
	for _, l := range strings.Split(conf, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		optional := strings.HasPrefix(l, "-")
		k, v, ok := strings.Cut(strings.TrimPrefix(l, "-"), " = ")
		if !ok {
			continue
		}
		path := filepath.Join(proc, "sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
			if optional && errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(out, "skipped %s: its module is not loaded\n", k)
				continue
			}
			errs = append(errs, fmt.Errorf("set %s: %w", k, err))
			continue
		}
		fmt.Fprintf(out, "set %s = %s\n", k, v)
	}
	hs := filepath.Join(sys, "module/nf_conntrack/parameters/hashsize")
	if _, err := os.Stat(hs); err == nil {
		for _, l := range strings.Split(conf, "\n") {
			if v, ok := strings.CutPrefix(l, "-net.netfilter.nf_conntrack_buckets = "); ok {
				if err := os.WriteFile(hs, []byte(v+"\n"), 0o644); err != nil {
					errs = append(errs, fmt.Errorf("set conntrack hashsize: %w", err))
				} else {
					fmt.Fprintf(out, "set nf_conntrack hashsize = %s\n", v)
				}
			}
		}
	}
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		if b, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("systemctl daemon-reload: %v: %s", err, b))
		} else {
			fmt.Fprintln(out, "systemctl daemon-reload")
		}
	}
	return errors.Join(errs...)
}
