// Package units renders MatchStream's systemd units from the configuration: the stream socket
// (one ListenStream= per port, named "stream"), the API socket (named "api") and the service. The
// templates are embedded, so the binary carries them; the packaged copies are renderings with the
// defaults.
package units

import (
	"bytes"
	"embed"
	"fmt"
	"text/template"
	"time"

	"matchstream/sysctl"
)

//go:embed *.tmpl
var files embed.FS

var templates = template.Must(template.ParseFS(files, "*.tmpl"))

// Params are what the units depend on.
type Params struct {
	Binary      string   // absolute path of the matchstream binary
	Config      string   // config file passed to serve and doctor
	API         string   // host:port of the API socket
	Stream      []string // host:port of each stream socket
	Backlog     int
	Connections int           // target connections: sets LimitNOFILE and doctor's target
	Watchdog    time.Duration // WatchdogSec; the daemon pings at half of it
}

// Names of the rendered units, in the order they are written.
var Names = []string{"matchstream.socket", "matchstream-api.socket", "matchstream.service"}

// Render returns each unit's text by name.
func Render(p Params) (map[string]string, error) {
	if len(p.Stream) == 0 || p.API == "" || p.Binary == "" || p.Config == "" {
		return nil, fmt.Errorf("render units: binary, config, api and stream addresses are needed")
	}
	data := struct {
		Params
		NoFile      int
		WatchdogSec int
	}{p, sysctl.NoFile(p.Connections), max(1, int(p.Watchdog.Seconds()))}
	out := make(map[string]string, len(Names))
	for _, n := range Names {
		var b bytes.Buffer
		if err := templates.ExecuteTemplate(&b, n+".tmpl", data); err != nil {
			return nil, fmt.Errorf("render %s: %w", n, err)
		}
		out[n] = b.String()
	}
	return out, nil
}
