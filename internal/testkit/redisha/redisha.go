// Package redisha runs Redis setups that fail over, for tests: a master with
// one replica watched by three Redis Sentinels, and a Redis Cluster of
// masters. Every process listens on loopback on a port chosen free at run
// time, is started by the test and killed when it ends (or when the test
// binary dies). Without the binaries a test is skipped, except in CI
// (CI=true), where it fails: .ci/packages installs redis-server and
// redis-sentinel.
package redisha

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/amexd/amexd/internal/redisconn"
)

// MasterName is the name the sentinels know the master by.
const MasterName = "amexd"

// startTimeout bounds how long a setup may take to be ready, and a
// failover to complete.
const startTimeout = 30 * time.Second

// DownAfter is how long the sentinels wait before they call a silent
// master down: the floor of every failover in these tests.
const DownAfter = time.Second

// Node is one redis-server or redis-sentinel process.
type Node struct {
	// Addr is its host:port on loopback.
	Addr string
	cmd  *exec.Cmd
}

// Kill sends SIGKILL and waits for the process; a killed node stays dead.
func (n *Node) Kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// binary returns the path of name or ends tb: skipped, or failed in CI.
func binary(tb testing.TB, name string) string {
	tb.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s is not installed (.ci/packages lists it): %v", name, err)
		}
		tb.Skipf("%s is not installed; `make test` installs it as root", name)
	}
	return bin
}

