//go:build baselines

package bench

import (
	"bytes"
	"testing"
)

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
