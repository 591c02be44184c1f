// Package certs holds the daemon's TLS certificate: loaded from a PEM certificate chain and key
// (certbot's fullchain.pem and privkey.pem, say), swapped whole by a reload, and read by every
// handshake through GetCertificate, so a renewed certificate applies to new connections without a
// restart and established ones are left alone.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"
)

// Cert is the certificate in use.
type Cert struct {
	cur atomic.Pointer[tls.Certificate]
}

// Load reads a certificate chain and its private key.
func Load(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s with key %s: %w", certFile, keyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls certificate %s: %w", certFile, err)
		}
	}
	if now := time.Now(); now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("tls certificate %s expired on %s", certFile, c.Leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return &c, nil
}

// New holds c.
func New(c *tls.Certificate) *Cert {
	h := &Cert{}
	h.cur.Store(c)
	return h
}

// Replace puts c in use for the handshakes from now on.
func (h *Cert) Replace(c *tls.Certificate) { h.cur.Store(c) }

// GetCertificate is tls.Config's.
func (h *Cert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return h.cur.Load(), nil
}

// NotAfter is when the certificate in use expires.
func (h *Cert) NotAfter() time.Time { return h.cur.Load().Leaf.NotAfter }

// Config is a server configuration that follows h: TLS 1.3 only (every client this daemon has,
// and every browser, speaks it; 1.2 would need a second record layer on the stream ports).
func (h *Cert) Config() *tls.Config {
	return &tls.Config{GetCertificate: h.GetCertificate, MinVersion: tls.VersionTLS13}
}
