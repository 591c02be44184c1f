package tlsrecord

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
)

// newPeer is the client's side of the same connection: it seals what the server opens.
func newPeer(suite uint16, clientSecret, serverSecret []byte) (*State, error) {
	return New(suite, serverSecret, clientSecret)
}

// pair is a handshake done by Handshake on the server side and crypto/tls on the client side, over
// loopback TCP: the server's raw socket and state, and the client's tls.Conn.
func pair(t *testing.T) (net.Conn, *State, *tls.Conn) {
	t.Helper()
	cert := daemontest.NewCert(t, time.Hour)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		nc  net.Conn
		st  *State
		cs  tls.ConnectionState
		err error
	}
	ch := make(chan result, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			ch <- result{err: err}
			return
		}
		st, cs, err := Handshake(context.Background(), nc, ServerConfig(&tls.Config{Certificates: []tls.Certificate{cert.Pair}}))
		ch <- result{nc, st, cs, err}
	}()
	ccfg := cert.ClientConfig()
	ccfg.ServerName = "localhost"
	tc, err := tls.Dial("tcp", ln.Addr().String(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.nc.Close() })
	return r.nc, r.st, tc
}

func TestRoundTripWithCryptoTLS(t *testing.T) {
	nc, st, tc := pair(t)
	if st.Suite() != tls.TLS_AES_128_GCM_SHA256 && st.Suite() != tls.TLS_CHACHA20_POLY1305_SHA256 {
		t.Fatalf("suite %#04x", st.Suite())
	}
	// Client to server: what crypto/tls seals, Open reads, however the bytes are cut.
	go tc.Write([]byte("CONNECT elp-tig V:1\n"))
	var got []byte
	buf := make([]byte, 3)
	for !bytes.Contains(got, []byte("\n")) {
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got, _, err = st.Open(got, buf[:n], false); err != nil {
			t.Fatal(err)
		}
	}
	if string(got) != "CONNECT elp-tig V:1\n" {
		t.Fatalf("opened %q", got)
	}
	// Server to client: several frames in one record, a frame over the record size, a key update.
	big := bytes.Repeat([]byte("x"), 3*MaxPlaintext+7)
	for i, bufs := range [][][]byte{{[]byte("a\n"), []byte("bc\n")}, {big}, {[]byte("after update\n")}} {
		if i == 2 {
			st.updateDue = true
		}
		rec, err := st.Seal(nil, bufs...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(rec); err != nil {
			t.Fatal(err)
		}
		want := bytes.Join(bufs, nil)
		got := make([]byte, len(want))
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(tc, got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: got %q", i, got[:min(len(got), 40)])
		}
	}
	// close_notify both ways.
	rec, _ := st.CloseNotify(nil)
	nc.Write(rec)
	if _, err := tc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after close_notify: %v, want EOF", err)
	}
	tc.CloseWrite()
	raw := make([]byte, 256)
	n, _ := io.ReadAtLeast(nc, raw, headerLen+2+1+tagLen)
	_, in, err := st.Open(nil, raw[:n], true)
	if err != nil || !in.Closed {
		t.Fatalf("client close_notify: %+v %v", in, err)
	}
}

func TestSuites(t *testing.T) {
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256} {
		t.Run(tls.CipherSuiteName(suite), func(t *testing.T) {
			secret := func(b byte) []byte {
				h, _, _ := suiteParams(suite)
				return bytes.Repeat([]byte{b}, h().Size())
			}
			srv, err := New(suite, secret(1), secret(2))
			if err != nil {
				t.Fatal(err)
			}
			cli, _ := newPeer(suite, secret(1), secret(2))
			for i := range 3 {
				if i == 1 { // the client asks for an update: both sides rotate both ways
					rec, _ := cli.sealRecord(nil, typeHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, 1})
					cli.w.update(suite)
					if _, _, err := srv.Open(nil, rec, true); err != nil {
						t.Fatal(err)
					}
				}
				rec, err := srv.Seal(nil, []byte("frame"))
				if err != nil {
					t.Fatal(err)
				}
				got, _, err := cli.Open(nil, rec, false)
				if err != nil || string(got) != "frame" {
					t.Fatalf("round %d: %q %v", i, got, err)
				}
			}
			if srv.w.seq != 2 || srv.r.seq != 0 { // rounds 1 and 2 under the new key
				t.Fatalf("after the update: write seq %d read seq %d, want 2 and 0", srv.w.seq, srv.r.seq)
			}
			// Undo: a record sealed and never sent does not advance the state.
			m := srv.Mark()
			srv.Seal(nil, []byte("lost"))
			srv.Undo(m)
			rec, _ := srv.Seal(nil, []byte("kept"))
			if got, _, err := cli.Open(nil, rec, false); err != nil || string(got) != "kept" {
				t.Fatalf("after undo: %q %v", got, err)
			}
			// Snapshot and restore: the successor goes on where this one stopped.
			rs, err := Restore(srv.Snapshot())
			if err != nil {
				t.Fatal(err)
			}
			rec, _ = rs.Seal(nil, []byte("handed over"))
			if got, _, err := cli.Open(nil, rec, false); err != nil || string(got) != "handed over" {
				t.Fatalf("after restore: %q %v", got, err)
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	suite := uint16(tls.TLS_AES_128_GCM_SHA256)
	s32 := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	seal := func(typ byte, body []byte) []byte {
		cli, _ := newPeer(suite, s32(1), s32(2))
		rec, _ := cli.sealRecord(nil, typ, body)
		return rec
	}
	tampered := seal(typeAppData, []byte("hello"))
	tampered[len(tampered)-1] ^= 1
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"plaintext", []byte("CONNECT elp-tig V:1\n"), ErrBadRecord},
		{"change cipher spec", []byte{20, 3, 3, 0, 1, 1}, ErrUnexpected},
		{"tampered", tampered, ErrDecrypt},
		{"oversized", []byte{23, 3, 3, 0x41, 0x01}, ErrBadRecord},
		{"fatal alert", seal(typeAlert, []byte{alertFatal, 40}), ErrPeerAlert},
		{"new session ticket", seal(typeHandshake, []byte{4, 0, 0, 1, 0}), ErrUnexpected},
		{"key update then data", seal(typeHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, 0, 1}), ErrUnexpected},
		{"only padding", seal(0, nil), ErrBadRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := New(suite, s32(1), s32(2))
			_, _, err := srv.Open(nil, tc.in, false)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzOpen: whatever a client sends, in whatever pieces, Open returns an error or data, never
// panics, and keeps no more than one record's worth.
func FuzzOpen(f *testing.F) {
	suite := uint16(tls.TLS_AES_128_GCM_SHA256)
	s32 := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	cli, _ := newPeer(suite, s32(1), s32(2))
	r1, _ := cli.Seal(nil, []byte("CONNECT elp-tig V:1\n"))
	r2, _ := cli.sealRecord(nil, typeHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, 1})
	f.Add(append(r1, r2...), uint8(3))
	f.Add([]byte{23, 3, 3, 0, 17}, uint8(1))
	f.Add([]byte(strings.Repeat("A", 64)), uint8(7))
	f.Fuzz(func(t *testing.T, in []byte, cut uint8) {
		srv, _ := New(suite, s32(1), s32(2))
		step := int(cut%16) + 1
		for len(in) > 0 {
			n := min(step, len(in))
			_, res, err := srv.Open(nil, in[:n], false)
			in = in[n:]
			if err != nil || res.Closed {
				return
			}
			if len(srv.in) > headerLen+maxCiphertext {
				t.Fatalf("kept %d bytes", len(srv.in))
			}
		}
	})
}
