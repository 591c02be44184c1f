//go:build baselines

package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"time"
)

// The mosquitto baseline: the same clients subscribe to one MQTT topic (QoS 0) on a mosquitto
// started for the run, and each event is one PUBLISH whose payload carries the stamp. mosquitto is
// the C, epoll, single-threaded broker the issue measured at 0.84 KB per connection.

const mqttTopic = "matchstream/bench"

// mqttString is an MQTT UTF-8 string: two length bytes, then the bytes.
func mqttString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// mqttPacket frames a control packet with its remaining length (short packets only: < 16 KiB).
func mqttPacket(typ byte, body []byte) []byte {
	n := len(body)
	var rl []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		rl = append(rl, b)
		if n == 0 {
			break
		}
	}
	return append(append([]byte{typ}, rl...), body...)
}

// mqttConnect is CONNECT (MQTT 3.1.1, clean session, keepalive off) for a client id.
func mqttConnect(id string) []byte {
	body := append(mqttString("MQTT"), 4, 0x02, 0, 0)
	return mqttPacket(0x10, append(body, mqttString(id)...))
}

// mqttSubscribeLine is what a benchmark client sends: CONNECT, then SUBSCRIBE to the topic.
func mqttSubscribeLine(i int) string {
	sub := append([]byte{0, 1}, mqttString(mqttTopic)...)
	sub = append(sub, 0) // QoS 0
	return string(append(mqttConnect("b"+strconv.Itoa(i)), mqttPacket(0x82, sub)...))
}

func mqttPublish(payload string) []byte {
	return mqttPacket(0x30, append(mqttString(mqttTopic), payload...))
}

func runMosquitto(ctx context.Context, cfg *Config) (*Figures, error) {
	exe, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, fmt.Errorf("mosquitto is not installed (apt install mosquitto)")
	}
	b, addr, err := startBroker(ctx, "mosquitto", exe, func(addr string) string {
		_, port, _ := net.SplitHostPort(addr)
		return "listener " + port + " 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000\n"
	}, func(conf string) []string { return []string{"-c", conf} })
	if err != nil {
		return nil, err
	}
	defer b.stop()
	b.pub.Write(mqttConnect("bench-publisher"))
	bufio.NewReader(b.pub).Discard(4) // CONNACK
	publish := func(payload string) error { _, err := b.pub.Write(mqttPublish(payload)); return err }
	var fl *fleet
	event := func() error { return publish(stampPrefix + strconv.FormatInt(time.Now().UnixNano(), 10) + "\n") }
	return measureWith(ctx, cfg, "mosquitto", []string{addr}, b.cmd.Process.Pid, mqttSubscribeLine, nil, &fl,
		settleByMarker("mosquitto", publish, &fl), event)
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
