package logging

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Request is one answered request, as the access log records it.
type Request struct {
	Time     time.Time
	ID       string
	Method   string
	Path     string
	Status   int
	Bytes    int64
	Duration time.Duration
	IP       string
	Cache    string
}

// AccessLog writes one line per request. In the json and text formats the
// lines are encoded by hand (no reflection, no allocation) into a buffer
// that is written out when it fills, every flush interval and on Close, in
// writes of whole lines no longer than a pipe's atomic write, so lines of
// several processes sharing one stderr never interleave. A process killed
// with SIGKILL loses the lines of its last interval at most. On a terminal
// (format tint) each line goes through slog at once, for a human watching.
//
// Lines a write fails to take (a full disk) are dropped, not retried: the
// requests are served on. Dropped counts them, and a warning with the
// error goes to the warn logger at most once a minute.
type AccessLog struct {
	format string
	slog   *slog.Logger // tint only
	static []byte       // the fixed fields, encoded once

	mu    sync.Mutex
	buf   []byte
	stamp stamp // under mu

	wmu  sync.Mutex // one flush at a time, in order
	w    io.Writer
	out  []byte // the buffer being written
	werr error

	dropped  atomic.Uint64
	warn     *slog.Logger
	lastWarn time.Time // under wmu
	now      func() time.Time

	stop chan struct{}
	done chan struct{}
}

// flushSize is the largest write: PIPE_BUF, which Linux writes to a pipe
// atomically. A buffer this full is written out without waiting.
const flushSize = 4096

// warnEvery is how often at most a failing access log says so.
const warnEvery = time.Minute

// NewAccessLog returns an access log writing to w in format ("auto",
// "text", "json" or "tint", as for New), flushing every interval. fields
// (such as slot and pid) are written on every line. Failed writes are
// reported to warn (none when nil). Close flushes it and stops its flusher.
func NewAccessLog(w io.Writer, format string, interval time.Duration, warn *slog.Logger, fields ...slog.Attr) (*AccessLog, error) {
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "tint"
		}
	}
	if interval <= 0 {
		return nil, fmt.Errorf("access log flush interval %s: must be positive", interval)
	}
	l := &AccessLog{format: format, w: w, warn: warn, now: time.Now, stop: make(chan struct{}), done: make(chan struct{})}
	switch format {
	case "tint":
		lg, err := New(w, format, "info")
		if err != nil {
			return nil, err
		}
		args := make([]any, len(fields))
		for i, f := range fields {
			args[i] = f
		}
		l.slog = lg.With(args...)
		close(l.done)
		return l, nil
	case "json", "text":
	default:
		return nil, fmt.Errorf("log format %q: want auto, text or json", format)
	}
	for _, f := range fields {
		l.static = l.appendField(l.static, f.Key, f.Value.String(), f.Value.Kind() != slog.KindString)
	}
	l.buf = make([]byte, 0, 2*flushSize)
	go l.flusher(interval)
	return l, nil
}

// SlogAccessLog returns an access log that writes each line through l at
// once, unbuffered: for tests and embedders that want every line in one
// logger.
func SlogAccessLog(l *slog.Logger) *AccessLog {
	done := make(chan struct{})
	close(done)
	return &AccessLog{format: "slog", slog: l, stop: make(chan struct{}), done: done}
}

// Log records r.
func (l *AccessLog) Log(r *Request) {
	if l.slog != nil {
		l.logSlog(r)
		return
	}
	l.mu.Lock()
	l.buf = l.appendLine(l.buf, r)
	full := len(l.buf) >= flushSize
	l.mu.Unlock()
	if full {
		_ = l.Flush()
	}
}

func (l *AccessLog) logSlog(r *Request) {
	l.slog.LogAttrs(context.Background(), level(r.Status), "request",
		slog.String("request_id", r.ID),
		slog.String("method", r.Method),
		slog.String("path", r.Path),
		slog.Int("status", r.Status),
		slog.Int64("bytes", r.Bytes),
		slog.Float64("ms", float64(r.Duration.Microseconds())/1000),
		slog.String("ip", r.IP),
		slog.String("cache", r.Cache),
	)
}

// shortLevel is tint's three-letter level.
func shortLevel(l slog.Level) string {
	if l >= slog.LevelWarn {
		return "WRN"
	}
	return "INF"
}

