// Package cluster builds a real local amexd cluster on one Linux machine:
// N hosts, each an amexd supervisor in its own network namespace with its
// own address on a private bridge, HAProxy in front of them with /readyz
// health checks and X-Forwarded-For, a Redis (one node, a Sentinel setup or
// a Redis Cluster) and one Event API simulator, and tears all of it down. It
// needs root, iproute2, haproxy and redis-server (and redis-sentinel,
// redis-cli for the other Redis setups).
//
// Nothing leaves the machine: the bridge has a fresh private /24 that no
// route of the machine overlaps, the namespaces have no default route, and
// no NAT is set up. HAProxy listens on 127.0.0.1; the simulator and every
// Redis process listen on the bridge's address in the root namespace. Every run has its
// own names (a random ID) and subnet, held by a lock file for its lifetime,
// so two runs cannot collide, and a run finds and removes what a killed run
// left behind.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/amexd/amexd/internal/redisconn"
	"github.com/amexd/amexd/internal/simulator"
	"github.com/amexd/amexd/internal/testkit/freeport"
	"github.com/amexd/amexd/internal/testkit/redisha"
)

// ErrUnavailable reports a machine that cannot run a cluster: not root, or a
// tool missing.
var ErrUnavailable = errors.New("cluster: this machine cannot run a local cluster")

// HostPort is the port every host's amexd listens on, inside its namespace.
const HostPort = 3000

// RedisSetup is the kind of Redis the hosts share.
type RedisSetup int

const (
	// RedisNode is one redis-server, which KillRedis and RestartRedis
	// stop and start.
	RedisNode RedisSetup = iota
	// RedisSentinel is a master, a replica and three Redis Sentinels
	// (redisha.NewSentinel); the hosts reach it through the sentinels.
	RedisSentinel
	// RedisCluster is a Redis Cluster of three masters (redisha.NewCluster).
	RedisCluster
)

func (r RedisSetup) String() string {
	switch r {
	case RedisSentinel:
		return "sentinel"
	case RedisCluster:
		return "cluster"
	}
	return "node"
}

// Options say what cluster to build.
type Options struct {
	// Binary is the amexd executable every host runs.
	Binary string
	// Hosts is the number of hosts (1 to 50).
	Hosts int
	// Dir holds configuration, logs and sockets; it must exist.
	Dir string
	// Args are extra amexd flags for every host; they come last.
	Args []string
	// Redis is the kind of Redis the hosts share; one node by default.
	Redis RedisSetup
	// Simulator configures the one upstream the hosts share.
	Simulator simulator.Config
	// Log receives progress lines; nil discards them.
	Log *slog.Logger
}

// Cluster is a running local cluster. Close it once.
type Cluster struct {
	// ID names the run: its bridge, namespaces and lock file carry it.
	ID string
	// Gateway is the root namespace's address on the bridge, where the
	// simulator and Redis listen; ProxySource is the address HAProxy
	// connects to the hosts from, the only one they trust X-Forwarded-For from.
	Gateway, ProxySource netip.Addr
	// LB is HAProxy's public URL, on 127.0.0.1.
	LB string
	// Redis is the redis section every host is started with.
	Redis redisconn.Config
	// RedisAddr is the host:port of the RedisNode setup's one node.
	RedisAddr string
	// Sentinel is the RedisSentinel setup, RedisNodes the RedisCluster
	// one; nil for the others.
	Sentinel   *redisha.Sentinel
	RedisNodes *redisha.Cluster
	// Upstream is the simulator the hosts call; UpstreamURL its URL.
	Upstream    *simulator.Simulator
	UpstreamURL string
	Hosts       []*Host

	opts    Options
	subnet  netip.Prefix
	lock    *os.File
	bridge  string
	sim     *http.Server
	redis   *process
	haproxy *process
	hapSock string
	log     *slog.Logger
	undo    []func()
}

// Check returns ErrUnavailable, with the reason, unless this machine can
// run a cluster.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: network namespaces need root", ErrUnavailable)
	}
	for _, tool := range []string{"ip", "haproxy", "redis-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s is not installed (Debian: iproute2, haproxy, redis-server)", ErrUnavailable, tool)
		}
	}
	return nil
}

