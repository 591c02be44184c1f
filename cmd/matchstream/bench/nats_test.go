//go:build baselines

package bench

import "testing"

// The NATS text protocol as its clients and publisher speak it: a PUB names the payload's length
// in bytes, and the subscription line connects and subscribes in one write.
func TestNATSFraming(t *testing.T) {
	if got, want := string(natsPublish("é\n")), "PUB matchstream.bench 3\r\né\n\r\n"; got != want {
		t.Errorf("publish = %q, want %q", got, want)
	}
	if got, want := natsSubscribeLine(7), "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB matchstream.bench 1\r\n"; got != want {
		t.Errorf("subscribe = %q, want %q", got, want)
	}
}
