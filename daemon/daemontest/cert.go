package daemontest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"matchstream/daemon/certs"
)

// Cert is a self-signed ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost, valid from an
// hour ago for validFor, as PEM files in a temporary directory; Pool trusts it.
type Cert struct {
	CertFile, KeyFile string
	Pair              tls.Certificate
	Pool              *x509.CertPool
}

// NewCert makes a Cert.
func NewCert(t testing.TB, validFor time.Duration) Cert {
	t.Helper()
	certFile, keyFile, err := certs.SelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1", "::1"}, validFor)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := certs.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := certs.Pool(certFile)
	if err != nil {
		t.Fatal(err)
	}
	return Cert{CertFile: certFile, KeyFile: keyFile, Pair: *pair, Pool: pool}
}

// ClientConfig trusts c only.
func (c Cert) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool, MinVersion: tls.VersionTLS13}
}
