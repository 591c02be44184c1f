package tlsrecord

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"errors"
)

// KeyLog takes the application traffic secrets of one handshake from crypto/tls, as its
// Config.KeyLogWriter (the NSS key log format, one line per secret and Write). Nothing is written
// anywhere: the secrets stay in memory, in the connection they protect.
type KeyLog struct {
	client, server []byte
}

// Write takes one key log line; lines other than the two application secrets are ignored.
func (k *KeyLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	var dst *[]byte
	switch string(f[0]) {
	case "CLIENT_TRAFFIC_SECRET_0":
		dst = &k.client
	case "SERVER_TRAFFIC_SECRET_0":
		dst = &k.server
	default:
		return len(line), nil
	}
	b, err := hex.DecodeString(string(f[2]))
	if err != nil {
		return 0, err
	}
	*dst = b
	return len(line), nil
}

// State is the record layer after a completed TLS 1.3 handshake whose key log k was.
func (k *KeyLog) State(cs tls.ConnectionState) (*State, error) {
	if cs.Version != tls.VersionTLS13 {
		return nil, errors.New("tls: the handshake did not agree on TLS 1.3")
	}
	if k.client == nil || k.server == nil {
		return nil, errors.New("tls: the handshake logged no application traffic secrets")
	}
	return New(cs.CipherSuite, k.client, k.server)
}
