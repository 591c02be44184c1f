package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"matchstream/daemon/daemontest"
	"matchstream/daemon/protocol"
	"matchstream/daemon/store/redis"
	"matchstream/daemon/store/storetest"
)

// Several Servers on one Redis, in one process: the cluster cases that need no process of their
// own. (A Redis outage and a node killed with -9 run against the binary: TestRedisOutageAndNodeKill.)

func clusterNode(t *testing.T, redisURL, id string) *Server {
	t.Helper()
	cfg := testConfig(t)
	cfg.Store, cfg.NodeID = redisURL, id
	return startServer(t, cfg)
}

// subscribersOf is match id's subscriber count on s; -1: s does not know the match.
func subscribersOf(s *Server, id string) int {
	for _, m := range s.reg.List() {
		if m.State.ID == id {
			return m.Subscribers
		}
	}
	return -1
}

func portsOf(s *Server) []int {
	_, streams := s.Addrs()
	var out []int
	for _, a := range streams {
		out = append(out, a.(*net.TCPAddr).Port)
	}
	return out
}

// On the Redis store, a second node takes over a match the first one started: a v3 client that
// followed node A resumes on node B with FROM and has every event exactly once.
func TestRedisStoreTakeover(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	id := daemontest.SampleID
	lines, v3 := daemontest.SampleLines(t)
	a := clusterNode(t, url, "a")
	post(t, a, id, "["+strings.Join(lines[:12], ",")+"]")
	_, streams := a.Addrs()
	c := daemontest.Dial(t, streams[0].String(), "VERSION:3:CONNECT:r:MATCH:"+id+":FROM:0\r\n", true)
	waitFor(t, "1 subscriber on A", func() bool { return subscribersOf(a, id) == 1 })
	if err := a.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := bytes.TrimSuffix(c.Wait(t), protocol.ShutdownNotice().V3)

	b := clusterNode(t, url, "b")
	_, streams = b.Addrs()
	c2 := daemontest.Dial(t, streams[0].String(), "VERSION:3:CONNECT:r:MATCH:"+id+":FROM:12\r\n", true)
	waitFor(t, "1 subscriber on B", func() bool { return subscribersOf(b, id) == 1 })
	post(t, b, id, "["+strings.Join(lines[12:], ",")+"]")
	if all, want := append(got, c2.Wait(t)...), bytes.Join(v3, nil); !bytes.Equal(all, want) {
		t.Fatalf("across the nodes got\n%s\nwant\n%s", all, want)
	}
}

// Three nodes on one Redis: the watcher posts to node 1 only; clients of nodes 2 and 3, v1 and v3,
// get the whole match in order, from the follow of the match's stream.
func TestThreeNodes(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	id := daemontest.SampleID
	lines, v3 := daemontest.SampleLines(t)
	nodes := make([]*Server, 3)
	for i := range nodes {
		nodes[i] = clusterNode(t, url, fmt.Sprint(i))
	}
	post(t, nodes[0], id, lines[0])
	var v1s, v3s []*daemontest.Client
	for _, n := range nodes[1:] {
		waitFor(t, "the match known on every node", func() bool { return subscribersOf(n, id) == 0 })
		_, streams := n.Addrs()
		for i := range 5 {
			addr := streams[i%len(streams)].String()
			v1s = append(v1s, daemontest.Dial(t, addr, "VERSION:1:CONNECT:u:MATCH:"+id+"\r\n", true))
			v3s = append(v3s, daemontest.Dial(t, addr, "VERSION:3:CONNECT:u:MATCH:"+id+"\r\n", true))
		}
		waitFor(t, "10 subscribers", func() bool { return subscribersOf(n, id) == 10 })
	}
	post(t, nodes[0], id, "["+strings.Join(lines[1:], ",")+"]")
	for i, c := range v1s {
		daemontest.CheckV1(t, fmt.Sprintf("v1 user %d on node %d", i, 2+i/5), c.Wait(t), "home_score: 0\n", 2)
	}
	for i, c := range v3s {
		daemontest.CheckV3(t, fmt.Sprintf("v3 user %d on node %d", i, 2+i/5), c.Wait(t), v3, 1, false)
	}
}

