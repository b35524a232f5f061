package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// client speaks HTTP/1.1 to the operator socket at path.
type client struct {
	path string
	http *http.Client
	// connected records that a dial succeeded, so that a connection closed
	// before any answer is told apart from a socket nobody listens on.
	connected atomic.Bool
}

func newClient(path string) *client {
	c := &client{path: path}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", path)
			if err == nil {
				c.connected.Store(true)
			}
			return conn, err
		},
		// One request per run: a pooled connection would only linger.
		DisableKeepAlives: true,
	}
	c.http = &http.Client{Transport: tr}
	return c
}

// response is the daemon's answer: its status code and raw body.
type response struct {
	code int
	body []byte
}

// errNotRunning, errPermission and errTimeout are the failures amexctl
// explains in one line of its own instead of the transport's wording.
var (
	errNotRunning = errors.New("amexd is not running")
	errPermission = errors.New("permission denied")
	errTimeout    = errors.New("no answer")
)

// do sends one request. The error wraps errNotRunning when nothing listens
// at the path, errPermission when the socket refuses the caller (EACCES on
// connect, a 403, or a connection closed before any answer, which is how
// the daemon turns away peers its credential check refuses; a daemon dying
// mid-request looks the same), and errTimeout when ctx expires. Any HTTP status, including 4xx and 5xx, is a response,
// not an error, except 403.
func (c *client) do(ctx context.Context, method, path string, body any) (response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return response{}, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://amexd"+path, rd)
	if err != nil {
		return response{}, fmt.Errorf("request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, c.classify(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, c.classify(ctx, err)
	}
	if resp.StatusCode == http.StatusForbidden {
		return response{}, fmt.Errorf("%w: %s", errPermission, errorMessage(resp.StatusCode, b))
	}
	return response{code: resp.StatusCode, body: b}, nil
}

func (c *client) classify(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", errTimeout, err)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %w", errNotRunning, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), c.connected.Load():
		return fmt.Errorf("%w: %w", errPermission, err)
	}
	return fmt.Errorf("talk to amexd on %s: %w", c.path, err)
}

// explain is the one line amexctl prints for err.
func explain(err error, socket string, timeout time.Duration) string {
	switch {
	case errors.Is(err, errNotRunning):
		return fmt.Sprintf("amexctl: amexd is not running (no socket at %s)", socket)
	case errors.Is(err, errPermission):
		return fmt.Sprintf("amexctl: permission denied on %s: run as root, the amexd user or a member of control.group", socket)
	case errors.Is(err, errTimeout):
		return fmt.Sprintf("amexctl: amexd did not answer on %s within %v", socket, timeout)
	}
	return "amexctl: " + err.Error()
}

// errorMessage extracts the daemon's {"error": "..."} message, falling back
// to the body's text or the status line for answers that are not JSON.
func errorMessage(code int, body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	if s := strings.TrimSpace(string(body)); s != "" && len(s) < 200 {
		return s
	}
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}