// CheckRedis returns ErrUnavailable, with the reason, unless the programs
// the Redis setup r needs are installed.
func CheckRedis(r RedisSetup) error {
	tools := []string{"redis-server"}
	switch r {
	case RedisSentinel:
		tools = append(tools, "redis-sentinel")
	case RedisCluster:
		tools = append(tools, "redis-cli")
	}
	if _, err := redisha.Binaries(tools...); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Start builds the cluster and returns once HAProxy sees every host up. On
// failure it tears down what it built.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if err := CheckRedis(opts.Redis); err != nil {
		return nil, err
	}
	if opts.Hosts < 1 || opts.Hosts > 50 {
		return nil, fmt.Errorf("cluster: %d hosts, want 1 to 50", opts.Hosts)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c = &Cluster{opts: opts, log: log}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	reapLeftovers(log)
	if err := c.claimSubnet(); err != nil {
		return nil, err
	}
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"bridge", c.makeBridge},
		{"namespaces", c.makeHosts},
		{"simulator", c.startSimulator},
		{"redis", c.startRedis},
		{"hosts", c.startHosts},
		{"haproxy", c.startHAProxy},
	}
	for _, s := range steps {
		if err := s.do(ctx); err != nil {
			return nil, fmt.Errorf("cluster %s: %s: %w", c.ID, s.what, err)
		}
	}
	log.Info("cluster up", "id", c.ID, "subnet", c.subnet, "lb", c.LB, "hosts", len(c.Hosts))
	return c, nil
}

// Close stops every process the cluster started, by PID, and deletes its
// namespaces, bridge and lock. It is safe after a partial Start.
func (c *Cluster) Close() {
	for i := len(c.undo) - 1; i >= 0; i-- {
		c.undo[i]()
	}
	c.undo = nil
}

func (c *Cluster) onClose(f func()) { c.undo = append(c.undo, f) }

// lockDir holds one lock file per subnet in use, named after the subnet
// and holding the run's ID; a run holds an exclusive flock on its file for
// as long as it lives, so a file whose lock can be taken is a leftover.
const lockDir = "/run/amexd-cluster"

// claimSubnet picks a random 10.x.y.0/24 that no address or route of the
// machine overlaps and that no other run holds.
func (c *Cluster) claimSubnet() error {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	used, err := usedPrefixes()
	if err != nil {
		return err
	}
	var id [3]byte
	for range 64 {
		var b [2]byte
		_, _ = rand.Read(b[:])
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%50, b[1], 0}), 24)
		if overlaps(p, used) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(lockDir, p.Addr().String()+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("cluster: lock subnet: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		_, _ = rand.Read(id[:])
		c.ID = hex.EncodeToString(id[:])
		if err := writeID(f, c.ID); err != nil {
			f.Close()
			return fmt.Errorf("cluster: lock subnet: %w", err)
		}
		c.subnet, c.lock = p, f
		base := p.Addr().As4()
		c.Gateway = netip.AddrFrom4([4]byte{base[0], base[1], base[2], 1})
		c.ProxySource = netip.AddrFrom4([4]byte{base[0], base[1], base[2], 2})
		c.bridge = "amxb" + c.ID
		c.onClose(func() {
			_ = os.Remove(f.Name())
			f.Close()
		})
		return nil
	}
	return errors.New("cluster: no free private /24 found")
}

func writeID(f *os.File, id string) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(id+"\n"), 0)
	return err
}

// usedPrefixes lists the IPv4 prefixes of the machine's addresses and routes.
func usedPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, args := range [][]string{{"-4", "-o", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
		b, err := exec.Command("ip", args...).Output()
		if err != nil {
			return nil, fmt.Errorf("cluster: ip %s: %w", strings.Join(args, " "), err)
		}
		for _, f := range strings.Fields(string(b)) {
			if p, err := netip.ParsePrefix(f); err == nil && p.Addr().Is4() {
				out = append(out, p.Masked())
			} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
				out = append(out, netip.PrefixFrom(a, 32))
			}
		}
	}
	return out, nil
}

func overlaps(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if u.Bits() > 0 && u.Overlaps(p) {
			return true
		}
	}
	return false
}

// reapLeftovers deletes the bridge and namespaces of runs that died
// without tearing down: their lock files are no longer locked.
func reapLeftovers(log *slog.Logger) {
	files, _ := filepath.Glob(filepath.Join(lockDir, "*.lock"))
	for _, name := range files {
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		// A file without an ID may be a live run's that has not written it
		// yet; it is left alone.
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			b, _ := os.ReadFile(name)
			if id := strings.TrimSpace(string(b)); isID(id) {
				log.Warn("cluster: removing what a dead run left", "id", id)
				removeByID(id)
				_ = os.Remove(name)
			}
		}
		f.Close()
	}
}

func isID(s string) bool {
	_, err := hex.DecodeString(s)
	return len(s) == 6 && err == nil
}

// removeByID deletes the namespaces and bridge named after a run's ID.
func removeByID(id string) {
	if b, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, "amx"+id+"h") {
				_ = exec.Command("ip", "netns", "del", name).Run()
			}
		}
	}
	_ = exec.Command("ip", "link", "del", "amxb"+id).Run()
}

