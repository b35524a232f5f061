package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultTimeout bounds a request whose context has no deadline.
const DefaultTimeout = 30 * time.Second

// ErrNotRunning, ErrPermission and ErrTimeout are the failures to reach the
// daemon that a caller may want to explain in words of its own.
var (
	ErrNotRunning = errors.New("amexd is not running")
	ErrPermission = errors.New("permission denied")
	ErrTimeout    = errors.New("no answer")
)

// Client sends operator requests to the socket at one path. It opens a
// connection per request, so that it never holds one to a process that
// has since handed the socket to its successor.
type Client struct {
	socket string
	http   *http.Client
	// connected records that a dial succeeded, so that a connection closed
	// before any answer is told apart from a socket nobody listens on.
	connected atomic.Bool
}

// NewClient returns a client for the operator socket at socket.
func NewClient(socket string) *Client {
	c := &Client{socket: socket}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", socket)
			if err == nil {
				c.connected.Store(true)
			}
			return conn, err
		},
		DisableKeepAlives: true,
	}}
	return c
}

// Socket is the path the client talks to.
func (c *Client) Socket() string { return c.socket }

// Answer is the daemon's reply: its status and raw body.
type Answer struct {
	Code int
	Body []byte
}

// Message is the daemon's {"error": "..."} message, or the body's text or
// the status line for answers that are not JSON.
func (a Answer) Message() string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(a.Body, &e) == nil && e.Error != "" {
		return e.Error
	}
	if s := strings.TrimSpace(string(a.Body)); s != "" && len(s) < 200 {
		return s
	}
	return fmt.Sprintf("%d %s", a.Code, http.StatusText(a.Code))
}

// Do sends one request with in as its JSON body (none when in is nil).
// Any HTTP status but 403 is an Answer, not an error. The error wraps
// ErrNotRunning when nothing listens at the path, ErrPermission when the
// socket refuses the caller (EACCES on connect, a 403, or a connection
// closed before any answer, which is how the daemon turns away peers its
// credential check refuses; a daemon dying mid-request looks the same),
// and ErrTimeout when ctx expires.
func (c *Client) Do(ctx context.Context, method, path string, in any) (Answer, error) {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return Answer{}, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://amexd"+path, rd)
	if err != nil {
		return Answer{}, fmt.Errorf("request %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return Answer{}, c.classify(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Answer{}, c.classify(ctx, err)
	}
	a := Answer{Code: resp.StatusCode, Body: b}
	if a.Code == http.StatusForbidden {
		return Answer{}, fmt.Errorf("%w: %s", ErrPermission, a.Message())
	}
	return a, nil
}

func (c *Client) classify(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %w", ErrNotRunning, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), c.connected.Load():
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return fmt.Errorf("talk to amexd on %s: %w", c.socket, err)
}

// Call sends e with in and decodes the answer. A status that e does not
// answer with is an error wrapping an *Error with the daemon's message.
func Call[In, Out any](ctx context.Context, c *Client, e Endpoint[In, Out], in In) (Out, error) {
	var out Out
	a, err := c.Do(ctx, e.Method, e.Path, Body(in))
	if err != nil {
		return out, err
	}
	if !e.Accepts(a.Code) {
		return out, fmt.Errorf("%s: %w", e, &Error{Code: a.Code, Message: a.Message()})
	}
	if err := json.Unmarshal(a.Body, &out); err != nil {
		return out, fmt.Errorf("%s: decode answer: %w", e, err)
	}
	return out, nil
}

// Body is in as Do's request body: nil for None.
func Body[In any](in In) any {
	if _, none := any(in).(None); none {
		return nil
	}
	return in
}

// Metrics returns the Prometheus text of GET /metrics.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	a, err := c.Do(ctx, http.MethodGet, PathMetrics, nil)
	if err != nil {
		return nil, err
	}
	if a.Code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %w", PathMetrics, &Error{Code: a.Code, Message: a.Message()})
	}
	return a.Body, nil
}

// Profile fetches a pprof profile of the worker in slot: kind "cpu" over
// seconds, or a named profile such as "heap" or "goroutine".
func (c *Client) Profile(ctx context.Context, slot int, kind string, seconds int) ([]byte, error) {
	q := url.Values{"slot": {strconv.Itoa(slot)}, "kind": {kind}, "seconds": {strconv.Itoa(seconds)}}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout+time.Duration(seconds)*time.Second)
		defer cancel()
	}
	a, err := c.Do(ctx, http.MethodGet, PathProfile+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if a.Code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %w", PathProfile, &Error{Code: a.Code, Message: a.Message()})
	}
	return a.Body, nil
}

// WaitHealthy asks for /health every 10 ms until every slot serves, and
// returns how long that took. It gives up after timeout, or when ctx ends,
// with the last answer in the error.
func (c *Client) WaitHealthy(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		h, err := Call(ctx, c, GetHealth, None{})
		switch {
		case err == nil && h.Healthy:
			return time.Since(began), nil
		case err != nil && ctx.Err() == nil:
			last = err.Error()
		case err == nil:
			last = "unhealthy: " + h.Reason
		}
		select {
		case <-ctx.Done():
			return time.Since(began), fmt.Errorf("not healthy after %s (last: %s)", time.Since(began).Round(time.Millisecond), last)
		case <-tick.C:
		}
	}
}
