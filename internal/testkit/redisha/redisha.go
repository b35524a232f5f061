// Package redisha runs Redis setups that fail over, for tests: a master with
// one replica watched by three Redis Sentinels, and a Redis Cluster of
// masters. Every process listens on a port chosen free at run time on the
// address asked for (loopback for the Start functions), is started by the
// caller and killed by PID when it closes the setup (or when the test binary
// dies). Without the binaries a test is skipped, except in CI (CI=true),
// where it fails: .ci/packages installs redis-server and redis-sentinel.
package redisha

import (
	"bufio"
	"context"
	"errors"
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
	"github.com/amexd/amexd/internal/testkit/freeport"
)

// MasterName is the name the sentinels know the master by.
const MasterName = "amexd"

// startTimeout bounds how long a setup may take to be ready, and a
// failover to complete.
const startTimeout = 30 * time.Second

// DownAfter is how long the sentinels wait before they call a silent
// master down: the floor of every failover in these tests.
const DownAfter = time.Second

// ErrMissing reports a Redis binary that is not installed.
var ErrMissing = errors.New("redisha: not installed")

// Node is one redis-server or redis-sentinel process.
type Node struct {
	// Addr is its host:port.
	Addr string
	bin  string
	args []string
	dir  string
	cmd  *exec.Cmd
	// exited is closed once cmd has been reaped.
	exited chan struct{}
}

// Kill sends SIGKILL to the node's PID and waits for it; a killed node
// stays dead until Restart.
func (n *Node) Kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
}

// Binaries returns the paths of the named programs, or an error wrapping
// ErrMissing that names the first one missing.
func Binaries(names ...string) ([]string, error) {
	var out []string
	for _, name := range names {
		bin, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s (Debian: redis-server, redis-sentinel)", ErrMissing, name)
		}
		out = append(out, bin)
	}
	return out, nil
}

// binaries ends tb unless every one of names is installed: skipped, or
// failed in CI.
func binaries(tb testing.TB, names ...string) {
	tb.Helper()
	if _, err := Binaries(names...); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%v; .ci/packages lists it", err)
		}
		tb.Skipf("%v; `make test` installs it as root", err)
	}
}

// start runs bin with args on host at a free port, and returns once it
// answers PING. A port taken between choosing and binding is retried.
func start(host, dir, bin string, args ...string) (*Node, error) {
	var lastErr error
	for range 5 {
		port, err := freeport.On(host)
		if err != nil {
			return nil, fmt.Errorf("redisha: %w", err)
		}
		n := &Node{Addr: net.JoinHostPort(host, strconv.Itoa(port)), bin: bin, args: args, dir: dir}
		if err := n.run(); err != nil {
			return nil, err
		}
		if lastErr = n.waitPing(); lastErr == nil {
			return n, nil
		}
		n.Kill()
	}
	return nil, fmt.Errorf("redisha: %s did not answer: %w", bin, lastErr)
}

// run starts the node's process on its address.
func (n *Node) run(extra ...string) error {
	host, port, _ := net.SplitHostPort(n.Addr)
	args := append(append(n.args[:len(n.args):len(n.args)], extra...),
		"--port", port, "--bind", host, "--protected-mode", "no", "--dir", n.dir)
	cmd := exec.Command(n.bin, args...)
	// The process must not outlive a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(filepath.Join(n.dir, port+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("redisha: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("redisha: start %s: %w", n.bin, err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(n.exited)
	return nil
}

