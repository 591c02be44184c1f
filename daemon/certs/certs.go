// Package certs holds the daemon's TLS certificate: loaded from a PEM certificate chain and key
// (certbot's fullchain.pem and privkey.pem, say), swapped whole by a reload, and read by every
// handshake through GetCertificate, so a renewed certificate applies to new connections without a
// restart and established ones are left alone.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Cert is the certificate in use.
type Cert struct {
	cur atomic.Pointer[tls.Certificate]
}

// Load reads a certificate chain and its private key, and refuses an expired certificate.
func Load(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := Read(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if now := time.Now(); now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("tls certificate %s expired on %s", certFile, c.Leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return c, nil
}

// Read reads a certificate chain and its private key, expired or not (doctor reports when).
func Read(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s with key %s: %w", certFile, keyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls certificate %s: %w", certFile, err)
		}
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

// SelfSigned writes a new self-signed ECDSA P-256 certificate for hosts (IP addresses or DNS
// names), valid from an hour ago for validFor, and its key into dir as fullchain.pem and
// privkey.pem (certbot's names), for tests and benchmarks; the key file is 0600.
func SelfSigned(dir string, hosts []string, validFor time.Duration) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(validFor),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// Pool is a certificate pool that trusts the PEM certificates in file (a self-signed one, or a
// private CA's).
func Pool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return p, nil
}
