package listen_test

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"matchstream/daemon/listen"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"127.0.0.1:9000-9002", []string{"127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"}, ""},
		{"127.0.0.1:9000", []string{"127.0.0.1:9000"}, ""},
		{"[::1]:9000-9001", []string{"[::1]:9000", "[::1]:9001"}, ""},
		{":9000-9000", []string{":9000"}, ""},
		{"127.0.0.1:9002-9000", nil, "first <= last"},
		{"127.0.0.1:0-5", nil, "1-65535"},
		{"127.0.0.1:65535-65536", nil, "1-65535"},
		{"127.0.0.1:a-b", nil, "1-65535"},
		{"127.0.0.1", nil, "host:port"},
		{"127.0.0.1:1000-3000", nil, "too many"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := listen.ParseRange(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseRange = %v, %v; want error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseRange = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Self-bound listeners: every port bound, SO_REUSEPORT set (a second bind of the same port
// succeeds), and a clear error for an address that cannot be bound.
func TestOpenSelfBound(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	ln, err := listen.Bind("127.0.0.1:0", 16)
	if err != nil {
		t.Fatal(err)
	}

	again, err := listen.Bind(ln.Addr().String(), 16)
	if err != nil {
		t.Fatalf("second bind with SO_REUSEPORT: %v", err)
	}
	again.Close()
	ln.Close()

	somax := filepath.Join(t.TempDir(), "somaxconn")
	os.WriteFile(somax, []byte("128\n"), 0o644)
	set, err := listen.Open(listen.Config{API: "127.0.0.1:0", Stream: []string{"127.0.0.1:0", "127.0.0.1:0"},
		Backlog: 4096, SomaxconnPath: somax}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if len(set.Stream) != 2 || set.API == nil || set.Activated {
		t.Fatalf("set = %+v", set)
	}
	set.Stream[0].Conns.Store(3)
	if set.LeastLoaded() != set.Stream[1] {
		t.Fatal("LeastLoaded did not pick the idle port")
	}
	c, err := net.Dial("tcp", set.Stream[1].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	for _, bad := range []string{"example.com:80", "127.0.0.1:x", "10.255.255.1:9000"} {
		if _, err := listen.Bind(bad, 16); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("Bind(%s) = %v, want an error naming the address", bad, err)
		}
	}
}
