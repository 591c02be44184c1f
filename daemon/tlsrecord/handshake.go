package tlsrecord

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// ServerConfig is base made fit for Handshake: TLS 1.3 only, and no session tickets (a ticket is
// a record sent under the server's traffic secret, so the state handed on would start past 0;
// without tickets a reconnect is a full handshake, which a client following a match makes once).
func ServerConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.MinVersion = tls.VersionTLS13
	c.SessionTicketsDisabled = true
	return c
}

// Handshake runs the server side of a TLS 1.3 handshake on nc with cfg (from ServerConfig) and
// returns the record state to go on with. crypto/tls is given the client's bytes one record at a
// time, so it never reads past the handshake: what the client sent after its Finished (its first
// application data) is still in the socket for the caller to read. nc is left open; the tls.Conn
// is dropped without a close_notify.
func Handshake(ctx context.Context, nc net.Conn, cfg *tls.Config) (*State, tls.ConnectionState, error) {
	var kl KeyLog
	c := cfg.Clone()
	c.KeyLogWriter = &kl
	tc := tls.Server(&recordReader{Conn: nc}, c)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, tls.ConnectionState{}, fmt.Errorf("tls handshake: %w", err)
	}
	cs := tc.ConnectionState()
	st, err := kl.State(cs)
	return st, cs, err
}

// recordReader reads at most up to the end of the current TLS record, so whoever reads from it
// (crypto/tls, which reads ahead as far as its buffer allows) takes whole records only.
type recordReader struct {
	net.Conn
	left int // bytes of the current record's body still to come; 0: a header is next
	hdr  [headerLen]byte
	got  int // header bytes read so far
	sent int // header bytes handed on so far
}

func (r *recordReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.left == 0 {
		// Read the header into our own buffer first, so its length is known before anything
		// past it is read; then hand the header on.
		for r.got < headerLen {
			n, err := r.Conn.Read(r.hdr[r.got:])
			r.got += n
			if err != nil {
				if err == io.EOF && r.got > 0 {
					err = io.ErrUnexpectedEOF
				}
				return 0, err
			}
		}
		n := copy(p, r.hdr[r.sent:])
		if r.sent += n; r.sent == headerLen {
			r.got, r.sent = 0, 0
			r.left = int(binary.BigEndian.Uint16(r.hdr[3:5]))
		}
		return n, nil
	}
	if len(p) > r.left {
		p = p[:r.left]
	}
	n, err := r.Conn.Read(p)
	r.left -= n
	return n, err
}
