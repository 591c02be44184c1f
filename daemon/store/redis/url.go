package redis

import (
	"fmt"
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
// rediss+sentinel:// and rediss+cluster:// are the TLS forms. Further go-redis options (dial_timeout,
// read_timeout, ...) are taken as query parameters, as go-redis's own URL parsers take them.

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
	plain := base + "://" + rest
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