// waitPing waits until the node's own process answers on its address. A
// node that cannot bind its port exits, and is not waited for; a server
// of someone else's that took the port is told apart by its process ID.
func (n *Node) waitPing() error {
	c, err := client(n.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	want := "process_id:" + strconv.Itoa(n.cmd.Process.Pid)
	return pollFor(10*time.Second, func(ctx context.Context) error {
		select {
		case <-n.exited:
			return fmt.Errorf("%s %w", n.bin, errExited)
		default:
		}
		info, err := c.Info(ctx, "server").Result()
		switch {
		case err != nil:
			return err
		case !strings.Contains(info, want+"\r\n"):
			return fmt.Errorf("another server than %s's answers on %s", n.bin, n.Addr)
		}
		return nil
	})
}

// poll calls f until it succeeds or startTimeout passes.
func poll(f func(ctx context.Context) error) error { return pollFor(startTimeout, f) }

// errExited ends a poll: the process polled for has exited.
var errExited = errors.New("exited")

// pollFor calls f until it succeeds, d passes or f reports errExited.
func pollFor(d time.Duration, f func(ctx context.Context) error) error {
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := f(ctx)
		cancel()
		if err == nil || errors.Is(err, errExited) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond) // polling a process's state, bounded by the deadline
	}
}

