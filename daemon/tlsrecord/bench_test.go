package tlsrecord

import (
	"bytes"
	"crypto/tls"
	"testing"
)

// BenchmarkSeal is one fan-out write's sealing: one frame of an event's size into one record,
// with the cipher built for it (an idle connection keeps none).
func BenchmarkSeal(b *testing.B) {
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_CHACHA20_POLY1305_SHA256} {
		b.Run(tls.CipherSuiteName(suite), func(b *testing.B) {
			s, err := New(suite, bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32))
			if err != nil {
				b.Fatal(err)
			}
			frame := bytes.Repeat([]byte("x"), 160)
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if _, err := s.Seal(buf[:0], frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
