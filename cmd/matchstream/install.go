package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"matchstream/daemon"
	"matchstream/installer"
	"matchstream/sysctl"
	"matchstream/units"
)

func installCommand() *cli.Command {
	flags := append(daemonFlags(),
		&cli.StringFlag{Name: "root", Value: "/", Usage: "write below this directory instead of / (image builds, tests); nothing is applied then"},
		&cli.BoolFlag{Name: "dry-run", Usage: "print a unified diff of what would change and write nothing"},
		&cli.BoolFlag{Name: "uninstall", Usage: "remove exactly what install wrote, putting back files it replaced"},
		&cli.StringFlag{Name: "binary", DefaultText: "this binary with --root /, /usr/bin/matchstream otherwise",
			Usage: "path of the matchstream binary the units run"},
		&cli.DurationFlag{Name: "watchdog", Value: 30e9, Usage: "WatchdogSec= of the service (the daemon pings at half of it)"},
	)
	return &cli.Command{
		Name:  "install",
		Usage: "tune the host and write the systemd units for the target load",
		Description: "Writes /etc/sysctl.d/60-matchstream.conf, /etc/modprobe.d/matchstream-conntrack.conf,\n" +
			"/etc/security/limits.d/matchstream.conf, matchstream.socket, matchstream-api.socket and\n" +
			"matchstream.service in /etc/systemd/system, and the config file if there is none, all\n" +
			"rendered from the configuration (ports, backlog, --target-connections). With --root / as\n" +
			"root it then applies the kernel settings now (not in a chroot or container) and runs\n" +
			"systemctl daemon-reload when systemd runs. A second run changes nothing. A file it would\n" +
			"replace that it did not write (or that was edited since) is backed up first. The API and\n" +
			"stream ports listen on all addresses unless --api / --stream (or the config) say otherwise.",
		Flags:  flags,
		Before: withConfigFile(flags),
		Action: runInstall,
	}
}

func runInstall(c *cli.Context) error {
	// An appliance serves the network: unless told otherwise, listen on every address.
	if !c.IsSet("api") {
		c.Set("api", "0.0.0.0:8888")
	}
	if !c.IsSet("stream") {
		c.Set("stream", "0.0.0.0:9000-9007")
	}
	if !c.IsSet("admin") { // metrics and debug state for this host only
		c.Set("admin", daemon.DefaultAdmin)
	}
	cfg, err := configFrom(c)
	if err != nil {
		return err
	}
	root, err := filepath.Abs(c.String("root"))
	if err != nil {
		return usageErr(err, "")
	}
	live := root == "/"
	dry := c.Bool("dry-run")
	if live && os.Geteuid() != 0 && !dry {
		return usageErr(errors.New("install writes /etc and kernel settings: it must run as root"),
			"sudo matchstream install, or --root DIR to write into a directory, or --dry-run to see what it would do")
	}
	bin := c.String("binary")
	if bin == "" {
		bin = "/usr/bin/matchstream"
		if exe, err := os.Executable(); err == nil && live {
			bin = exe
		}
	}
	in := &installer.Installer{Root: root, DryRun: dry, Out: c.App.Writer, Now: time.Now}
	out := c.App.Writer
	if c.Bool("uninstall") {
		res, err := in.Uninstall()
		if err != nil {
			return failure(err, "")
		}
		for _, p := range res.Changed {
			fmt.Fprintf(out, "removed   /%s\n", p)
		}
		for _, p := range res.Kept {
			fmt.Fprintf(out, "kept      /%s (edited since install)\n", p)
		}
		fmt.Fprintf(out, "uninstall: %d removed, %d kept; kernel settings in effect stay until reboot\n", len(res.Changed), len(res.Kept))
		return nil
	}
	target := sysctl.Target{Connections: cfg.TargetConnections, Backlog: cfg.Listen.Backlog}
	p := installer.Params{Target: target, StreamSpec: c.String("stream"), Admin: cfg.Listen.Admin,
		// The installed service always reads the packaged path, whatever file install read its
		// settings from; install writes that file when it is absent.
		Units: units.Params{Binary: bin, Config: defaultConfigFile, API: cfg.Listen.API, Stream: cfg.Listen.Stream,
			Backlog: cfg.Listen.Backlog, Connections: cfg.TargetConnections, Watchdog: c.Duration("watchdog")}}
	if live {
		p.ReadKnob = sysctl.Reader("/proc") // never write a value below what the host already has
	}
	files, err := installer.Files(p)
	if err != nil {
		return failure(err, "")
	}
	res, err := in.Install(files)
	if err != nil {
		return failure(err, "")
	}
	verb, done := "wrote", "written"
	if dry {
		verb, done = "would write", "to write"
	}
	for _, f := range res.Changed {
		fmt.Fprintf(out, "%-11s /%s\n", verb, f)
	}
	for _, f := range res.BackedUp {
		fmt.Fprintf(out, "backed up   %s (it was not as install last wrote it)\n", f)
	}
	for _, f := range res.Kept {
		fmt.Fprintf(out, "kept        /%s (exists; install never replaces it)\n", f)
	}
	if len(res.Changed) == 0 {
		fmt.Fprintf(out, "install: nothing to do: every file is as install wrote it for %d connections\n", target.Connections)
	} else {
		fmt.Fprintf(out, "install: %d files %s, %d unchanged, for %d connections (LimitNOFILE=%d)\n",
			len(res.Changed), done, len(res.Unchanged), target.Connections, sysctl.NoFile(target.Connections))
	}
	switch {
	case dry || !live:
	case installer.InContainer():
		fmt.Fprintln(out, "not applying kernel settings: this is a chroot or container (they would be the host's)")
	default:
		if err := installer.Apply(out, files[0].Content, "/proc", "/sys"); err != nil {
			return failure(err, "the files are written; fix the cause and run install again, or reboot")
		}
		fmt.Fprintln(out, "next: systemctl enable --now matchstream.socket matchstream-api.socket; then matchstream doctor")
	}
	return nil
}
