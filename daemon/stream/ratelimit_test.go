package stream

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	if newLimiter(0, 5) != nil {
		t.Fatal("rate 0 must mean no limiter")
	}
	l := newLimiter(2, 3) // 2 per second, 3 at once
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	t0 := time.Unix(1000, 0)
	for i, want := range []bool{true, true, true, false, false} {
		if got := l.allow(a, t0); got != want {
			t.Fatalf("burst: connection %d allowed=%v, want %v", i, got, want)
		}
	}
	if !l.allow(b, t0) {
		t.Fatal("another address shares the first one's bucket")
	}
	if !l.allow(a, t0.Add(500*time.Millisecond)) || l.allow(a, t0.Add(500*time.Millisecond)) {
		t.Fatal("refill: half a second at 2/s must allow exactly one more")
	}
	l.prune(t0.Add(2 * time.Minute))
	if len(l.buckets) != 0 {
		t.Fatalf("prune kept %d idle addresses", len(l.buckets))
	}
}
