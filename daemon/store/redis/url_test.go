package redis

import (
	"testing"
)

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		url                        string
		addrs                      []string
		master, user, pass         string
		sentinelUser, sentinelPass string
		db                         int
		tls, cluster               bool
	}{
		{url: "redis://127.0.0.1:6379/2", addrs: []string{"127.0.0.1:6379"}, db: 2},
		{url: "redis://app:s3cret@r1:6380/0", addrs: []string{"r1:6380"}, user: "app", pass: "s3cret"},
		{url: "rediss://:pw@r1:6380/1", addrs: []string{"r1:6380"}, pass: "pw", db: 1, tls: true},
		{url: "redis+sentinel://s1:26379/3?master_name=mymaster&addr=s2:26379&addr=s3:26379",
			addrs: []string{"s1:26379", "s2:26379", "s3:26379"}, master: "mymaster", db: 3},
		{url: "rediss+sentinel://sen:spw@s1:26379/0?master_name=m&username=app&password=apw",
			addrs: []string{"s1:26379"}, master: "m", user: "app", pass: "apw", sentinelUser: "sen", sentinelPass: "spw", tls: true},
		{url: "redis+cluster://app:pw@c1:7000?addr=c2:7001", addrs: []string{"c1:7000", "c2:7001"}, user: "app", pass: "pw", cluster: true},
	} {
		o, err := options(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if len(o.Addrs) != len(tc.addrs) || o.MasterName != tc.master || o.Username != tc.user || o.Password != tc.pass ||
			o.SentinelUsername != tc.sentinelUser || o.SentinelPassword != tc.sentinelPass || o.DB != tc.db ||
			(o.TLSConfig != nil) != tc.tls || o.IsClusterMode != tc.cluster {
			t.Errorf("%s: got %+v", tc.url, o)
			continue
		}
		for i := range tc.addrs {
			if o.Addrs[i] != tc.addrs[i] {
				t.Errorf("%s: addrs %v, want %v", tc.url, o.Addrs, tc.addrs)
			}
		}
	}
	for _, bad := range []string{
		"redis+sentinel://s1:26379/0",        // no master name
		"redis+mesh://r1:6379",               // no such deployment
		"memcache://r1:11211",                // not redis
		"redis://r1:6379/notanumber",         // bad db
		"redis+cluster://c1:7000?nosuch=1",   // unknown option
		"redis://r1:6379/0?ca_file=ca.pem",   // TLS files without TLS
		"rediss://r1:6379/0?cert_file=c.pem", // a certificate without its key
		"rediss://r1:6379/0?ca_file=/nonexistent.pem",
	} {
		if _, err := options(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