// With a shared store, /connect on any node answers with the least-loaded stream port of the
// whole cluster, so no load balancer is needed in front of the stream ports.
func TestConnectAcrossNodes(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	id := daemontest.SampleID
	lines, _ := daemontest.SampleLines(t)
	a, b := clusterNode(t, url, "a"), clusterNode(t, url, "b")
	post(t, a, id, lines[0])
	_, streams := a.Addrs()
	for i := range 8 {
		daemontest.Dial(t, streams[i%len(streams)].String(), "VERSION:3:CONNECT:u:MATCH:"+id+"\r\n", true)
	}
	waitFor(t, "8 subscribers on A", func() bool { return subscribersOf(a, id) == 8 })
	var c struct {
		Host string `json:"host"`
		Port int    `json:"port"`
	}
	da := &apiClient{t: t, s: a}
	waitFor(t, "A's /connect to send clients to the idle node B", func() bool {
		da.getJSON("/connect?match="+id, &c)
		return c.Host == "127.0.0.1" && slices.Contains(portsOf(b), c.Port)
	})
	if err := b.Shutdown(t.Context()); err != nil { // gone from the cluster view at once
		t.Fatal(err)
	}
	waitFor(t, "A's /connect back to its own ports", func() bool {
		da.getJSON("/connect?match="+id, &c)
		return slices.Contains(portsOf(a), c.Port)
	})
}

// No discovery window: once a start was acknowledged by one node, every other node knows the match
// at once, for a stream client, the v1 listing, the match's page, /connect and a post, 100 times
// over. (Followers looked for new matches once a second: for up to a second a client of another
// node got ERROR: not_found.)
func TestNoDiscoveryWindow(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	lines, _ := daemontest.SampleLines(t)
	a, b, c := clusterNode(t, url, "a"), clusterNode(t, url, "b"), clusterNode(t, url, "c")
	_, bStreams := b.Addrs()
	db, dc := &apiClient{t: t, s: b}, &apiClient{t: t, s: c}
	for i := range 100 {
		home := fmt.Sprintf("h%03d", i)
		id := home + "-tig-2011-09-10"
		post(t, a, id, strings.Replace(lines[0], `"home": "elp"`, `"home": "`+home+`"`, 1))

		cl := daemontest.Dial(t, bStreams[i%len(bStreams)].String(), "VERSION:3:CONNECT:u:MATCH:"+id+"\r\n", false)
		cl.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(cl.Conn).ReadString('\n')
		if err != nil || !strings.Contains(line, `"kind":"status"`) {
			t.Fatalf("match %d: a client of node B got %q, %v; want the status", i, line, err)
		}
		cl.Conn.Close()
		var ids []string
		if dc.getJSON("/1/matches", &ids); !slices.Contains(ids, id) {
			t.Fatalf("match %d: node C's /1/matches is %v", i, ids)
		}
		if code := db.getJSON("/matches/"+id, nil); code != 200 {
			t.Fatalf("match %d: node B's /matches/{id}: %d", i, code)
		}
		if code := dc.getJSON("/connect?match="+id, nil); code != 200 {
			t.Fatalf("match %d: node C's /connect: %d", i, code)
		}
	}
	// A post on a node that has not seen the match yet goes on from the store.
	const id = "hzzz-tig-2011-09-10"
	post(t, a, id, strings.Replace(lines[0], `"home": "elp"`, `"home": "hzzz"`, 1))
	post(t, c, id, lines[1])
	shutdownAll(t, a, b, c)
}

