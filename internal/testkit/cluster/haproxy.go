package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/amexd/amexd/internal/testkit/freeport"
)

// haproxyConfig is the load balancer in front of the hosts: round robin,
// X-Forwarded-For added, hosts checked on /readyz about three times a second
// and taken out after two failed checks (refused, not 200, or no answer in
// 2 s), a request whose connection to a host fails or is closed without an
// answer tried again on another.
var haproxyConfig = template.Must(template.New("haproxy").Parse(`global
  maxconn 4096
  stats socket {{.Socket}} mode 600 level admin

defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout http-request 10s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response

frontend public
  bind {{.Bind}}
  option forwardfor
  default_backend hosts

backend hosts
  balance roundrobin
  source {{.Source}}
  option httpchk GET /readyz
  http-check expect status 200
  timeout check 2s
  default-server inter 300ms fastinter 100ms downinter 300ms fall 2 rise 2
{{- range .Servers}}
  server {{.Name}} {{.Addr}} check
{{- end}}
`))

type haproxyServer struct{ Name, Addr string }

func (c *Cluster) startHAProxy(ctx context.Context) error {
	c.hapSock = filepath.Join(c.opts.Dir, "haproxy.sock")
	var servers []haproxyServer
	for _, h := range c.Hosts {
		servers = append(servers, haproxyServer{hostName(h.Index), netip.AddrPortFrom(h.Addr, HostPort).String()})
	}
	// The public port is on loopback, shared with the rest of the machine:
	// another program may take the free port found before HAProxy binds it,
	// so try a few.
	var lastErr error
	for range 5 {
		bind, err := freeport.Loopback()
		if err != nil {
			return err
		}
		cfgPath := filepath.Join(c.opts.Dir, "haproxy.cfg")
		f, err := os.Create(cfgPath)
		if err != nil {
			return err
		}
		err = haproxyConfig.Execute(f, map[string]any{"Socket": c.hapSock, "Bind": bind, "Source": c.ProxySource, "Servers": servers})
		f.Close()
		if err != nil {
			return err
		}
		p, err := startProcess(filepath.Join(c.opts.Dir, "haproxy.log"), nil, "haproxy", "-db", "-f", cfgPath)
		if err != nil {
			return err
		}
		lastErr = waitUntil(ctx, 20*time.Second, func() bool {
			st, err := c.ServerStates()
			if err != nil || len(st) != len(servers) {
				return false
			}
			for _, s := range st {
				if s != "UP" {
					return false
				}
			}
			return true
		}, p)
		if lastErr == nil {
			c.haproxy = p
			c.LB = "http://" + bind
			c.onClose(func() { _ = p.stop(10 * time.Second) })
			return nil
		}
		p.kill()
	}
	return lastErr
}

// ServerStates returns HAProxy's view of each host, by host index: "UP",
// "DOWN", or a transitional state such as "UP 1/2".
func (c *Cluster) ServerStates() (map[int]string, error) {
	conn, err := net.DialTimeout("unix", c.hapSock, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "show stat\n"); err != nil {
		return nil, err
	}
	out := map[int]string{}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		// pxname,svname,...; the status is the 18th column.
		cols := strings.Split(sc.Text(), ",")
		if len(cols) < 18 || cols[0] != "hosts" {
			continue
		}
		for _, h := range c.Hosts {
			if cols[1] == hostName(h.Index) {
				out[h.Index] = cols[17]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("haproxy stats: %w", err)
	}
	return out, nil
}