// client is a plain client of one node, for setting up and inspecting.
func client(addr string) (redis.UniversalClient, error) {
	c, err := redisconn.New(redisconn.Config{URL: "redis://" + addr + "/0", DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("redisha: %w", err)
	}
	return c, nil
}

// serverArgs are the flags of every data node: no persistence, quick
// diskless replication.
var serverArgs = []string{"--save", "", "--appendonly", "no", "--repl-diskless-sync", "yes",
	"--repl-diskless-sync-delay", "0", "--loglevel", "notice"}

// Sentinel is one master, one replica and three sentinels.
type Sentinel struct {
	Master, Replica *Node
	Sentinels       []*Node
}

// StartSentinel starts the setup on loopback for tb, stopped when the test
// ends, and returns once the replica is in sync and every sentinel knows
// the master and its replica.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	binaries(tb, "redis-server", "redis-sentinel")
	s, err := NewSentinel("127.0.0.1", tb.TempDir())
	if s != nil {
		tb.Cleanup(s.Close)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// NewSentinel starts the setup on host (an address of this machine),
// keeping its files in dir, and returns once the replica is in sync and
// every sentinel knows the master and its replica. The caller closes it,
// also after an error.
func NewSentinel(host, dir string) (*Sentinel, error) {
	bins, err := Binaries("redis-server", "redis-sentinel")
	if err != nil {
		return nil, err
	}
	server, sentinel := bins[0], bins[1]
	s := &Sentinel{}
	if s.Master, err = start(host, dir, server, serverArgs...); err != nil {
		return s, err
	}
	mhost, mport, _ := net.SplitHostPort(s.Master.Addr)
	if s.Replica, err = start(host, dir, server, append([]string{"--replicaof", mhost, mport}, serverArgs...)...); err != nil {
		return s, err
	}
	if err := waitSynced(s.Replica.Addr); err != nil {
		return s, fmt.Errorf("redisha: replica not in sync: %w", err)
	}
	for i := range 3 {
		conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", i))
		text := fmt.Sprintf("sentinel monitor %s %s %s 2\nsentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			MasterName, mhost, mport, MasterName, DownAfter.Milliseconds(), MasterName, MasterName)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return s, fmt.Errorf("redisha: %w", err)
		}
		n, err := start(host, dir, sentinel, conf)
		if n != nil {
			s.Sentinels = append(s.Sentinels, n)
		}
		if err != nil {
			return s, err
		}
	}
	for _, n := range s.Sentinels {
		if err := knowsAll(n.Addr); err != nil {
			return s, err
		}
	}
	return s, nil
}

// knowsAll waits until the sentinel at addr sees the two others and the
// replica.
func knowsAll(addr string) error {
	c, err := client(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	err = poll(func(ctx context.Context) error {
		info, err := c.Do(ctx, "sentinel", "sentinels", MasterName).Slice()
		if err != nil {
			return err
		}
		replicas, err := c.Do(ctx, "sentinel", "replicas", MasterName).Slice()
		if err != nil {
			return err
		}
		if len(info) < 2 || len(replicas) < 1 {
			return fmt.Errorf("sentinel %s sees %d other sentinels and %d replicas", addr, len(info), len(replicas))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisha: %w", err)
	}
	return nil
}

// Close kills every process of the setup.
func (s *Sentinel) Close() {
	for _, n := range append([]*Node{s.Master, s.Replica}, s.Sentinels...) {
		if n != nil {
			n.Kill()
		}
	}
}

// waitSynced waits until the replica at addr has its link to the master up.
func waitSynced(addr string) error {
	c, err := client(addr)
	if err != nil {
		return err
	}
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
		c, err := client(n.Addr)
		if err != nil {
			return "", err
		}
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
// and it accepts writes, and returns when that was seen; it ends tb if
// that takes longer than 30 s.
func (s *Sentinel) WaitFailover(tb testing.TB) time.Time {
	tb.Helper()
	at, err := s.AwaitFailover()
	if err != nil {
		tb.Fatal(err)
	}
	return at
}

// AwaitFailover waits up to 30 s until the sentinels name the replica as
// the master and it accepts writes, and returns when that was seen.
func (s *Sentinel) AwaitFailover() (time.Time, error) {
	c, err := client(s.Replica.Addr)
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	err = poll(func(ctx context.Context) error {
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
		return time.Time{}, fmt.Errorf("redisha: no failover within %v: %w", startTimeout, err)
	}
	return time.Now(), nil
}

// Rejoin starts the killed old master again, empty, as a replica of the
// promoted one, as an operator (or systemd) brings a dead node back, and
// returns once it is in sync: with one replica again, a claim that waits
// for one (redis.wait_replicas 1) can be acknowledged. Call it after
// AwaitFailover.
func (s *Sentinel) Rejoin() error {
	if s.Master.cmd != nil {
		return errors.New("redisha: rejoin: the old master is running")
	}
	host, port, _ := net.SplitHostPort(s.Replica.Addr)
	if err := s.Master.run("--replicaof", host, port); err != nil {
		return err
	}
	if err := s.Master.waitPing(); err != nil {
		return fmt.Errorf("redisha: rejoin: %w", err)
	}
	if err := waitSynced(s.Master.Addr); err != nil {
		return fmt.Errorf("redisha: rejoin: %w", err)
	}
	return nil
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	Nodes []*Node
}

// StartCluster starts a cluster of masters on loopback for tb, stopped
// when the test ends, and returns once every node reports the cluster ok.
func StartCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	binaries(tb, "redis-server", "redis-cli")
	c, err := NewCluster("127.0.0.1", tb.TempDir(), masters)
	if c != nil {
		tb.Cleanup(c.Close)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// NewCluster starts masters nodes on host (an address of this machine),
// keeping their files in dir, joins them with redis-cli --cluster create,
// and returns once every node reports the cluster ok. The caller closes
// it, also after an error.
func NewCluster(host, dir string, masters int) (*Cluster, error) {
	bins, err := Binaries("redis-server", "redis-cli")
	if err != nil {
		return nil, err
	}
	server, cli := bins[0], bins[1]
	c := &Cluster{}
	args := []string{"--cluster", "create"}
	for i := range masters {
		n, err := start(host, dir, server, append([]string{"--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", i), "--cluster-node-timeout", "2000"}, serverArgs...)...)
		if err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, n)
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return c, fmt.Errorf("redisha: redis-cli %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	for _, n := range c.Nodes {
		if err := clusterOK(n.Addr); err != nil {
			return c, err
		}
	}
	return c, nil
}

// clusterOK waits until the node at addr reports the cluster ok.
func clusterOK(addr string) error {
	cl, err := client(addr)
	if err != nil {
		return err
	}
	defer cl.Close()
	err = poll(func(ctx context.Context) error {
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
		return fmt.Errorf("node %s: cluster not ok yet", addr)
	})
	if err != nil {
		return fmt.Errorf("redisha: %w", err)
	}
	return nil
}

// Close kills every node of the cluster.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		n.Kill()
	}
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
	out, err := c.Keys()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Keys counts the keys each node holds, in the order of Nodes.
func (c *Cluster) Keys() ([]int64, error) {
	var out []int64
	for _, n := range c.Nodes {
		cl, err := client(n.Addr)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		k, err := cl.DBSize(ctx).Result()
		cancel()
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("redisha: dbsize %s: %w", n.Addr, err)
		}
		out = append(out, k)
	}
	return out, nil
}
