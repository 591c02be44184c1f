package bench

import (
	"bytes"
	"testing"
	"time"
)

func TestStampOf(t *testing.T) {
	for in, want := range map[string]int64{
		`{"match":"m","seq":2,"kind":"comment","comment":"bench t=1700000000123"}` + "\n": 1700000000123,
		"2011-09-10 21:00:53: comment:\n":                                                 0,
		"\x30\x1fmatchstream/benchbench t=42\n":                                           42,
		"bench t=\n":                                                                      0,
	} {
		if got := stampOf([]byte(in)); got != want {
			t.Errorf("stampOf(%q) = %d, want %d", in, got, want)
		}
	}
}

// MQTT remaining lengths use 7 bits per byte, low first (MQTT 3.1.1 §2.2.3).
func TestMQTTFraming(t *testing.T) {
	for n, want := range map[int][]byte{0: {0}, 127: {0x7f}, 128: {0x80, 0x01}, 16383: {0xff, 0x7f}} {
		p := mqttPacket(0x30, make([]byte, n))
		if p[0] != 0x30 || !bytes.Equal(p[1:1+len(want)], want) || len(p) != 1+len(want)+n {
			t.Errorf("length %d: header % x", n, p[:1+len(want)])
		}
	}
	line := mqttSubscribeLine(7)
	if !bytes.Contains([]byte(line), []byte("\x00\x04MQTT\x04\x02")) || !bytes.Contains([]byte(line), []byte(mqttTopic)) {
		t.Errorf("subscribe line % x", line)
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	if pct(ds, 0.5) != 3 || pct(ds, 1) != 5 || pct(nil, 0.5) != 0 || ds[0] != 5 {
		t.Errorf("pct wrong or sorted its input: %v", ds)
	}
}
