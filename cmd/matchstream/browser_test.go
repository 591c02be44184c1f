//go:build browser

// The live match page in a real browser: Debian's chromium, driven through chromedriver's W3C
// WebDriver HTTP API (plain JSON over HTTP, so no client library). Run by `make test-browser`.

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// webDriver is one chromedriver session.
type webDriver struct {
	t    *testing.T
	base string // http://127.0.0.1:port/session/<id>
}

func (w *webDriver) call(method, path string, body any) json.RawMessage {
	w.t.Helper()
	return wdCall(w.t, method, w.base+path, body)
}

func wdCall(t *testing.T, method, url string, body any) json.RawMessage {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("webdriver %s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var out struct {
		Value json.RawMessage `json:"value"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("webdriver %s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return out.Value
}

// text runs a script in the page and returns its string result.
func (w *webDriver) text(script string) string {
	var s string
	json.Unmarshal(w.call("POST", "/execute/sync", map[string]any{"script": script, "args": []any{}}), &s)
	return s
}

func startBrowser(t *testing.T) *webDriver {
	t.Helper()
	for _, bin := range []string{"chromium", "chromedriver"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is needed: apt-get install chromium chromium-driver", bin)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	drv := exec.Command("chromedriver", fmt.Sprintf("--port=%d", port))
	drv.Stdout, drv.Stderr = io.Discard, io.Discard
	if err := drv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Process.Kill(); drv.Wait() })
	root := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitUntil(t, "chromedriver", 20*time.Second, func() bool {
		resp, err := http.Get(root + "/status")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{"binary": "/usr/bin/chromium", "args": []string{
			"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--window-size=412,1400", // a phone's width
		}},
	}}}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	json.Unmarshal(wdCall(t, "POST", root+"/session", caps), &sess)
	w := &webDriver{t: t, base: root + "/session/" + sess.SessionID}
	t.Cleanup(func() { wdCall(t, "DELETE", w.base, nil) })
	return w
}

// screenshot saves the page as PNG under $MATCHSTREAM_ARTIFACTS (default artifacts/ at the
// repository root) and returns the path.
func (w *webDriver) screenshot(name string) string {
	w.t.Helper()
	dir := os.Getenv("MATCHSTREAM_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	dir = filepath.Join(dir, "browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		w.t.Fatal(err)
	}
	var b64 string
	json.Unmarshal(w.call("GET", "/screenshot", nil), &b64)
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(png) < 1000 {
		w.t.Fatalf("screenshot: %v (%d bytes)", err, len(png))
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		w.t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	return abs
}

// The page loads from a real daemon, follows the sample match replayed fast, survives a restart of
// the daemon in the middle (EventSource reconnects with Last-Event-ID), and ends showing the final
// score 1–3, the line-ups after the last substitution, and the whole event feed.
func TestBrowserLiveMatchPage(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, filepath.Join(dir, "state"))
	lines, v3 := sampleLines(t)
	watcher := func(name string, part []string) {
		run(t, 0, "watcher", "--api", d.apiURL(), "--token", d.token(), "--speed", "360", "-q", "--match", sampleID,
			writeFile(t, dir, name, part))
	}
	watcher("start.jsonl", lines[:1])
	w := startBrowser(t)

	w.call("POST", "/url", map[string]string{"url": d.url("/")})
	waitUntil(t, "the match list", 20*time.Second, func() bool {
		return strings.Contains(w.text(`return document.querySelector("ul.matches")?.innerText || ""`), "ELP 0 – 0 TIG")
	})
	t.Logf("screenshot: %s", w.screenshot("match-list.png"))
	w.call("POST", "/url", map[string]string{"url": d.url("/#/m/" + sampleID)})
	waitUntil(t, "kick-off in the feed", 20*time.Second, func() bool {
		return strings.Contains(w.text(`return document.getElementById("feed")?.innerText || ""`), "Kick-off: ELP v TIG")
	})

	watcher("part1.jsonl", lines[1:15])
	waitUntil(t, "event 15 on the page", 30*time.Second, func() bool {
		return w.text(`return document.querySelector("#feed li")?.dataset.seq || ""`) == "15"
	})
	d.stop() // the page is told, and reconnects by itself
	d.start()
	watcher("part2.jsonl", lines[15:])

	waitUntil(t, "full time on the page", 60*time.Second, func() bool {
		return w.text(`return document.getElementById("period")?.innerText || ""`) == "Full time"
	})
	if got := w.text(`return document.getElementById("score").innerText`); got != "1 – 3" {
		t.Errorf("score on the page: %q, want 1 – 3", got)
	}
	visit := w.text(`return document.getElementById("lineup-visit").innerText`)
	if !strings.Contains(visit, "Carrasco") || strings.Contains(visit, "Maggiolo") {
		t.Errorf("TIG line-up after the last substitution (Carrasco for Maggiolo):\n%s", visit)
	}
	feed := w.text(`return document.getElementById("feed").innerText`)
	if !strings.Contains(feed, "Substitution TIG: Carrasco on for Maggiolo") {
		t.Errorf("feed lacks the last substitution:\n%s", feed)
	}
	// Every event exactly once, across the restart.
	if n := w.text(`return String(document.querySelectorAll("#feed li").length)`); n != fmt.Sprint(len(v3)) {
		t.Errorf("the feed has %s events, want %d:\n%s", n, len(v3), feed)
	}
	t.Logf("screenshot: %s", w.screenshot("match-page.png"))
}