// ip runs one iproute2 command.
func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (c *Cluster) makeBridge(context.Context) error {
	if err := ip("link", "add", c.bridge, "type", "bridge"); err != nil {
		return err
	}
	c.onClose(func() { _ = ip("link", "del", c.bridge) })
	for _, a := range []netip.Addr{c.Gateway, c.ProxySource} {
		if err := ip("addr", "add", netip.PrefixFrom(a, 24).String(), "dev", c.bridge); err != nil {
			return err
		}
	}
	return ip("link", "set", c.bridge, "up")
}

// makeHosts creates one namespace per host, joined to the bridge by a veth
// pair, with its address, loopback, and no route beyond the subnet.
func (c *Cluster) makeHosts(context.Context) error {
	base := c.subnet.Addr().As4()
	for i := range c.opts.Hosts {
		h := &Host{
			Index: i,
			NS:    fmt.Sprintf("amx%sh%d", c.ID, i),
			Addr:  netip.AddrFrom4([4]byte{base[0], base[1], base[2], byte(10 + i)}),
		}
		h.URL = "http://" + netip.AddrPortFrom(h.Addr, HostPort).String()
		if err := ip("netns", "add", h.NS); err != nil {
			return err
		}
		c.onClose(func() { _ = ip("netns", "del", h.NS) })
		veth := fmt.Sprintf("amx%sv%d", c.ID, i)
		if err := ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS); err != nil {
			return err
		}
		for _, args := range [][]string{
			{"link", "set", veth, "master", c.bridge, "up"},
			{"-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr, 24).String(), "dev", "eth0"},
			{"-n", h.NS, "link", "set", "eth0", "up"},
			{"-n", h.NS, "link", "set", "lo", "up"},
		} {
			if err := ip(args...); err != nil {
				return err
			}
		}
		c.Hosts = append(c.Hosts, h)
	}
	return nil
}

func (c *Cluster) startSimulator(context.Context) error {
	sim, err := simulator.New(c.opts.Simulator)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(c.Gateway, 0).String())
	if err != nil {
		return err
	}
	c.Upstream, c.UpstreamURL = sim, "http://"+ln.Addr().String()
	c.sim = &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = c.sim.Serve(ln) }()
	c.onClose(func() { _ = c.sim.Close() })
	return nil
}

// startRedis starts the Redis setup the options ask for on the gateway
// address, which every namespace reaches.
func (c *Cluster) startRedis(ctx context.Context) error {
	dir := filepath.Join(c.opts.Dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	switch c.opts.Redis {
	case RedisSentinel:
		s, err := redisha.NewSentinel(c.Gateway.String(), dir)
		if s != nil {
			c.onClose(s.Close)
		}
		if err != nil {
			return err
		}
		c.Sentinel, c.Redis = s, s.Config()
		return nil
	case RedisCluster:
		rc, err := redisha.NewCluster(c.Gateway.String(), dir, 3)
		if rc != nil {
			c.onClose(rc.Close)
		}
		if err != nil {
			return err
		}
		c.RedisNodes, c.Redis = rc, rc.Config()
		return nil
	}
	port, err := freeport.On(c.Gateway.String()) // the gateway address is this run's own: nothing else is expected to take it
	if err != nil {
		return err
	}
	c.RedisAddr = net.JoinHostPort(c.Gateway.String(), strconv.Itoa(port))
	c.Redis = redisconn.DefaultConfig()
	c.Redis.URL = "redis://" + c.RedisAddr + "/0"
	c.onClose(c.KillRedis)
	return c.RestartRedis(ctx)
}

// KillRedis ends the RedisNode setup's node with SIGKILL.
func (c *Cluster) KillRedis() {
	if c.redis != nil {
		c.redis.kill()
		c.redis = nil
	}
}

// RestartRedis starts Redis (empty) on its address after KillRedis.
func (c *Cluster) RestartRedis(ctx context.Context) error {
	if c.RedisAddr == "" {
		return fmt.Errorf("redis is a %s setup, not one node", c.opts.Redis)
	}
	if c.redis != nil {
		return errors.New("redis is running")
	}
	_, port, _ := net.SplitHostPort(c.RedisAddr)
	dir := filepath.Join(c.opts.Dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	p, err := startProcess(filepath.Join(c.opts.Dir, "redis.log"), nil, "redis-server",
		"--bind", c.Gateway.String(), "--port", port, "--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		return err
	}
	c.redis = p
	return waitUntil(ctx, 10*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", c.RedisAddr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}, p)
}
