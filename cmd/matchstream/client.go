package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"matchstream/cmd/matchstream/simulate"
)

func clientCommand() *cli.Command {
	return &cli.Command{
		Name:  "client",
		Usage: "simulate users watching a match and check each got all of it",
		Description: "Each simulated user asks the API where to connect (/connect, or /1/checkin for protocol\n" +
			"2), sends its connect line and reads until the server closes. It fails (exit 1, with the\n" +
			"reason) when a user cannot connect, is dropped before the stop event, or misses an event\n" +
			"(protocol 3: a gap in seq; 1 and 2: what it got is not the end of the match's history).\n" +
			"On success it prints one line: users, events, connect times.",
		Flags: append([]cli.Flag{
			apiFlag(),
			&cli.StringFlag{Name: "match", EnvVars: env("match"), Usage: "match id (protocol 2 watches the current live match)"},
			&cli.IntFlag{Name: "n", Value: 1, Usage: "number of simulated users"},
			&cli.IntFlag{Name: "c", Value: 100, Usage: "at most this many users connecting at once"},
			&cli.IntFlag{Name: "protocol", Value: 1, Usage: "protocol version: 1, 2 or 3"},
			&cli.Int64Flag{Name: "from", Value: -1, Usage: "protocol 3: resume after this seq (FROM); -1 = start from the status"},
			&cli.BoolFlag{Name: "tls", Usage: "connect to a TLS stream port (/connect?tls=1) and speak TLS 1.3 on it; an https:// --api is HTTPS whatever this says"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up on a user still connected after this long (0 = wait for the end of the match)"},
		}, tlsFlags()...),
		Action: func(c *cli.Context) error {
			cfg := simulate.Config{API: c.String("api"), Match: c.String("match"), Protocol: c.Int("protocol"),
				Users: c.Int("n"), Concurrency: c.Int("c"), From: c.Int64("from"), Timeout: c.Duration("timeout"),
				DialTimeout: 10 * time.Second, StreamTLS: c.Bool("tls")}
			tc, err := clientTLS(c)
			if err != nil {
				return err
			}
			cfg.TLS = tc
			if cfg.From >= 0 && cfg.Protocol != 3 {
				return usageErr(errors.New("--from needs --protocol 3"), "")
			}
			if err := cfg.Validate(); err != nil {
				return usageErr(err, "see 'matchstream client --help'")
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := simulate.Run(ctx, cfg)
			if err != nil {
				return failure(err, "")
			}
			if len(res.Failures) > 0 {
				for _, f := range res.Failures[:min(10, len(res.Failures))] {
					fmt.Fprintf(c.App.ErrWriter, "user %d: %s\n", f.User, f.Reason)
				}
				return failure(errors.New(res.Summary(cfg.Protocol)), "")
			}
			fmt.Fprintln(c.App.Writer, res.Summary(cfg.Protocol))
			return nil
		},
	}
}
