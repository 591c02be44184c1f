package storetest

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Cluster is a private Redis Cluster for a test: masters primaries, each with replicas replicas,
// made into a cluster by redis-cli --cluster create. Every node's cluster bus port is picked like
// its port (Redis's default, port+10000, lands in the range the daemons of other tests use).
type Cluster struct {
	Nodes []*Redis
	t     testing.TB
}

// StartCluster starts a cluster and waits until every node says it serves all slots.
func StartCluster(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli is needed (Debian's redis-tools, which redis-server depends on)")
	}
	cl := &Cluster{t: t}
	var addrs []string
	for range masters * (1 + replicas) {
		r := StartRedisWith(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--cluster-port", fmt.Sprint(redisPort(t)))
		cl.Nodes = append(cl.Nodes, r)
		addrs = append(addrs, r.Addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", fmt.Sprint(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range cl.Nodes {
		for {
			info, _ := cl.Do(r, "CLUSTER", "INFO")
			if strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s is not ready: %s", r.Addr(), info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if replicas > 0 { // every replica has had its first sync: WAIT can count it
		for _, r := range cl.Nodes {
			for {
				info, _ := cl.Do(r, "INFO", "replication")
				if strings.Contains(info, "role:master") && strings.Contains(info, fmt.Sprintf("connected_slaves:%d", replicas)) ||
					strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("cluster node %s: replication not up: %s", r.Addr(), info)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return cl
}

// URL is the store URL of the cluster, naming every node.
func (cl *Cluster) URL() string {
	u := "redis+cluster://" + cl.Nodes[0].Addr()
	for i, r := range cl.Nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + r.Addr()
	}
	return u
}

// Flush empties every primary (a cluster has database 0 only, so suites share it).
func (cl *Cluster) Flush() {
	cl.t.Helper()
	for _, r := range cl.Nodes {
		if info, _ := cl.Do(r, "INFO", "replication"); strings.Contains(info, "role:master") {
			if out, err := cl.Do(r, "FLUSHALL"); err != nil {
				cl.t.Fatalf("FLUSHALL on %s: %v %s", r.Addr(), err, out)
			}
		}
	}
}

// Do runs one command on one node with redis-cli and returns its output.
func (cl *Cluster) Do(r *Redis, args ...string) (string, error) {
	out, err := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(r.port)}, args...)...).CombinedOutput()
	return string(out), err
}
