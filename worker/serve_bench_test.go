package worker

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/logging"
)

// BenchmarkCachedHitServer is a cached GET /users/1 through net/http's
// server on in-memory keep-alive connections, so that what an answer costs
// beyond the handler (the header map cloned, sorted and written, the
// request parsed) is counted, without the network's system calls. With
// access=on the JSON access line is formatted into a buffer written to
// io.Discard, as a worker's access log file is.
func BenchmarkCachedHitServer(b *testing.B) {
	for _, access := range []bool{false, true} {
		name := "access=off"
		if access {
			name = "access=on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testConfig()
			cfg.RateLimit.Rate = "1000000000-H"
			e := newEnv(b, cfg)
			if access {
				l, err := logging.NewAccessLog(io.Discard, "json", time.Second, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { l.Close() })
				e.app.access = l
			}
			if a := e.do(b, "GET", "/users/1", ""); a.status != http.StatusOK {
				b.Fatalf("warm: status %d", a.status)
			}
			srv := &http.Server{Handler: e.app.Handler(), ReadHeaderTimeout: time.Minute}
			b.Cleanup(func() { srv.Close() })
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := newLoopConn([]byte("GET /users/1 HTTP/1.1\r\nHost: bench\r\n\r\n"))
				go srv.Serve(&oneConnListener{conn: c, done: make(chan struct{})}) //nolint:errcheck // ends with srv.Close
				for pb.Next() {
					c.next <- struct{}{}
					if !<-c.answers {
						b.Error("answer is not a 200")
						return
					}
				}
				close(c.next)
			})
		})
	}
}

// loopConn is a client connection that sends req each time next receives
// and reports on answers whether each answer (one write: net/http flushes
// at the end of each) is a 200. A past read deadline interrupts a blocked
// Read, as net/http's end of a request expects of its background read.
type loopConn struct {
	net.Conn
	req       []byte
	next      chan struct{}
	answers   chan bool
	interrupt chan struct{}
	pending   []byte
}

func newLoopConn(req []byte) *loopConn {
	return &loopConn{req: req, next: make(chan struct{}), answers: make(chan bool), interrupt: make(chan struct{}, 1)}
}

func (c *loopConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		select {
		case _, ok := <-c.next:
			if !ok {
				return 0, io.EOF
			}
		case <-c.interrupt:
			return 0, os.ErrDeadlineExceeded
		}
		c.pending = c.req
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *loopConn) Write(p []byte) (int, error) {
	c.answers <- bytes.HasPrefix(p, []byte("HTTP/1.1 200 "))
	return len(p), nil
}

func (c *loopConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() || t.After(time.Now()) {
		select {
		case <-c.interrupt:
		default:
		}
		return nil
	}
	select {
	case c.interrupt <- struct{}{}:
	default:
	}
	return nil
}

func (c *loopConn) Close() error        { return nil }
func (c *loopConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3000} }
func (c *loopConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *loopConn) SetDeadline(time.Time) error      { return nil }
func (c *loopConn) SetWriteDeadline(time.Time) error { return nil }

// oneConnListener accepts conn once, then blocks until closed.
type oneConnListener struct {
	conn     net.Conn
	accepted bool
	done     chan struct{}
	once     sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.accepted {
		l.accepted = true
		return l.conn, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }
