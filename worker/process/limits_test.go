package process

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveLimited serves e's application through Server with cfg's limits on a
// loopback listener and returns its address.
func serveLimited(t *testing.T, e *env) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(e.cfg, e.app.App.Handler(), slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- serve(srv, ln, e.cfg.TLS) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// TestSlowHeadersAreCutOff is the slowloris defence: a client that sends
// its request head one byte every 200 ms is disconnected once
// http.read_header_timeout (1 s here) passes, long before it finishes.
func TestSlowHeadersAreCutOff(t *testing.T) {
	cfg := testConfig()
	cfg.HTTP.ReadHeaderTimeout = time.Second
	addr := serveLimited(t, newEnv(t, cfg))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		_, _ = io.Copy(io.Discard, conn) // returns when the server closes
		closed <- time.Since(start)
	}()
	head := "GET /users HTTP/1.1\r\nHost: amexd\r\nX-Padding: " + strings.Repeat("p", 200) + "\r\n\r\n"
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case d := <-closed:
			if d < 900*time.Millisecond {
				t.Errorf("closed after %v, before the 1s header timeout", d)
			}
			if i >= len(head) {
				t.Errorf("the whole head (%d bytes) was accepted before the close", len(head))
			}
			t.Logf("closed after %v and %d header bytes", d, i)
			return
		case <-tick.C:
			if time.Since(start) > 5*time.Second {
				t.Fatalf("still connected after %v and %d header bytes", time.Since(start), i)
			}
			// A write may fail once the server has closed; the reader
			// reports the close.
			_, _ = conn.Write([]byte{head[i%len(head)]})
		}
	}
}

func TestOversizedHeaderRefused(t *testing.T) {
	cfg := testConfig()
	addr := serveLimited(t, newEnv(t, cfg))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// net/http allows 4 KiB over MaxHeaderBytes; go well past both.
	head := "GET /healthz HTTP/1.1\r\nHost: amexd\r\nX-Big: " + strings.Repeat("b", 4*cfg.HTTP.MaxHeaderBytes) + "\r\n\r\n"
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a %d-byte header: %d, want 431", len(head), res.StatusCode)
	}
}
