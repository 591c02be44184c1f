package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

// tlsFlags are the client side's TLS settings, for the commands that talk to a daemon over HTTPS
// or to a TLS stream port (watcher, client, bench, top).
func tlsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "ca", EnvVars: env("ca"),
			Usage: "PEM file of certificate authorities to trust besides the system's (a private CA, or a self-signed daemon certificate)"},
		&cli.BoolFlag{Name: "insecure", EnvVars: env("insecure"),
			Usage: "do not verify the daemon's certificate (tests only: anyone on the path can read and change the traffic)"},
	}
}

// clientTLS is the TLS configuration --ca and --insecure ask for.
func clientTLS(c *cli.Context) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: c.Bool("insecure")}
	if f := c.String("ca"); f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, usageErr(fmt.Errorf("--ca: %w", err), "")
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageErr(errors.New("--ca "+f+": no PEM certificate in it"), "")
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// httpClient is an HTTP client with the TLS settings of the command's flags.
func httpClient(c *cli.Context, timeout time.Duration) (*http.Client, error) {
	cfg, err := clientTLS(c)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Timeout: timeout, Transport: tr}, nil
}
