package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

func newApp() *cli.App {
	return &cli.App{
		Name:    "matchstream",
		Usage:   "stream live football matches to very many TCP clients",
		Version: version,
		Description: "One binary: the daemon (serve) and the operator's tools. Every flag can also be set\n" +
			"in the environment (MATCHSTREAM_<FLAG>, dashes as underscores) and, for serve, in the\n" +
			"TOML config file (key = flag name). Flags win over the environment, which wins over the file.",
		Commands: []*cli.Command{
			serveCommand(),
			watcherCommand(),
			clientCommand(),
			doctorCommand(),
			installCommand(),
			benchCommand(),
			topCommand(),
			benchBaselineCommand(),
			benchClientsCommand(),
			distCommand(),
			versionCommand(),
		},
		HideVersion:          false,
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints and exits
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageErr(err, "see 'matchstream "+c.Command.Name+" --help'")
		},
	}
}

// env names the environment variable of a flag: MATCHSTREAM_ plus the flag in capitals.
func env(flag string) []string {
	return []string{"MATCHSTREAM_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

// withConfigFile makes a command read its altsrc flags from the TOML file named by --config. The
// default file may be absent; a file named explicitly must exist; keys that are not flags are an
// error, so a typo in the file is not silently ignored.
func withConfigFile(flags []cli.Flag) cli.BeforeFunc {
	return func(c *cli.Context) error {
		path := c.String("config")
		if !c.IsSet("config") {
			if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
				return nil
			}
		}
		var raw map[string]any
		if _, err := toml.DecodeFile(path, &raw); err != nil {
			return usageErr(fmt.Errorf("config file %s: %w", path, err), "")
		}
		var known []string
		for _, f := range flags {
			if _, ok := f.(altsrc.FlagInputSourceExtension); ok {
				known = append(known, f.Names()[0])
			}
		}
		for k := range raw {
			if !slices.Contains(known, k) {
				return usageErr(fmt.Errorf("config file %s: unknown key %q", path, k),
					"keys are the flag names of 'matchstream serve --help': "+strings.Join(known, ", "))
			}
		}
		src, err := altsrc.NewTomlSourceFromFile(path)
		if err != nil {
			return usageErr(fmt.Errorf("config file %s: %w", path, err), "")
		}
		if err := altsrc.ApplyInputSourceValues(c, src, flags); err != nil {
			return usageErr(fmt.Errorf("config file %s: %w", path, err), "")
		}
		return nil
	}
}

func logLevel(c *cli.Context) (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return 0, usageErr(fmt.Errorf("log-level %q: want debug, info, warn or error", c.String("log-level")), "")
	}
	return level, nil
}

func logFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("log-level"),
			Usage: "debug, info, warn or error"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("log-format"),
			Usage: "text or json on stderr; under systemd, unless set, logs go to journald with structured fields"}),
	}
}

// newLogger builds the logger --log-level and --log-format ask for, at level (which a reload may
// change later).
func newLogger(c *cli.Context, w io.Writer, level *slog.LevelVar) (*slog.Logger, error) {
	l, err := logLevel(c)
	if err != nil {
		return nil, err
	}
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if underJournal() && !c.IsSet("log-format") {
		return slog.New(&journalHandler{level: level}), nil
	}
	switch c.String("log-format") {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErr(fmt.Errorf("log-format %q: want text or json", c.String("log-format")), "")
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintln(c.App.Writer, "matchstream", version)
			return nil
		},
	}
}