// freePort returns a loopback port nobody listens on now.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start runs bin with args plus --port, on a free port, and returns once
// it answers PING. A port taken between choosing and binding is retried.
func start(tb testing.TB, dir, bin string, args ...string) *Node {
	tb.Helper()
	var lastErr error
	for range 5 {
		port := freePort(tb)
		cmd := exec.Command(bin, append(args, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d.log", port)))
		if err != nil {
			tb.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		err = cmd.Start()
		logf.Close()
		if err != nil {
			tb.Fatalf("redisha: start %s: %v", bin, err)
		}
		n := &Node{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd}
		tb.Cleanup(n.Kill)
		if lastErr = n.waitPing(tb); lastErr == nil {
			return n
		}
		n.Kill()
	}
	tb.Fatalf("redisha: %s did not answer: %v", bin, lastErr)
	return nil
}

// waitPing waits for the node to answer PING; a node that cannot bind its
// port exits, and is not waited for long.
func (n *Node) waitPing(tb testing.TB) error {
	c := client(tb, n.Addr)
	defer c.Close()
	return pollFor(10*time.Second, func(ctx context.Context) error { return c.Ping(ctx).Err() })
}

// poll calls f until it succeeds or startTimeout passes.
func poll(f func(ctx context.Context) error) error { return pollFor(startTimeout, f) }

// pollFor calls f until it succeeds or d passes.
func pollFor(d time.Duration, f func(ctx context.Context) error) error {
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := f(ctx)
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // polling a process's state, bounded by the deadline
	}
}

// client is a plain client of one node, for setting up and inspecting.
func client(tb testing.TB, addr string) redis.UniversalClient {
	tb.Helper()
	c, err := redisconn.New(redisconn.Config{URL: "redis://" + addr + "/0", DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// serverArgs are the flags of every data node: no persistence, quick
// diskless replication.
var serverArgs = []string{"--save", "", "--appendonly", "no", "--repl-diskless-sync", "yes",
	"--repl-diskless-sync-delay", "0", "--loglevel", "notice"}

// Sentinel is one master, one replica and three sentinels.
type Sentinel struct {
	Master, Replica *Node
	Sentinels       []*Node
	tb              testing.TB
}

// StartSentinel starts the setup and returns once the replica is in sync
// and every sentinel knows the master and its replica.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	server, sentinel := binary(tb, "redis-server"), binary(tb, "redis-sentinel")
	dir := tb.TempDir()
	s := &Sentinel{tb: tb}
	s.Master = start(tb, dir, server, serverArgs...)
	host, port, _ := net.SplitHostPort(s.Master.Addr)
	s.Replica = start(tb, dir, server, append([]string{"--replicaof", host, port}, serverArgs...)...)
	if err := waitSynced(tb, s.Replica.Addr); err != nil {
		tb.Fatalf("redisha: replica not in sync: %v", err)
	}
	for i := range 3 {
		conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", i))
		text := fmt.Sprintf("sentinel monitor %s %s %s 2\nsentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			MasterName, host, port, MasterName, DownAfter.Milliseconds(), MasterName, MasterName)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			tb.Fatal(err)
		}
		s.Sentinels = append(s.Sentinels, start(tb, dir, sentinel, conf))
	}
	for _, n := range s.Sentinels {
		c := client(tb, n.Addr)
		err := poll(func(ctx context.Context) error {
			info, err := c.Do(ctx, "sentinel", "sentinels", MasterName).Slice()
			if err != nil {
				return err
			}
			replicas, err := c.Do(ctx, "sentinel", "replicas", MasterName).Slice()
			if err != nil {
				return err
			}
			if len(info) < 2 || len(replicas) < 1 {
				return fmt.Errorf("sentinel %s sees %d other sentinels and %d replicas", n.Addr, len(info), len(replicas))
			}
			return nil
		})
		c.Close()
		if err != nil {
			tb.Fatalf("redisha: %v", err)
		}
	}
	return s
}

// waitSynced waits until the replica at addr has its link to the master up.
func waitSynced(tb testing.TB, addr string) error {
	c := client(tb, addr)
	defer c.Close()
	return poll(func(ctx context.Context) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica %s not in sync yet", addr)
		}
		return nil
	})
}

// Config is the redis section that reaches this setup through its sentinels.
func (s *Sentinel) Config() redisconn.Config {
	c := redisconn.DefaultConfig()
	c.Sentinel.Master = MasterName
	for _, n := range s.Sentinels {
		c.Sentinel.Addrs = append(c.Sentinel.Addrs, n.Addr)
	}
	return c
}

// MasterAddr is the master's address as the first answering sentinel says.
func (s *Sentinel) MasterAddr() (string, error) {
	var last error
	for _, n := range s.Sentinels {
		if n.cmd == nil {
			continue
		}
		c := client(s.tb, n.Addr)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		addr, err := c.Do(ctx, "sentinel", "get-master-addr-by-name", MasterName).StringSlice()
		cancel()
		c.Close()
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("redisha: no sentinel names the master: %v", last)
}

// KillMaster kills the master with SIGKILL and returns when it did.
func (s *Sentinel) KillMaster() time.Time {
	s.Master.Kill()
	return time.Now()
}

// WaitFailover waits until the sentinels name the replica as the master
// and it accepts writes, and returns when that was seen.
func (s *Sentinel) WaitFailover() time.Time {
	s.tb.Helper()
	c := client(s.tb, s.Replica.Addr)
	defer c.Close()
	err := poll(func(ctx context.Context) error {
		addr, err := s.MasterAddr()
		if err != nil {
			return err
		}
		if addr != s.Replica.Addr {
			return fmt.Errorf("sentinels still name %s", addr)
		}
		return c.Set(ctx, "redisha:probe", "1", time.Minute).Err()
	})
	if err != nil {
		s.tb.Fatalf("redisha: no failover within %v: %v", startTimeout, err)
	}
	return time.Now()
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	Nodes []*Node
}

// StartCluster starts masters nodes, joins them with redis-cli --cluster
// create, and returns once every node reports the cluster ok.
func StartCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	server, cli := binary(tb, "redis-server"), binary(tb, "redis-cli")
	dir := tb.TempDir()
	c := &Cluster{}
	args := []string{"--cluster", "create"}
	for i := range masters {
		n := start(tb, dir, server, append([]string{"--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", i), "--cluster-node-timeout", "2000"}, serverArgs...)...)
		c.Nodes = append(c.Nodes, n)
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redisha: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, n := range c.Nodes {
		cl := client(tb, n.Addr)
		err := poll(func(ctx context.Context) error {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			sc := bufio.NewScanner(strings.NewReader(info))
			for sc.Scan() {
				if strings.TrimSpace(sc.Text()) == "cluster_state:ok" {
					return nil
				}
			}
			return fmt.Errorf("node %s: cluster not ok yet", n.Addr)
		})
		cl.Close()
		if err != nil {
			tb.Fatalf("redisha: %v", err)
		}
	}
	return c
}

// Config is the redis section that reaches this cluster.
func (c *Cluster) Config() redisconn.Config {
	cfg := redisconn.DefaultConfig()
	for _, n := range c.Nodes {
		cfg.Cluster.Addrs = append(cfg.Cluster.Addrs, n.Addr)
	}
	return cfg
}

// KeysPerNode counts the keys each node holds, in the order of Nodes.
func (c *Cluster) KeysPerNode(tb testing.TB) []int64 {
	tb.Helper()
	var out []int64
	for _, n := range c.Nodes {
		cl := client(tb, n.Addr)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		k, err := cl.DBSize(ctx).Result()
		cancel()
		cl.Close()
		if err != nil {
			tb.Fatalf("redisha: dbsize %s: %v", n.Addr, err)
		}
		out = append(out, k)
	}
	return out
}
