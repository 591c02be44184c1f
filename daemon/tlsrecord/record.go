// Package tlsrecord is the TLS 1.3 record layer of a connection whose handshake crypto/tls has
// done: it holds only the traffic secrets, keys, IVs and sequence numbers (a few hundred bytes, no
// buffer and no goroutine), seals what the server sends and opens what the client sends, including
// key updates and close_notify (RFC 8446 §5, §4.6.3, §6.1).
//
// crypto/tls keeps a connection's record state private and needs a goroutine blocked in Read per
// connection; the stream layer holds hundreds of thousands of idle connections in epoll instead,
// so after the handshake it keeps this state alone and seals each rendered frame per connection at
// fan-out. The secrets come from the handshake's key log (KeyLog).
package tlsrecord

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"

	"golang.org/x/crypto/chacha20poly1305"
)

// Record content types and the few handshake and alert values the record layer handles itself.
const (
	typeAlert     = 21
	typeHandshake = 22
	typeAppData   = 23

	handshakeKeyUpdate = 24

	alertWarning     = 1
	alertFatal       = 2
	alertCloseNotify = 0

	headerLen = 5
	tagLen    = 16
	// MaxPlaintext is the most application data one record carries (2^14).
	MaxPlaintext = 1 << 14
	// maxCiphertext is the largest record body a peer may send (2^14 + 256).
	maxCiphertext = MaxPlaintext + 256
	// keyUpdateAfter: the server rotates its key after this many records, well inside AES-GCM's
	// limit of 2^24.5 records per key (RFC 8446 §5.5); a match sends far fewer.
	keyUpdateAfter = 1 << 24
)

// Errors of the client's input; each ends the connection.
var (
	ErrBadRecord   = errors.New("tls: malformed record")
	ErrDecrypt     = errors.New("tls: record failed to decrypt")
	ErrUnexpected  = errors.New("tls: unexpected message after the handshake")
	ErrPeerAlert   = errors.New("tls: the client sent a fatal alert")
	ErrUnsupported = errors.New("tls: unsupported cipher suite")
)

// direction is one way's traffic state.
type direction struct {
	secret [48]byte // application traffic secret N (the hash's length: 32 or 48)
	key    [32]byte // 16 or 32 used
	iv     [12]byte
	seq    uint64
}

// State is one connection's record layer, server side. It is not safe for concurrent use: Open
// records a key update the client asks for, which the next Seal sends (and Undo can take back
// with the records it undoes), so the caller serialises them all (the stream layer holds the
// connection's TLS lock around each).
type State struct {
	suite     uint16
	w, r      direction
	updateDue bool   // the client asked for our key update: it precedes our next record
	updates   uint32 // key updates read from the client
	in        []byte // a partial record from the client; nil when none (idle: no buffer)
}

// suiteParams is what a cipher suite fixes: the hash and the key length.
func suiteParams(suite uint16) (func() hash.Hash, int, error) {
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		return sha256.New, 16, nil
	case tls.TLS_AES_256_GCM_SHA384:
		return sha512.New384, 32, nil
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		return sha256.New, 32, nil
	}
	return nil, 0, fmt.Errorf("%w: %#04x", ErrUnsupported, suite)
}

// New is the state right after the handshake: both directions at their first application
// traffic secret and sequence 0 (the server sends no session tickets, so it has sent no record
// under its secret yet). clientSecret protects what the client sends, serverSecret what we send.
func New(suite uint16, clientSecret, serverSecret []byte) (*State, error) {
	s := &State{suite: suite}
	if err := s.r.set(suite, clientSecret); err != nil {
		return nil, err
	}
	if err := s.w.set(suite, serverSecret); err != nil {
		return nil, err
	}
	return s, nil
}

