package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"matchstream/daemon"
	"matchstream/daemon/listen"
	"matchstream/installer"
	"matchstream/sysctl"
	"matchstream/units"
)

// The packaged defaults: an appliance listens on every address for its clients and its API.
const (
	packagedAPI    = "0.0.0.0:8888"
	packagedStream = "0.0.0.0:9000-9007"
)

// distCommand renders the files the package ships that come from the code (units, sysctl default,
// conntrack options, default config, man page), so the package and `install` cannot disagree.
func distCommand() *cli.Command {
	return &cli.Command{
		Name:      "dist",
		Hidden:    true,
		Usage:     "render the package's generated files into DIR (used by make deb)",
		ArgsUsage: "DIR",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErr(errors.New("dist needs a directory"), "")
			}
			dir := c.Args().First()
			d := daemon.Default()
			streams, _ := listen.ParseRange(packagedStream)
			t := sysctl.Target{Connections: d.TargetConnections, Backlog: d.Listen.Backlog}
			us, err := units.Render(units.Params{Binary: "/usr/bin/matchstream", Config: defaultConfigFile, API: packagedAPI,
				Stream: streams, Backlog: t.Backlog, Connections: t.Connections, Watchdog: 30 * time.Second})
			if err != nil {
				return failure(err, "")
			}
			files := map[string]string{
				"usr/lib/sysctl.d/60-matchstream.conf":      sysctl.Render(t, func(sysctl.Knob) string { return "" }),
				"etc/modprobe.d/matchstream-conntrack.conf": sysctl.RenderModprobe(t),
				"etc/matchstream/matchstream.toml": installer.DefaultConfig(packagedAPI, daemon.DefaultAdmin, packagedStream, t) +
					"watcher-token-file = \"/etc/matchstream/watcher.token\"\n",
			}
			for n, text := range us {
				files["usr/lib/systemd/system/"+n] = text
			}
			man, err := c.App.ToManWithSection(1)
			if err != nil {
				return failure(err, "")
			}
			var gz bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
			zw.Write([]byte(man))
			zw.Close()
			files["usr/share/man/man1/matchstream.1.gz"] = gz.String()
			for p, text := range files {
				full := filepath.Join(dir, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					return failure(err, "")
				}
				if err := os.WriteFile(full, []byte(text), 0o644); err != nil {
					return failure(err, "")
				}
			}
			fmt.Fprintf(c.App.Writer, "dist: %d files in %s\n", len(files), dir)
			return nil
		},
	}
}
