package bench

import (
	"fmt"
	"net"
	"net/url"
)

// CheckTarget parses raw as an http URL and accepts it only when its host is
// a loopback address (127.0.0.0/8, ::1 or "localhost"), so that a benchmark
// can never load a machine other than the one it runs on. The returned URL
// has no trailing slash in its path.
func CheckTarget(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", raw, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("target %q: scheme must be http, not %q", raw, u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("target %q: no host", raw)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("target %q: host %q is not a loopback address; amexbench only loads 127.0.0.1", raw, host)
		}
	}
	for len(u.Path) > 0 && u.Path[len(u.Path)-1] == '/' {
		u.Path = u.Path[:len(u.Path)-1]
	}
	return u, nil
}
