package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Operator talks HTTP to an amexd's operator socket.
type Operator struct {
	client *http.Client
}

// NewOperator returns a client for the operator socket at socket.
func NewOperator(socket string) *Operator {
	return &Operator{client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}}
}

// Do sends a request without a body and returns the status and body.
func (o *Operator) Do(ctx context.Context, method, p string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://amexd"+p, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := o.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("operator socket: %s %s: %w", method, p, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("operator socket: %s %s: %w", method, p, err)
	}
	return res.StatusCode, b, nil
}

func (o *Operator) workers(ctx context.Context) ([]workerInfo, error) {
	var body struct {
		Workers []workerInfo `json:"workers"`
	}
	if err := o.JSON(ctx, "/workers", &body); err != nil {
		return nil, err
	}
	return body.Workers, nil
}

func (o *Operator) reload(ctx context.Context) error {
	code, b, err := o.Do(ctx, http.MethodPost, "/reload")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("reload: %d %s", code, strings.TrimSpace(string(b)))
	}
	return nil
}

// JSON decodes the answer to GET p into v; a status other than 200 is an
// error.
func (o *Operator) JSON(ctx context.Context, p string, v any) error {
	code, b, err := o.Do(ctx, http.MethodGet, p)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("operator socket: GET %s: %d %s", p, code, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, v)
}

// WaitHealthy waits until GET /health answers 200, every slot serving, and
// returns how long that took.
func (o *Operator) WaitHealthy(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	began := time.Now()
	var last string
	ok := waitFor(ctx, timeout, func() bool {
		code, b, err := o.Do(ctx, http.MethodGet, "/health")
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("%d %s", code, strings.TrimSpace(string(b)))
		return code == http.StatusOK
	})
	if !ok {
		return time.Since(began), fmt.Errorf("not healthy after %s (last: %s)", timeout, last)
	}
	return time.Since(began), nil
}

// waitFor polls cond every 10 ms until it holds (true) or timeout passes
// or ctx ends (false).
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}