// set derives key and IV from a traffic secret (RFC 8446 §7.3) and resets the sequence.
func (d *direction) set(suite uint16, secret []byte) error {
	h, keyLen, err := suiteParams(suite)
	if err != nil {
		return err
	}
	if len(secret) != h().Size() {
		return fmt.Errorf("tls: traffic secret of %d bytes for suite %#04x", len(secret), suite)
	}
	key, err := expandLabel(h, secret, "key", keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(h, secret, "iv", 12)
	if err != nil {
		return err
	}
	*d = direction{}
	copy(d.secret[:], secret)
	copy(d.key[:], key)
	copy(d.iv[:], iv)
	return nil
}

// update moves to the next traffic secret (§7.2).
func (d *direction) update(suite uint16) error {
	h, _, err := suiteParams(suite)
	if err != nil {
		return err
	}
	n := h().Size()
	next, err := expandLabel(h, d.secret[:n], "traffic upd", n)
	if err != nil {
		return err
	}
	return d.set(suite, next)
}

// expandLabel is HKDF-Expand-Label with an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, length int) ([]byte, error) {
	full := "tls13 " + label
	info := make([]byte, 0, 4+len(full))
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, 0) // context: empty
	return hkdf.Expand(h, secret, string(info), length)
}

// aead builds the direction's cipher. It is made per record rather than kept: an AES-GCM instance
// is several hundred bytes, more than the rest of an idle connection, and building it costs less
// than the write it precedes.
func (d *direction) aead(suite uint16) (cipher.AEAD, error) {
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384:
		keyLen := 16
		if suite == tls.TLS_AES_256_GCM_SHA384 {
			keyLen = 32
		}
		b, err := aes.NewCipher(d.key[:keyLen])
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		return chacha20poly1305.New(d.key[:32])
	}
	return nil, ErrUnsupported
}

// nonce is the IV xor the sequence number (§5.3).
func (d *direction) nonce() [12]byte {
	n := d.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], d.seq)
	for i := range seq {
		n[4+i] ^= seq[i]
	}
	return n
}

// Mark is a point Seal can be undone to: the records sealed after it were never sent.
type Mark struct {
	w         direction
	updateDue bool
}

// Mark returns the write state now.
func (s *State) Mark() Mark { return Mark{s.w, s.updateDue} }

// Undo returns the write state to m.
func (s *State) Undo(m Mark) { s.w, s.updateDue = m.w, m.updateDue }

// Overhead is the most Seal adds to n bytes of plaintext, beyond the plaintext itself.
func Overhead(n int) int {
	records := max(1, (n+MaxPlaintext-1)/MaxPlaintext)
	return (records+1)*(headerLen+1+tagLen) + 8 // + one KeyUpdate record
}

// Seal appends to dst the records carrying bufs as application data, as few as the record size
// allows, preceded by our key update when one is due.
func (s *State) Seal(dst []byte, bufs ...[]byte) ([]byte, error) {
	if s.updateDue || s.w.seq >= keyUpdateAfter {
		var err error
		// update_not_requested: we answer theirs, or rotate on our own.
		if dst, err = s.sealRecord(dst, typeHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, 0}); err != nil {
			return dst, err
		}
		if err := s.w.update(s.suite); err != nil {
			return dst, err
		}
		s.updateDue = false
	}
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	// Gather the plaintext in place in dst, one record's worth at a time, then seal it there.
	bi, off := 0, 0
	for first := true; first || total > 0; first = false {
		n := min(total, MaxPlaintext)
		start := len(dst)
		dst = append(dst, make([]byte, headerLen)...)
		for got := 0; got < n; {
			take := min(n-got, len(bufs[bi])-off)
			dst = append(dst, bufs[bi][off:off+take]...)
			got, off = got+take, off+take
			if off == len(bufs[bi]) {
				bi, off = bi+1, 0
			}
		}
		var err error
		if dst, err = s.sealAt(dst, start, typeAppData); err != nil {
			return dst, err
		}
		total -= n
	}
	return dst, nil
}

// CloseNotify appends a close_notify alert record to dst.
func (s *State) CloseNotify(dst []byte) ([]byte, error) {
	return s.sealRecord(dst, typeAlert, []byte{alertWarning, alertCloseNotify})
}

func (s *State) sealRecord(dst []byte, typ byte, body []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, headerLen)...)
	dst = append(dst, body...)
	return s.sealAt(dst, start, typ)
}

// sealAt seals the plaintext dst[start+5:] in place as one record of inner type typ.
func (s *State) sealAt(dst []byte, start int, typ byte) ([]byte, error) {
	a, err := s.w.aead(s.suite)
	if err != nil {
		return dst[:start], err
	}
	dst = append(dst, typ)
	plain := dst[start+headerLen:]
	n := len(plain) + a.Overhead()
	hdr := dst[start : start+headerLen]
	hdr[0], hdr[1], hdr[2] = typeAppData, 3, 3
	binary.BigEndian.PutUint16(hdr[3:], uint16(n))
	// The header is the additional data where it lies, before the output (a copy on the stack
	// would escape to the heap through the interface call).
	nonce := s.w.nonce()
	dst = a.Seal(dst[:start+headerLen], nonce[:], plain, hdr)
	s.w.seq++
	return dst, nil
}

