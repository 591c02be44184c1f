package redis

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// The store URL forms, one per Redis deployment (README "Adding nodes"):
//
//	redis://[user:password@]host:port/db            one server (ACL user and password optional)
//	rediss://...                                    the same over TLS (?skip_verify=true for a test CA)
//	redis+sentinel://[user:password@]host:port/db?master_name=NAME[&addr=host:port...][&username=U&password=P]
//	                                                Sentinel: the userinfo is the sentinels', username/password the
//	                                                primary's; the client follows each failover
//	redis+cluster://[user:password@]host:port[?addr=host:port...]
//	                                                Redis Cluster (db 0 only)
//
// rediss+sentinel:// and rediss+cluster:// are the TLS forms. Over TLS the server is verified
// against the system's CAs, or ?ca_file=PEM (a private CA); ?cert_file=PEM&key_file=PEM present a
// client certificate (Redis asks for one unless tls-auth-clients is no). Further go-redis options
// (dial_timeout, read_timeout, ...) are taken as query parameters, as go-redis's own URL parsers
// take them.

// options turns a store URL into the go-redis options of its deployment.
func options(raw string) (*goredis.UniversalOptions, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("not a URL")
	}
	base, mode, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("scheme %s: want redis, rediss, redis+sentinel or redis+cluster", scheme)
	}
	rest, files, err := tlsFiles(rest)
	if err != nil {
		return nil, err
	}
	if files != (tlsFileNames{}) && base != "rediss" {
		return nil, fmt.Errorf("ca_file, cert_file and key_file are for TLS: the scheme is rediss, not redis")
	}
	o, err := deployment(base+"://"+rest, scheme, mode)
	if err != nil {
		return nil, err
	}
	if o.TLSConfig != nil {
		if err := files.apply(o.TLSConfig); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// deployment parses a URL of one deployment with go-redis's parser for it.
func deployment(plain, scheme, mode string) (*goredis.UniversalOptions, error) {
	switch mode {
	case "":
		o, err := goredis.ParseURL(plain)
		if err != nil {
			return nil, err
		}
		return &goredis.UniversalOptions{Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout}, nil
	case "sentinel":
		o, err := goredis.ParseFailoverURL(plain)
		if err != nil {
			return nil, err
		}
		if o.MasterName == "" {
			return nil, fmt.Errorf("%s needs ?master_name= (the name the sentinels monitor)", scheme)
		}
		return &goredis.UniversalOptions{Addrs: o.SentinelAddrs, MasterName: o.MasterName, DB: o.DB,
			SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword,
			Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout}, nil
	case "cluster":
		o, err := goredis.ParseClusterURL(plain)
		if err != nil {
			return nil, err
		}
		return &goredis.UniversalOptions{Addrs: o.Addrs, IsClusterMode: true, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout}, nil
	}
	return nil, fmt.Errorf("scheme %s: want redis, rediss, redis+sentinel or redis+cluster", scheme)
}

// tlsFileNames are the PEM files a store URL names for TLS.
type tlsFileNames struct{ ca, cert, key string }

// tlsFiles takes ca_file, cert_file and key_file out of the URL's query (go-redis refuses
// parameters it does not know).
func tlsFiles(rest string) (string, tlsFileNames, error) {
	var f tlsFileNames
	head, query, ok := strings.Cut(rest, "?")
	if !ok {
		return rest, f, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", f, fmt.Errorf("query: %w", err)
	}
	f = tlsFileNames{ca: q.Get("ca_file"), cert: q.Get("cert_file"), key: q.Get("key_file")}
	q.Del("ca_file")
	q.Del("cert_file")
	q.Del("key_file")
	if (f.cert == "") != (f.key == "") {
		return "", f, fmt.Errorf("cert_file and key_file go together")
	}
	if len(q) == 0 {
		return head, f, nil
	}
	return head + "?" + q.Encode(), f, nil
}

// apply loads the files into c: the CA replaces the system's, the certificate is presented.
func (f tlsFileNames) apply(c *tls.Config) error {
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ca_file %s: no PEM certificate in it", f.ca)
		}
		c.RootCAs = pool
	}
	if f.cert != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return fmt.Errorf("cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	return nil
}