func level(status int) slog.Level {
	if status >= 500 {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// Flush writes the buffered lines out now. It returns the first write
// error the log met, once; lines of a failed write are dropped.
func (l *AccessLog) Flush() error {
	if l.slog != nil {
		return nil
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	l.buf, l.out = l.out[:0], l.buf
	l.mu.Unlock()
	for out := l.out; len(out) > 0; {
		n := len(out)
		if n > flushSize {
			// Cut after the last whole line that fits; a single longer line
			// goes out alone.
			if i := bytes.LastIndexByte(out[:flushSize], '\n'); i >= 0 {
				n = i + 1
			} else if i := bytes.IndexByte(out, '\n'); i >= 0 {
				n = i + 1
			}
		}
		if wrote, err := l.w.Write(out[:n]); err != nil {
			l.lost(out[min(max(wrote, 0), n):n], err)
		}
		out = out[n:]
	}
	err := l.werr
	l.werr = nil
	return err
}

// lost counts the lines of rest, which a write failed with err to take,
// keeps err for Flush to return and warns, unless it did in the last
// minute. The caller holds wmu.
func (l *AccessLog) lost(rest []byte, err error) {
	n := l.dropped.Add(uint64(bytes.Count(rest, []byte{'\n'})))
	if l.werr == nil {
		l.werr = fmt.Errorf("access log: write: %w", err)
	}
	if now := l.now(); l.warn != nil && (l.lastWarn.IsZero() || now.Sub(l.lastWarn) >= warnEvery) {
		l.lastWarn = now
		l.warn.Warn("access log: lines dropped, requests are served on", "err", err, "dropped_total", n)
	}
}

// Dropped is how many lines failed writes have dropped so far.
func (l *AccessLog) Dropped() uint64 { return l.dropped.Load() }

func (l *AccessLog) flusher(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = l.Flush()
		case <-l.stop:
			return
		}
	}
}

// Close stops the flusher and writes out what is buffered. Log must not be
// called after Close.
func (l *AccessLog) Close() error {
	if l.slog != nil {
		return nil
	}
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	return l.Flush()
}

// appendLine encodes r as one line in the log's format.
func (l *AccessLog) appendLine(b []byte, r *Request) []byte {
	lv := level(r.Status)
	if l.format == "json" {
		b = append(b, `{"time":"`...)
		b = l.stamp.append(b, r.Time, true)
		b = append(b, `","level":"`...)
		b = append(b, lv.String()...)
		b = append(b, `","msg":"request"`...)
	} else {
		b = l.stamp.append(b, r.Time, false)
		b = append(b, ' ')
		b = append(b, shortLevel(lv)...)
		b = append(b, " request"...)
	}
	b = append(b, l.static...)
	b = l.appendField(b, "request_id", r.ID, false)
	b = l.appendField(b, "method", r.Method, false)
	b = l.appendField(b, "path", r.Path, false)
	b = l.appendKey(b, "status")
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = l.appendKey(b, "bytes")
	b = strconv.AppendInt(b, r.Bytes, 10)
	b = l.appendKey(b, "ms")
	b = appendMillis(b, r.Duration)
	b = l.appendField(b, "ip", r.IP, false)
	b = l.appendField(b, "cache", r.Cache, false)
	if l.format == "json" {
		b = append(b, '}')
	}
	return append(b, '\n')
}

// stamp is the second of the last line's time, formatted once: the lines
// of one second differ only in their milliseconds, and formatting a whole
// time was most of a line's cost. One log has one format, so the format is
// not part of what it remembers.
type stamp struct {
	sec  int64
	loc  *time.Location
	head []byte // up to the seconds: "2006-01-02T15:04:05", or "15:04:05" in text
	zone []byte // after the milliseconds: "Z07:00" in json, nothing in text
}

// append appends t as "2006-01-02T15:04:05.000Z07:00" (json) or
// "15:04:05.000" (text), the milliseconds truncated as time.Format does.
func (s *stamp) append(b []byte, t time.Time, json bool) []byte {
	if sec := t.Unix(); sec != s.sec || t.Location() != s.loc || s.head == nil {
		s.sec, s.loc = sec, t.Location()
		s.zone = s.zone[:0]
		if json {
			s.head = t.AppendFormat(s.head[:0], "2006-01-02T15:04:05")
			s.zone = t.AppendFormat(s.zone, "Z07:00")
		} else {
			s.head = t.AppendFormat(s.head[:0], time.TimeOnly)
		}
	}
	ms := t.Nanosecond() / int(time.Millisecond)
	b = append(b, s.head...)
	b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, s.zone...)
}

// appendMillis appends d in milliseconds to the microsecond, as
// strconv.AppendFloat(b, µs/1000, 'f', -1, 64) would: the decimal digits
// of the microseconds with the point moved and trailing zeros dropped,
// which is the shortest form for any duration below 10^15 µs (31 years).
func appendMillis(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 || us >= 1e15 {
		return strconv.AppendFloat(b, float64(us)/1000, 'f', -1, 64)
	}
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return b
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}

func (l *AccessLog) appendKey(b []byte, key string) []byte {
	if l.format == "json" {
		b = append(b, ',', '"')
		b = append(b, key...)
		return append(b, '"', ':')
	}
	b = append(b, ' ')
	b = append(b, key...)
	return append(b, '=')
}

// appendField appends key and value; raw values (numbers) are written as
// they are, strings escaped for the format.
func (l *AccessLog) appendField(b []byte, key, value string, raw bool) []byte {
	b = l.appendKey(b, key)
	switch {
	case raw:
		return append(b, value...)
	case l.format == "json":
		return appendJSONString(b, value)
	}
	return appendTextValue(b, value)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendTextValue appends s as tint's text handler would: bare when it is
// plain, else quoted with every control character and invalid byte escaped,
// so a client's text can neither break a line nor fake a field.
func appendTextValue(b []byte, s string) []byte {
	if s == "" {
		return append(b, `""`...)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return strconv.AppendQuote(b, s)
		}
	}
	return append(b, s...)
}
