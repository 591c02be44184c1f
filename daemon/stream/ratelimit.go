package stream

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// limiter is a token bucket per source address: rate new connections per second, up to burst at
// once. It bounds what one address can make the daemon accept; its table is pruned of idle
// addresses, so it costs memory only for addresses seen in the last minute.
type limiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	if rate <= 0 {
		return nil
	}
	return &limiter{rate: rate, burst: float64(max(burst, 1)), buckets: map[netip.Addr]*bucket{}}
}

func (l *limiter) allow(a netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[a]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[a] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune forgets addresses idle for a minute (their buckets are full again by then anyway).
func (l *limiter) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for a, b := range l.buckets {
		if now.Sub(b.last) > time.Minute {
			delete(l.buckets, a)
		}
	}
}

func addrOf(sa unix.Sockaddr) netip.Addr {
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(v.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(v.Addr).Unmap()
	}
	return netip.Addr{}
}
