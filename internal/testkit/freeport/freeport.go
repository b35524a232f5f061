// Package freeport finds a TCP port that was free a moment ago, for the
// servers that tests and benchmarks start and that take a port number
// rather than a listener (redis-server, HAProxy, nginx, amexd itself).
// Another process may take the port before the server binds it: a caller
// retries, or checks that what answers there is its own process.
package freeport

import (
	"fmt"
	"net"
	"strconv"
)

// On returns a port that was free on host, an IP address, a moment ago.
func On(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Loopback returns 127.0.0.1:port with a port that was free a moment ago.
func Loopback() (string, error) {
	port, err := On("127.0.0.1")
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}