// shutdownAll stops servers at once rather than one cleanup after the other: each waits up to
// a follower's blocking read (2 s) for its loops.
func shutdownAll(t *testing.T, servers ...*Server) {
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if err := s.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// A batch posted again under its idempotency key (a retry after a 504), to the same node or to
// another, is answered with the seqs it was stored as and stored once, even when the match has
// ended since (validated again, the retry of a stop would be refused).
func TestIdempotentPosts(t *testing.T) {
	t.Parallel()
	url := storetest.RedisServer(t)
	id := daemontest.SampleID
	lines, _ := daemontest.SampleLines(t)
	a, b := clusterNode(t, url, "a"), clusterNode(t, url, "b")
	post(t, a, id, lines[0])
	first := postKeyed(t, a, id, "k1", "["+strings.Join(lines[1:3], ",")+"]")
	if !slices.Equal(first, []uint64{2, 3}) {
		t.Fatalf("first post: seqs %v", first)
	}
	for _, s := range []*Server{a, b} {
		if again := postKeyed(t, s, id, "k1", "["+strings.Join(lines[1:3], ",")+"]"); !slices.Equal(again, first) {
			t.Fatalf("the retry got seqs %v, want %v", again, first)
		}
	}
	stop := postKeyed(t, b, id, "k2", lines[len(lines)-1])
	if again := postKeyed(t, a, id, "k2", lines[len(lines)-1]); !slices.Equal(again, stop) {
		t.Fatalf("the retry of the stop got %v, want %v", again, stop)
	}
	var recs []json.RawMessage
	(&apiClient{t: t, s: b}).getJSON("/matches/"+id+"/events", &recs)
	if len(recs) != 4 {
		t.Fatalf("the store has %d events, want 4 (start, two, stop): nothing twice", len(recs))
	}
}

// A Redis that comes back without its data (restarted with none) loses nothing the nodes had
// shown: they write the match back once they reach it again, a client of another node stays
// connected, and the rest of the match reaches it exactly once.
func TestStoreLostIsWrittenBack(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rd := storetest.StartRedis(t)
	id := daemontest.SampleID
	lines, v3 := daemontest.SampleLines(t)
	a, b := clusterNode(t, rd.URL, "a"), clusterNode(t, rd.URL, "b")
	post(t, a, id, "["+strings.Join(lines[:12], ",")+"]")
	_, streams := b.Addrs()
	c := daemontest.Dial(t, streams[0].String(), "VERSION:3:CONNECT:r:MATCH:"+id+":FROM:0\r\n", true)
	waitFor(t, "1 subscriber on B", func() bool { return subscribersOf(b, id) == 1 })
	rd.Lose()
	st, err := redis.Open(ctx, rd.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	waitFor(t, "the nodes to write the match back", func() bool {
		evs, err := st.Events(ctx, id, 0)
		return err == nil && len(evs) == 12
	})
	post(t, a, id, "["+strings.Join(lines[12:], ",")+"]")
	if got, want := c.Wait(t), bytes.Join(v3, nil); !bytes.Equal(got, want) {
		t.Fatalf("B's client got\n%s\nwant\n%s", got, want)
	}
	if n := a.reg.WrittenBack.Load() + b.reg.WrittenBack.Load(); n != 12 {
		t.Fatalf("the nodes wrote back %d events, want the 12 the store lost, once", n)
	}
	shutdownAll(t, a, b)
}

// Two nodes on a Redis Cluster (three primaries, a replica each, so posts wait for WAIT on the
// match's primary): a watcher posts to A, a v3 client of B gets the whole match, and the node's
// /1/matches lists it.
func TestNodesOnRedisCluster(t *testing.T) {
	t.Parallel()
	cl := storetest.StartCluster(t, 3, 1)
	id := daemontest.SampleID
	lines, v3 := daemontest.SampleLines(t)
	a := clusterNode(t, cl.URL(), "a")
	post(t, a, id, lines[0])
	b := clusterNode(t, cl.URL(), "b")
	_, streams := b.Addrs()
	c := daemontest.Dial(t, streams[0].String(), "VERSION:3:CONNECT:r:MATCH:"+id+":FROM:0\r\n", true)
	waitFor(t, "1 subscriber on B", func() bool { return subscribersOf(b, id) == 1 })
	post(t, a, id, "["+strings.Join(lines[1:], ",")+"]")
	if got, want := c.Wait(t), bytes.Join(v3, nil); !bytes.Equal(got, want) {
		t.Fatalf("B's client got\n%s\nwant\n%s", got, want)
	}
	var ids []string
	if (&apiClient{t: t, s: b}).getJSON("/1/matches", &ids); !slices.Contains(ids, id) {
		t.Fatalf("B's /1/matches: %v", ids)
	}
	shutdownAll(t, a, b)
}
