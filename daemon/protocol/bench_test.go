package protocol_test

import (
	"testing"
	"time"

	"matchstream/daemon/protocol"
)

// BenchmarkRender: the cost of rendering one event in every version (done once per event, whatever
// the number of subscribers) and of a status (done once per connecting client).
func BenchmarkRender(b *testing.B) {
	recs, end := sampleRecords(b)
	goal := recs[1]
	b.Run("event", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			protocol.RenderEvent("elp-tig-2011-09-10", goal)
		}
	})
	b.Run("status-v1", func(b *testing.B) {
		b.ReportAllocs()
		now := time.Now()
		for b.Loop() {
			protocol.RenderV1Status(end, now)
		}
	})
	b.Run("status-v3", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			protocol.RenderV3Status(end)
		}
	})
	b.Run("parse-connect", func(b *testing.B) {
		line := []byte("VERSION:3:CONNECT:someone:MATCH:elp-tig-2011-09-10:FROM:12\r\n")
		b.ReportAllocs()
		for b.Loop() {
			protocol.ParseConnect(line)
		}
	})
}
