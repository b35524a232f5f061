package worker

import (
	"strconv"
	"unsafe"
)

// headerValue returns b as a header's single value in one allocation (the
// string and the slice holding it), where []string{string(b)} costs two.
// Every answer's generated request ID and remaining quota pass here.
func headerValue(b []byte) []string {
	type value struct {
		v [1]string
		b [24]byte
	}
	if len(b) == 0 || len(b) > len(value{}.b) {
		return []string{string(b)}
	}
	p := new(value)
	n := copy(p.b[:], b)
	p.v[0] = unsafe.String(&p.b[0], n)
	return p.v[:]
}

// maxNumberTable bounds a numberValues table: an hour of reset seconds.
const maxNumberTable = 3600

// numberValues holds the header values of 0..n-1, formatted once, for the
// numbers an answer repeats (a limit's remaining quota and reset seconds).
// Each slice is full to capacity, so an Add on one answer reallocates
// instead of writing into the shared array.
type numberValues [][]string

func newNumberValues(n int64) numberValues {
	t := make(numberValues, min(max(n, 0), maxNumberTable))
	for i := range t {
		t[i] = []string{strconv.Itoa(i)}
	}
	return t
}

// header returns v's header value, from the table when v is in it.
func (t numberValues) header(v int64) []string {
	if v >= 0 && v < int64(len(t)) {
		return t[v]
	}
	var buf [20]byte
	return headerValue(strconv.AppendInt(buf[:0], v, 10))
}
