package cache

import (
	"bytes"
	"encoding/binary"
	"regexp"
	"testing"
	"time"
)

func TestETag(t *testing.T) {
	a := etagOf([]byte(`{"id":1}`))
	if again := etagOf([]byte(`{"id":1}`)); again != a {
		t.Errorf("ETag of equal bytes differs: %s and %s", a, again)
	}
	if b := etagOf([]byte(`{"id":2}`)); b == a {
		t.Errorf("ETag of different bytes is the same: %s", a)
	}
	if !regexp.MustCompile(`^"[0-9a-f]{16}"$`).MatchString(a) {
		t.Errorf("ETag %s is not a quoted 64-bit hex hash", a)
	}
}

func TestEncodeDecode(t *testing.T) {
	stored := time.Unix(0, 1_700_000_000_123_456_789)
	in := record{
		freshUntil: 10,
		staleUntil: 20,
		entry:      Entry{Body: []byte(`[1,2,3]`), ETag: etagOf([]byte(`[1,2,3]`)), Stored: stored},
	}
	out, err := decode(encode(in))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if out.freshUntil != 10 || out.staleUntil != 20 || !out.entry.Stored.Equal(stored) ||
		out.entry.ETag != in.entry.ETag || !bytes.Equal(out.entry.Body, in.entry.Body) {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

func TestDecodeRejectsTruncated(t *testing.T) {
	claimsLongETag := make([]byte, headerLen+5)
	binary.LittleEndian.PutUint16(claimsLongETag[offETagLen:], 10)
	tests := map[string][]byte{
		"empty":              nil,
		"short header":       make([]byte, headerLen-1),
		"etag past the end":  claimsLongETag,
		"max etag, no bytes": append(make([]byte, offETagLen), 0xff, 0xff),
	}
	for name, b := range tests {
		if _, err := decode(b); err == nil {
			t.Errorf("%s: decode accepted %d bytes", name, len(b))
		}
	}
}
