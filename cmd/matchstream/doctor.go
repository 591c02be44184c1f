package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"matchstream/daemon"
	"matchstream/installer"
	"matchstream/sysctl"
)

func doctorCommand() *cli.Command {
	flags := append(daemonFlags(),
		&cli.BoolFlag{Name: "json", Usage: "print the checks as JSON"},
		&cli.StringFlag{Name: "proc", Value: "/proc", Usage: "read kernel settings from this proc tree (fixtures in tests)"},
		&cli.StringFlag{Name: "root", Value: "/", Usage: "look for installed units below this root"},
	)
	return &cli.Command{
		Name:  "doctor",
		Usage: "check that this host can carry the target load before the daemon serves",
		Description: "Checks every kernel knob of the tuning table, this process's open-files limit (and the\n" +
			"installed unit's LimitNOFILE), memory for the target connections, the configured ports\n" +
			"(free, or held by matchstream's socket units) and the store. One line per check: OK, WARN or\n" +
			"FAIL, the value found, the value needed and the command that fixes it. Exit 0 when nothing\n" +
			"FAILs, 3 otherwise. The service runs it as ExecStartPre, so it sees the unit's real limits.",
		Flags:  flags,
		Before: withConfigFile(flags),
		Action: func(c *cli.Context) error {
			cfg, err := configFrom(c)
			if err != nil {
				return err
			}
			d := installer.Doctor{
				Proc:   c.String("proc"),
				Root:   c.String("root"),
				Target: sysctl.Target{Connections: cfg.TargetConnections, Backlog: cfg.Listen.Backlog},
				Ports:  append(append(append([]string(nil), cfg.Listen.Stream...), cfg.Listen.StreamTLS...), cfg.Listen.API),
				API:    cfg.Listen.API, Admin: cfg.Listen.Admin,
				APITLS: cfg.TLS.Enabled() && cfg.TLS.API, ClearPosts: cfg.API.ClearPosts,
				Cert: cfg.TLS.Cert, Key: cfg.TLS.Key,
				NoFile: installer.ProcessNoFile,
				Store:  func(context.Context) (string, error) { return daemon.ProbeStore(cfg.StoreURL()) },
			}
			if cfg.Listen.Admin != "" {
				d.Ports = append(d.Ports, cfg.Listen.Admin)
			}
			checks := d.Run(c.Context)
			ok, warn, fail := installer.Counts(checks)
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				enc.Encode(struct {
					TargetConnections int               `json:"target_connections"`
					OK                int               `json:"ok"`
					Warn              int               `json:"warn"`
					Fail              int               `json:"fail"`
					Checks            []installer.Check `json:"checks"`
				}{cfg.TargetConnections, ok, warn, fail, checks})
			} else {
				installer.Print(c.App.Writer, cfg.TargetConnections, checks)
			}
			if fail > 0 {
				return &cmdError{code: exitDoctor, err: fmt.Errorf("doctor: %d checks FAIL for %d connections", fail, cfg.TargetConnections),
					hint: "each FAIL line above ends with the command that fixes it; 'matchstream install' persists the kernel settings"}
			}
			return nil
		},
	}
}
