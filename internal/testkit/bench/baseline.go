package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/amexd/amexd/internal/eventapi"
	"github.com/amexd/amexd/internal/simulator"
)

// Baseline is a minimal net/http server on 127.0.0.1 that answers every
// request with the same status, headers and bytes: the ceiling a Go HTTP
// server reaches on this machine, to set amexd's figures against.
type Baseline struct {
	URL  string
	srv  *http.Server
	done chan error
}

// StartBaseline serves body with header on a free 127.0.0.1 port until
// Close.
func StartBaseline(body []byte, header http.Header) (*Baseline, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("baseline: listen: %w", err)
	}
	hdr := header.Clone()
	b := &Baseline{
		URL: "http://" + ln.Addr().String(),
		srv: &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				out := w.Header()
				for k, v := range hdr {
					out[k] = v
				}
				w.Write(body) //nolint:errcheck // a client gone mid-write is not the server's concern
			}),
			ReadHeaderTimeout: 10 * time.Second,
		},
		done: make(chan error, 1),
	}
	go func() { b.done <- b.srv.Serve(ln) }()
	return b, nil
}

// Close stops the server at once, dropping connections still open.
func (b *Baseline) Close() error {
	if err := b.srv.Close(); err != nil {
		return fmt.Errorf("baseline: close: %w", err)
	}
	if err := <-b.done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("baseline: serve: %w", err)
	}
	return nil
}

// Fetch GETs url once with client and returns the body and the headers
// worth replaying, or an error when the answer is not 200.
func Fetch(ctx context.Context, client *http.Client, url string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("fetch %s: status %s", url, resp.Status)
	}
	hdr := resp.Header.Clone()
	// net/http writes these itself, and replaying the connection ones would
	// lie about the baseline's connection.
	for _, h := range []string{"Date", "Content-Length", "Connection", "Keep-Alive", "Transfer-Encoding"} {
		hdr.Del(h)
	}
	return body, hdr, nil
}

// SimulatedEvents returns the events list the Event API simulator serves
// at start, as JSON: the bytes the baseline serves when no target is up to
// provide amexd's own.
func SimulatedEvents() ([]byte, http.Header, error) {
	cfg := simulator.DefaultConfig()
	cfg.ListErrorRate = 0
	sim, err := simulator.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("simulated events: %w", err)
	}
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, eventapi.PathEvents, nil))
	if rec.Code != http.StatusOK {
		return nil, nil, fmt.Errorf("simulated events: status %d", rec.Code)
	}
	hdr := http.Header{"Content-Type": {"application/json"}}
	return rec.Body.Bytes(), hdr, nil
}

// MinimalHeader keeps of hdr only Content-Type and adds body's
// Content-Length: the least a JSON answer carries, for the minimal
// baseline that sets amexd against net/http's own ceiling.
func MinimalHeader(hdr http.Header, body []byte) http.Header {
	return http.Header{
		"Content-Type":   {hdr.Get("Content-Type")},
		"Content-Length": {strconv.Itoa(len(body))},
	}
}
