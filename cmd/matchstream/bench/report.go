package bench

import (
	"fmt"
	"html"
	"io"
	"strings"
	"text/tabwriter"
)

// serverPost is the daemon's own time for the posts, or "-" for a server that does not say.
func serverPost(f Figures) string {
	if f.ServerPostP99Ms == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f/%.1f", f.ServerPostP50Ms, f.ServerPostP99Ms)
}

// Print writes the figures as a table, then each baseline as a ratio to matchstream.
func Print(w io.Writer, r *Result) {
	fmt.Fprintf(w, "machine: %s\n", r.Machine)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "server\tusers\tconnected\trefused\ttimed out\tconnect p50/p99 ms\tconnects/s\tfirst bytes p50/p99 ms\tRSS/conn KB\tto last client ms\tlatency p50/p99/max ms\tpost p50/p99 ms\tserver post p50/p99 ms\tCPU/event ms\tdeliveries/s\tall delivered")
	for _, f := range r.Runs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.1f/%.1f\t%.0f\t%.1f/%.1f\t%.2f\t%.1f\t%.1f/%.1f/%.1f\t%.1f/%.1f\t%s\t%.1f\t%.0f\t%v\n", f.Server, f.Users, f.Connected,
			f.Refused, f.TimedOut, f.ConnectP50, f.ConnectP99, f.ConnectsPerSec, f.FirstP50, f.FirstP99, f.RSSPerConnKB, f.LastClientMs, f.LatencyP50, f.LatencyP99,
			f.LatencyMax, f.PostP50Ms, f.PostP99Ms, serverPost(f), f.CPUPerEventMs, f.DeliveriesSec, f.AllDelivered)
	}
	tw.Flush()
	if len(r.Runs) < 2 {
		return
	}
	ms := r.Runs[0]
	var ours *Figures // our TLS run: set against our plain one and against NATS over TLS
	for i, b := range r.Runs[1:] {
		if b.Server == "matchstream-tls" && ms.Server == "matchstream" {
			ours = &r.Runs[1+i]
			continue
		}
		compare(w, ms, b)
	}
	if ours == nil {
		return
	}
	compare(w, *ours, ms)
	for _, b := range r.Runs {
		if b.Server == "nats-tls" {
			compare(w, *ours, b)
		}
	}
}

// compare prints a's figures as ratios to b's.
func compare(w io.Writer, a, b Figures) {
	fmt.Fprintf(w, "%s / %s: to last client %s, latency p99 %s, CPU per event %s, RSS per connection %s, first bytes p99 %s, connects/s %s\n",
		a.Server, b.Server, ratio(a.LastClientMs, b.LastClientMs), ratio(a.LatencyP99, b.LatencyP99),
		ratio(a.CPUPerEventMs, b.CPUPerEventMs), ratio(a.RSSPerConnKB, b.RSSPerConnKB), ratio(a.FirstP99, b.FirstP99),
		ratio(a.ConnectsPerSec, b.ConnectsPerSec))
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// Limit is one step of --find-limit.
type Limit struct {
	Users   int     `json:"users"`
	OK      bool    `json:"ok"`
	Reason  string  `json:"reason,omitempty"`
	Figures Figures `json:"figures"`
}

// WriteHTML writes a self-contained page: the table, bars against the baselines, and the
// connections-vs-memory and connections-vs-latency curves of a --find-limit run.
func WriteHTML(w io.Writer, r *Result, steps []Limit) error {
	var b strings.Builder
	b.WriteString(`<!doctype html><meta charset="utf-8"><title>MatchStream bench</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f4f4f4}svg{margin:1em 0}</style>
<h1>MatchStream bench</h1>`)
	fmt.Fprintf(&b, "<p>%s — %s</p>", html.EscapeString(r.Machine), r.When.Format("2006-01-02 15:04 MST"))
	b.WriteString("<table><tr><th>server<th>users<th>connected<th>refused<th>timed out<th>connect p99 ms<th>RSS/conn KB<th>to last client ms<th>latency p50/p99 ms<th>deliveries/s<th>all delivered</tr>")
	for _, f := range r.Runs {
		fmt.Fprintf(&b, "<tr><td>%s<td>%d<td>%d<td>%d<td>%d<td>%.1f<td>%.2f<td>%.1f<td>%.1f / %.1f<td>%.0f<td>%v</tr>",
			f.Server, f.Users, f.Connected, f.Refused, f.TimedOut, f.ConnectP99, f.RSSPerConnKB, f.LastClientMs,
			f.LatencyP50, f.LatencyP99, f.DeliveriesSec, f.AllDelivered)
	}
	b.WriteString("</table>")
	bars := func(title string, val func(Figures) float64, unit string) {
		fmt.Fprintf(&b, "<h2>%s</h2><svg width=600 height=%d>", title, 30*len(r.Runs)+10)
		top := 0.0
		for _, f := range r.Runs {
			top = max(top, val(f))
		}
		for i, f := range r.Runs {
			wd := 0.0
			if top > 0 {
				wd = 400 * val(f) / top
			}
			fmt.Fprintf(&b, `<text x=0 y=%d>%s</text><rect x=100 y=%d width=%.0f height=20 fill="#4a7"/><text x=%.0f y=%d>%.2f %s</text>`,
				30*i+20, f.Server, 30*i+5, wd, 105+wd, 30*i+20, val(f), unit)
		}
		b.WriteString("</svg>")
	}
	bars("Time for one event to reach the last client", func(f Figures) float64 { return f.LastClientMs }, "ms")
	bars("Server RSS per idle connection", func(f Figures) float64 { return f.RSSPerConnKB }, "KB")
	bars("Delivery latency p99", func(f Figures) float64 { return f.LatencyP99 }, "ms")
	if len(steps) > 0 {
		curve := func(title string, val func(Figures) float64, unit string) {
			fmt.Fprintf(&b, "<h2>%s</h2><svg width=600 height=260><line x1=50 y1=220 x2=580 y2=220 stroke=#000 /><line x1=50 y1=10 x2=50 y2=220 stroke=#000 />", title)
			top, maxN := 0.0, 0
			for _, s := range steps {
				top, maxN = max(top, val(s.Figures)), max(maxN, s.Users)
			}
			var pts []string
			for _, s := range steps {
				x := 50 + 530*float64(s.Users)/float64(max(1, maxN))
				y := 220 - 200*val(s.Figures)/max(top, 1e-9)
				pts = append(pts, fmt.Sprintf("%.0f,%.0f", x, y))
				fmt.Fprintf(&b, `<circle cx=%.0f cy=%.0f r=3 /><text x=%.0f y=%.0f font-size=10>%d: %.2f</text>`, x, y, x-20, y-6, s.Users, val(s.Figures))
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill=none stroke="#47a"/><text x=250 y=250>connections (%s)</text></svg>`, strings.Join(pts, " "), unit)
		}
		curve("Connections vs RSS per connection", func(f Figures) float64 { return f.RSSPerConnKB }, "KB per connection")
		curve("Connections vs delivery latency p99", func(f Figures) float64 { return f.LatencyP99 }, "ms")
		b.WriteString("<h2>Limit search</h2><table><tr><th>users<th>ok<th>reason</tr>")
		for _, s := range steps {
			fmt.Fprintf(&b, "<tr><td>%d<td>%v<td>%s</tr>", s.Users, s.OK, html.EscapeString(s.Reason))
		}
		b.WriteString("</table>")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
