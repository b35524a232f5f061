package control

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// streamConn is a net.Conn reading from a fixed stream and writing to a
// buffer: enough for a Codec, with no goroutines or descriptors per input.
type streamConn struct {
	net.Conn // nil: the methods a Codec does not use panic if called
	in       io.Reader
	out      bytes.Buffer
}

func (c *streamConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *streamConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) Close() error                     { return nil }

// FuzzCodec feeds arbitrary bytes to Receive. It must not panic; it returns
// at most one message per complete line and io.EOF at the end, unwrapped;
// and every message it returns survives Send and Receive unchanged.
func FuzzCodec(f *testing.F) {
	for _, s := range []string{
		`{"type":"ready"}` + "\n",
		`{"type":"config","slot":1,"generation":2,"config":{"Listen":":3000"}}` + "\n" + `{"type":"drain"}` + "\n",
		`{"type":"heartbeat","stats":{"requests":3,"cache":{"hits":1},"breakers":[{"name":"a","state":"open"}],"inflight":-1}}` + "\n",
		`{"type":"cluster","id":5,"cluster":{"workers":[{"slot":0,"pid":1,"state":"ready","last_heartbeat":"2024-01-01T00:00:00Z","breakers":null}],"summary":[]}}` + "\n",
		`{"type":"invalidate","id":9,"keys":["users","user:1"]}` + "\n",
		`{"type":"breaker","breaker":{"name":"x","to":"open","forced":true}}` + "\n",
		"not json\n", `{"type":` + "\n", "{}\n{}", `{"id":-1}` + "\n", `{"config":"x"}` + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewCodec(&streamConn{in: bytes.NewReader(data)})
		lines := bytes.Count(data, []byte("\n"))
		var got []Message
		for {
			m, err := c.Receive()
			if err == io.EOF {
				break
			}
			if err != nil {
				if errors.Is(err, io.EOF) || !strings.HasPrefix(err.Error(), "control: decode") {
					t.Fatalf("Receive error %q is neither io.EOF nor a decode error", err)
				}
				continue
			}
			got = append(got, m)
			if len(got) > lines {
				t.Fatalf("%d messages from %d lines", len(got), lines)
			}
		}
		for _, m := range got {
			roundTrip(t, m)
		}
	})
}

// roundTrip sends m and receives it again; the second encoding must equal
// the first (the first may normalise, e.g. compact raw JSON).
func roundTrip(t *testing.T, m Message) {
	t.Helper()
	first := &streamConn{}
	if err := NewCodec(first).Send(m); err != nil {
		// A message decoded from JSON always encodes again.
		t.Fatalf("Send of a received message %+v: %v", m, err)
	}
	again, err := NewCodec(&streamConn{in: bytes.NewReader(first.out.Bytes())}).Receive()
	if err != nil {
		t.Fatalf("Receive of %q: %v", first.out.Bytes(), err)
	}
	second := &streamConn{}
	if err := NewCodec(second).Send(again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.out.Bytes(), second.out.Bytes()) {
		t.Fatalf("round trip changed the message:\n%s%s", first.out.Bytes(), second.out.Bytes())
	}
}
