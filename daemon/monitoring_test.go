package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
)

// The shipped dashboard and alert rules (packaging/monitoring/) name only metrics a daemon
// exports: each metric in their expressions is in a real daemon's /metrics, read from its admin
// listener.
func TestMonitoringNamesExportedMetrics(t *testing.T) {
	cfg := testConfig(t)
	cfg.Listen.Admin = "127.0.0.1:0"
	cert := daemontest.NewCert(t, time.Hour) // the certificate's metrics are exported only with one
	cfg.TLS = TLS{Cert: cert.CertFile, Key: cert.KeyFile}
	s := startServer(t, cfg)
	resp, err := http.Get("http://" + s.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := map[string]bool{"up": true} // Prometheus's own, per scrape
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			exported[strings.FieldsFunc(l, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
		}
	}

	var exprs []string
	b, err := os.ReadFile("../packaging/monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	rules, err := os.ReadFile("../packaging/monitoring/matchstream-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*expr:\s*(.+)$`).FindAllStringSubmatch(string(rules), -1) {
		exprs = append(exprs, m[1])
	}
	if len(exprs) < 10 {
		t.Fatalf("found %d expressions in packaging/monitoring/: the files were not read as meant", len(exprs))
	}
	name := regexp.MustCompile(`\b(matchstream_[a-z_]+|process_[a-z_]+|go_[a-z_]+|up)\b`)
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			if !exported[n] {
				t.Errorf("%q names %s, which the daemon does not export", e, n)
			}
		}
	}
}
