package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"matchstream/cmd/matchstream/matchfile"
	"matchstream/daemon"
	"matchstream/daemon/api"
	"matchstream/daemon/match"
)

func apiFlag() cli.Flag {
	return &cli.StringFlag{Name: "api", Value: "http://127.0.0.1:8888", EnvVars: env("api_url"),
		Usage: "base URL of the daemon's HTTP API"}
}

func watcherCommand() *cli.Command {
	return &cli.Command{
		Name:      "watcher",
		Usage:     "replay a match file into a running daemon (the fake watcher)",
		ArgsUsage: "FILE",
		Description: "Posts each event of FILE to POST /matches/{id}/events at the file's own pace (--speed 1),\n" +
			"X times faster (--speed X) or as fast as the daemon accepts (--speed 0). FILE is our JSON\n" +
			"Lines format or the original sample's Erlang-term format (e.g. elp-tig-2011-09-10.config).\n" +
			"The match id is <home>-<visit>-<start_date> from the start event, or --match. Every rejected\n" +
			"event is reported with its line and reason, and the exit status is then non-zero.",
		Flags: append([]cli.Flag{
			apiFlag(),
			&cli.StringFlag{Name: "token", EnvVars: env("watcher-token"), Usage: "watcher bearer token"},
			&cli.StringFlag{Name: "token-file", EnvVars: env("watcher-token-file"),
				DefaultText: daemon.DefaultStateDir + "/watcher.token",
				Usage:       "file holding the watcher token (used when --token is not given)"},
			&cli.Float64Flag{Name: "speed", Value: 1, EnvVars: env("speed"),
				Usage: "replay speed: 1 = the file's pace, 10 = ten times faster, 0 = no waiting"},
			&cli.StringFlag{Name: "match", EnvVars: env("match"), Usage: "match id (default: from the start event)"},
			&cli.BoolFlag{Name: "restamp", Usage: "let the daemon stamp each event with the time it is posted instead of the file's time"},
			&cli.DurationFlag{Name: "retry-for", Value: 30 * time.Second,
				Usage: "keep retrying an event while the daemon is unreachable or answers 503 for this long"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only rejections and the summary"},
		}, tlsFlags()...),
		Action: runWatcher,
	}
}

func readToken(c *cli.Context) (string, error) {
	if t := c.String("token"); t != "" {
		return t, nil
	}
	path := c.String("token-file")
	if path == "" {
		path = daemon.DefaultStateDir + "/watcher.token"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErr(fmt.Errorf("no watcher token: %w", err), "pass --token or --token-file (serve writes one to <state-dir>/watcher.token)")
	}
	return strings.TrimSpace(string(b)), nil
}

func runWatcher(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr(errors.New("watcher needs exactly one match FILE"), "see 'matchstream watcher --help'")
	}
	speed := c.Float64("speed")
	if speed < 0 {
		return usageErr(fmt.Errorf("speed %v: must be 0 or more", speed), "")
	}
	token, err := readToken(c)
	if err != nil {
		return err
	}
	f, err := os.Open(c.Args().First())
	if err != nil {
		return usageErr(err, "")
	}
	mf, err := matchfile.Read(f)
	f.Close()
	if err != nil {
		return usageErr(fmt.Errorf("%s: %w", c.Args().First(), err), "")
	}
	id := c.String("match")
	if id == "" {
		if id = mf.ID(); id == "" {
			return usageErr(errors.New("the file has no start event: pass --match ID"), "")
		}
	}
	base := strings.TrimRight(c.String("api"), "/")
	endpoint := base + "/matches/" + url.PathEscape(id) + "/events"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hc, err := httpClient(c, 30*time.Second)
	if err != nil {
		return err
	}
	out := c.App.Writer

	rejected, posted := 0, 0
	var first, last uint64
	for i, e := range mf.Entries {
		if i > 0 && speed > 0 {
			wait := time.Duration(float64(e.Event.At.Sub(mf.Entries[i-1].Event.At)) / speed)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return failure(fmt.Errorf("interrupted after %d of %d events", i, len(mf.Entries)), "")
			}
		}
		ev := e.Event
		if c.Bool("restamp") {
			ev.At = time.Time{}
		}
		retried := func(why string) { fmt.Fprintf(c.App.ErrWriter, "line %d: %s: %s\n", e.Line, ev.Kind, why) }
		res, err := postEvent(ctx, hc, endpoint, token, ev, e.Line, c.Duration("retry-for"), retried)
		var rej *rejection
		switch {
		case errors.As(err, &rej):
			rejected++
			fmt.Fprintf(c.App.ErrWriter, "line %d: %s rejected: %s\n", e.Line, ev.Kind, rej.msg)
			continue
		case err != nil:
			return failure(fmt.Errorf("line %d: %w (%d of %d events posted)", e.Line, err, posted, len(mf.Entries)), "")
		}
		posted++
		if first == 0 {
			first = res.Seq
		}
		last = res.Seq
		if !c.Bool("quiet") {
			fmt.Fprintf(out, "seq %d %s\n", res.Seq, ev.Kind)
		}
	}
	fmt.Fprintf(out, "posted %d events to %s (seq %d-%d), %d rejected\n", posted, id, first, last, rejected)
	if rejected > 0 {
		return failure(fmt.Errorf("%d of %d events were rejected", rejected, len(mf.Entries)), "")
	}
	return nil
}

// rejection is a 4xx answer: the event will never be accepted as it is.
type rejection struct{ msg string }

func (r *rejection) Error() string { return r.msg }

// postEvent posts one event under an idempotency key (line: its place in the file). It retries
// when nothing can have been stored (the connection was refused, or 503) and when the outcome is
// unknown (504, from a Redis store: a primary lost mid-append): the key makes the daemon answer a
// batch it already stored with its seq instead of storing it twice. A retry never duplicates an
// event. Any other failure stops it: an answer lost after the request was sent cannot be told
// apart from a stored event on the embedded store, which keeps no keys.
func postEvent(ctx context.Context, hc *http.Client, endpoint, token string, ev match.Event, line int, retryFor time.Duration, retried func(why string)) (*api.PostResult, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\n%d\n%s", endpoint, line, body)))
	key := hex.EncodeToString(sum[:16])
	deadline := time.Now().Add(retryFor)
	backoff := 100 * time.Millisecond
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := hc.Do(req)
		if err != nil {
			if !isRefused(err) {
				// Sent, and no answer: the embedded store keeps no keys, so do not guess.
				return nil, fmt.Errorf("post: %w", err)
			}
			retried("daemon unreachable, retrying")
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			switch {
			case resp.StatusCode/100 == 2:
				var res api.PostResult
				if err := json.Unmarshal(b, &res); err != nil {
					return nil, fmt.Errorf("post: bad reply %q: %w", b, err)
				}
				return &res, nil
			case resp.StatusCode == http.StatusServiceUnavailable:
				retried("got 503, retrying")
			case resp.StatusCode == http.StatusGatewayTimeout:
				retried("got 504 (the store may have it), retrying under the same key")
			case resp.StatusCode == http.StatusUnauthorized:
				return nil, usageErr(errors.New("the daemon refused the watcher token (401)"), "check --token / --token-file against the daemon's watcher token")
			default:
				var e api.ErrorBody
				if json.Unmarshal(b, &e) == nil && e.Error != "" {
					return nil, &rejection{msg: e.Error}
				}
				return nil, &rejection{msg: resp.Status}
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("post: %w (retried for %s)", err, retryFor)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
