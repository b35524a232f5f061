package cluster

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/redisconn"
)

// Host timings: how long an amexd may take to report every slot serving,
// and to drain after SIGTERM.
const (
	hostStartTimeout = 60 * time.Second
	hostStopTimeout  = 30 * time.Second
)

// Host is one machine of the cluster: an amexd supervisor in its own
// network namespace.
type Host struct {
	Index int
	// NS is the host's network namespace; Addr its address on the bridge.
	NS   string
	Addr netip.Addr
	// URL is the host's public URL, reachable from the root namespace.
	URL string
	// Socket is its operator socket (a path, so reachable from anywhere).
	Socket string
	// Binary is the host's own copy of amexd, as each machine has its own;
	// installing a new one there and asking for an upgrade upgrades the host.
	Binary string

	proc *process
}

// Operator returns a client of the host's operator socket.
func (h *Host) Operator() *operator.Client { return operator.NewClient(h.Socket) }

// PID is the host's supervisor process, or 0 when it is not running.
func (h *Host) PID() int {
	if h.proc == nil || h.proc.done() {
		return 0
	}
	return h.proc.pid()
}

// Log returns the end of the host's log.
func (h *Host) Log() string {
	if h.proc == nil {
		return ""
	}
	return h.proc.tail()
}

// Kill ends the host's supervisor with SIGKILL, as a machine's crash would;
// its workers notice and drain on their own.
func (h *Host) Kill() {
	if h.proc != nil {
		h.proc.kill()
	}
}

func (c *Cluster) startHosts(ctx context.Context) error {
	for _, h := range c.Hosts {
		c.onClose(func() {
			if h.proc != nil {
				if err := h.proc.stop(hostStopTimeout); err != nil {
					c.log.Warn("cluster: stop host", "host", h.Index, "err", err)
				}
			}
		})
		if err := c.StartHost(ctx, h); err != nil {
			return err
		}
	}
	return nil
}

// StartHost starts (or, after Kill, restarts) amexd on h and returns once
// its operator socket reports every slot serving.
func (c *Cluster) StartHost(ctx context.Context, h *Host) error {
	if h.PID() != 0 {
		return fmt.Errorf("host %d is running", h.Index)
	}
	h.Socket = filepath.Join(c.opts.Dir, fmt.Sprintf("host%d.sock", h.Index))
	if h.Binary == "" {
		h.Binary = filepath.Join(c.opts.Dir, fmt.Sprintf("host%d", h.Index), "amexd")
		if err := Install(c.opts.Binary, h.Binary); err != nil {
			return fmt.Errorf("host %d: %w", h.Index, err)
		}
	}
	args := []string{"netns", "exec", h.NS, h.Binary,
		"-listen", netip.AddrPortFrom(h.Addr, HostPort).String(),
		"-control.socket", h.Socket,
		"-log.format", "json",
		"-log.access=false",
		"-upstream.url", c.UpstreamURL,
		"-ratelimit.store", "redis",
		"-ratelimit.trusted_proxies", netip.PrefixFrom(c.ProxySource, 32).String(),
	}
	args = append(args, redisFlags(c.Redis)...)
	args = append(args, c.opts.Args...)
	p, err := startProcess(filepath.Join(c.opts.Dir, fmt.Sprintf("host%d.log", h.Index)), nil, "ip", args...)
	if err != nil {
		return err
	}
	h.proc = p
	op := h.Operator()
	err = waitUntil(ctx, hostStartTimeout, func() bool {
		h, err := operator.Call(ctx, op, operator.GetHealth, operator.None{})
		return err == nil && h.Healthy
	}, p)
	if err != nil {
		return fmt.Errorf("host %d (%s): %w", h.Index, h.Addr, err)
	}
	c.log.Info("cluster: host serving", "host", h.Index, "addr", h.Addr, "pid", p.pid())
	return nil
}

// redisFlags are the flags that point amexd at the Redis of r.
func redisFlags(r redisconn.Config) []string {
	switch r.Mode() {
	case "sentinel":
		return []string{"-redis.sentinel.master", r.Sentinel.Master, "-redis.sentinel.addrs", strings.Join(r.Sentinel.Addrs, ",")}
	case "cluster":
		return []string{"-redis.cluster.addrs", strings.Join(r.Cluster.Addrs, ",")}
	}
	return []string{"-redis.url", r.URL}
}

// hostName is a host's server name in HAProxy.
func hostName(i int) string { return "h" + strconv.Itoa(i) }

// Install copies the executable src to dst the way a package manager does:
// to a temporary file beside dst, then renamed over it, so a running amexd
// keeps its old file and the next exec of dst finds the new one.
func Install(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".amexd-*")
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, in)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o755)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}