// Input is what Open found in the client's bytes besides application data.
type Input struct {
	// Closed: the client sent close_notify; it sends nothing more (it may still read).
	Closed bool
}

// Open takes bytes the client sent, which may end in the middle of a record (the rest is kept
// until the next call), and appends the application data in them to dst unless discard. Key
// updates are applied; close_notify is reported. An error means the connection must end.
func (s *State) Open(dst, in []byte, discard bool) ([]byte, Input, error) {
	var res Input
	if len(s.in) > 0 {
		s.in = append(s.in, in...)
		in = s.in
	}
	for !res.Closed {
		if len(in) < headerLen {
			break
		}
		n := int(binary.BigEndian.Uint16(in[3:5]))
		if in[0] != typeAppData || in[1] != 3 || n > maxCiphertext || n < tagLen+1 {
			if in[0] == 20 { // change_cipher_spec: only allowed during the handshake
				return dst, res, ErrUnexpected
			}
			return dst, res, ErrBadRecord
		}
		if len(in) < headerLen+n {
			break
		}
		var err error
		dst, res, err = s.openRecord(dst, in[:headerLen+n], discard)
		if err != nil {
			return dst, res, err
		}
		in = in[headerLen+n:]
	}
	// Keep a partial record, copied: in is the caller's buffer, or the old s.in.
	s.in = nil
	if len(in) > 0 && !res.Closed {
		s.in = append(make([]byte, 0, len(in)), in...)
	}
	return dst, res, nil
}

// openRecord decrypts one whole record (in place) and acts on it.
func (s *State) openRecord(dst, rec []byte, discard bool) ([]byte, Input, error) {
	var res Input
	a, err := s.r.aead(s.suite)
	if err != nil {
		return dst, res, err
	}
	nonce := s.r.nonce()
	plain, err := a.Open(rec[headerLen:headerLen], nonce[:], rec[headerLen:], rec[:headerLen])
	if err != nil {
		return dst, res, ErrDecrypt
	}
	s.r.seq++
	// The inner type is the last non-zero byte; zeros after it are padding.
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 {
		return dst, res, ErrBadRecord
	}
	typ, body := plain[i], plain[:i]
	switch typ {
	case typeAppData:
		if !discard {
			dst = append(dst, body...)
		}
	case typeAlert:
		if len(body) != 2 {
			return dst, res, ErrBadRecord
		}
		if body[1] == alertCloseNotify {
			res.Closed = true
			return dst, res, nil
		}
		if body[0] == alertFatal || body[1] != 90 { // 90: user_canceled, a warning
			return dst, res, fmt.Errorf("%w (%d)", ErrPeerAlert, body[1])
		}
	case typeHandshake:
		if err := s.handshakeMessages(body); err != nil {
			return dst, res, err
		}
	default:
		return dst, res, ErrUnexpected
	}
	return dst, res, nil
}

// handshakeMessages handles post-handshake messages: only KeyUpdate is expected from a client
// (we ask for no certificate and send no tickets). A KeyUpdate must end its record (§5.1).
func (s *State) handshakeMessages(body []byte) error {
	for len(body) > 0 {
		if len(body) < 4 {
			return ErrBadRecord
		}
		typ, n := body[0], int(body[1])<<16|int(body[2])<<8|int(body[3])
		if len(body) < 4+n {
			return ErrBadRecord // fragmented across records: no client does this for a KeyUpdate
		}
		msg := body[4 : 4+n]
		body = body[4+n:]
		if typ != handshakeKeyUpdate || n != 1 || msg[0] > 1 || len(body) > 0 {
			return ErrUnexpected
		}
		if err := s.r.update(s.suite); err != nil {
			return err
		}
		s.updates++
		if msg[0] == 1 { // update_requested
			s.updateDue = true
		}
	}
	return nil
}

// Updates is how many key updates the client has sent.
func (s *State) Updates() int { return int(s.updates) }

// Suite is the connection's cipher suite.
func (s *State) Suite() uint16 { return s.suite }
