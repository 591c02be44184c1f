package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/urfave/cli/v2"

	"matchstream/daemon/api"
)

func topCommand() *cli.Command {
	return &cli.Command{
		Name:  "top",
		Usage: "live view of a daemon: matches, delivery rates, longest client queues, connections, memory, GC",
		Description: "Refreshes every --interval like top(1), over plain SSH (ANSI clear only). The longest\n" +
			"client queues are the original's \"sort processes by message queue length\". --once prints one\n" +
			"snapshot (two samples --interval apart, for the rates) and exits, for scripts.",
		Flags: append([]cli.Flag{
			apiFlag(),
			&cli.BoolFlag{Name: "once", Usage: "print one snapshot and exit"},
			&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "refresh period"},
		}, tlsFlags()...),
		Action: func(c *cli.Context) error {
			base := strings.TrimRight(c.String("api"), "/")
			iv := c.Duration("interval")
			hc, err := httpClient(c, 5*time.Second)
			if err != nil {
				return err
			}
			prev, err := sample(hc, base)
			if err != nil {
				return failure(err, "is the daemon running? check --api")
			}
			if c.Bool("once") {
				time.Sleep(iv)
				cur, err := sample(hc, base)
				if err != nil {
					return failure(err, "")
				}
				render(c.App.Writer, base, prev, cur)
				return nil
			}
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			t := time.NewTicker(iv)
			defer t.Stop()
			for {
				select {
				case <-sig:
					return nil
				case <-t.C:
				}
				cur, err := sample(hc, base)
				if err != nil {
					fmt.Fprintf(c.App.Writer, "\033[H\033[2J%s: %v\n", base, err)
					continue
				}
				fmt.Fprint(c.App.Writer, "\033[H\033[2J")
				render(c.App.Writer, base, prev, cur)
				prev = cur
			}
		},
	}
}

// snapshot is one reading of the daemon.
type snapshot struct {
	at      time.Time
	matches []api.Summary
	queues  []api.Queue
	metrics map[string]*dto.MetricFamily
}

func sample(hc *http.Client, base string) (*snapshot, error) {
	s := &snapshot{at: time.Now()}
	get := func(path string) ([]byte, error) {
		resp, err := hc.Get(base + path)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	}
	b, err := get("/matches")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &s.matches); err != nil {
		return nil, err
	}
	if b, err = get("/debug/queues?top=10"); err != nil {
		return nil, err
	}
	json.Unmarshal(b, &s.queues)
	if b, err = get("/metrics"); err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	s.metrics, err = p.TextToMetricFamilies(strings.NewReader(string(b)))
	return s, err
}

// value sums a metric's samples whose labels match (all when label is "").
func (s *snapshot) value(name, label, want string) float64 {
	mf := s.metrics[name]
	if mf == nil {
		return 0
	}
	var v float64
	for _, m := range mf.Metric {
		if label != "" {
			ok := false
			for _, l := range m.Label {
				ok = ok || l.GetName() == label && l.GetValue() == want
			}
			if !ok {
				continue
			}
		}
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		case m.Summary != nil:
			v += float64(m.Summary.GetSampleCount())
		}
	}
	return v
}

func (s *snapshot) labels(name, label string) []string {
	var out []string
	if mf := s.metrics[name]; mf != nil {
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == label {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func render(w io.Writer, base string, prev, cur *snapshot) {
	dt := cur.at.Sub(prev.at).Seconds()
	rate := func(name string) float64 {
		if dt <= 0 {
			return 0
		}
		return (cur.value(name, "", "") - prev.value(name, "", "")) / dt
	}
	conns := cur.value("matchstream_connections", "", "")
	rss := cur.value("process_resident_memory_bytes", "", "")
	perConn := "-"
	if conns > 0 {
		perConn = fmt.Sprintf("%.2f KB", rss/1024/conns)
	}
	gcN := cur.value("go_gc_duration_seconds", "", "")
	fmt.Fprintf(w, "matchstream top — %s — %s\n", base, cur.at.Format("15:04:05"))
	by := func(p string) float64 { return cur.value("matchstream_subscribers_by_protocol", "protocol", p) }
	fmt.Fprintf(w, "connections %.0f (v1 %.0f, V:2 %.0f, v3 %.0f, SSE %.0f)   long-polls %.0f   RSS %.1f MB (%s per connection, all in)   goroutines %.0f   GCs %.0f (+%.0f)\n",
		conns, by("1"), by("2"), by("3"), by("sse"), cur.value("matchstream_longpoll_waiting", "", ""),
		rss/(1<<20), perConn, cur.value("go_goroutines", "", ""), gcN, gcN-prev.value("go_gc_duration_seconds", "", ""))
	fmt.Fprintf(w, "events %.1f/s   deliveries %.0f/s   slow-consumer cuts %.0f   refused handshakes %.0f   longest queue ever %.0f frames\n",
		rate("matchstream_events_accepted_total"), rate("matchstream_deliveries_total"),
		cur.value("matchstream_slow_consumer_disconnects_total", "", ""), cur.value("matchstream_handshake_errors_total", "", ""),
		cur.value("matchstream_client_queue_max_frames", "", ""))
	var ports []string
	for _, p := range cur.labels("matchstream_connections", "port") {
		ports = append(ports, fmt.Sprintf("%s:%.0f", p, cur.value("matchstream_connections", "port", p)))
	}
	fmt.Fprintf(w, "ports %s\n\n", strings.Join(ports, " "))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MATCH\tSCORE\tPERIOD\tSTATE\tEVENTS\tSUBSCRIBERS\tDELIVERIES/S")
	ms := cur.matches
	sort.Slice(ms, func(i, j int) bool { return ms[i].Subscribers > ms[j].Subscribers })
	for _, m := range ms {
		before := uint64(0)
		for _, p := range prev.matches {
			if p.ID == m.ID {
				before = p.Seq
			}
		}
		dps := 0.0
		if dt > 0 {
			dps = float64(m.Seq-min(before, m.Seq)) * float64(m.Subscribers) / dt
		}
		fmt.Fprintf(tw, "%s\t%s %d-%d %s\t%s\t%s\t%d\t%d\t%.0f\n", m.ID, m.Home, m.HomeScore, m.VisitScore, m.Visit, m.Period, m.State, m.Seq, m.Subscribers, dps)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nLONGEST CLIENT QUEUES")
	if len(cur.queues) == 0 {
		fmt.Fprintln(w, "  none: every client is keeping up")
	}
	for _, q := range cur.queues {
		fmt.Fprintf(w, "  %-30s protocol %d  %d frames queued\n", q.Match, q.Version, q.Queued)
	}
}
