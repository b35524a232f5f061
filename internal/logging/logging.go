// Package logging builds amexd's slog loggers: tint's colourful handler when
// the output is a terminal, JSON otherwise, at the configured level. Text
// output escapes every string it writes (see Escape), so text a client chose,
// such as a request path, cannot drive the operator's terminal.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lmittmann/tint"
	"golang.org/x/term"
)

// ParseLevel turns "debug", "info", "warn" or "error" into a slog level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: %w", s, err)
	}
	return l, nil
}

// New returns a logger writing to w. format is "auto" (tint when w is a
// terminal, JSON otherwise), "text" (tint without colour) or "json".
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "tint"
		}
	}
	switch format {
	case "tint", "text":
		return slog.New(tint.NewTextHandler(w, &tint.Options{
			Level:       lvl,
			TimeFormat:  time.TimeOnly + ".000",
			NoColor:     format == "text",
			ReplaceAttr: escapeAttr,
		})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: readableDuration})), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, text or json", format)
}

// escapeAttr escapes the message and every attribute's key and value. A
// value of any other kind than string (an error, a Stringer) is escaped as
// the text tint would print for it.
func escapeAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.SourceKey) {
		return a
	}
	a.Key = Escape(a.Key)
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); !isSafe(s) {
			a.Value = slog.StringValue(Escape(s))
		}
	case slog.KindAny:
		if s := fmt.Sprintf("%+v", a.Value.Any()); !isSafe(s) {
			a.Value = slog.StringValue(Escape(s))
		}
	}
	return a
}

// Escape returns s with everything a terminal could act on spelled out:
// control characters (C0, DEL, C1) and other unprintable runes as \uXXXX
// (\n, \r and \t as such), invalid UTF-8 bytes as \xNN, and the backslash
// itself as \x5c, so that no text, once quoted, reads as an escape (tint
// turns a quoted "\x1b" back into ESC). Printable text is returned as is.
func Escape(s string) string {
	if isSafe(s) {
		return s
	}
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = fmt.Appendf(b, `\x%02x`, s[i])
		case r == '\\':
			b = append(b, `\x5c`...)
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r == ' ' || unicode.IsPrint(r):
			b = append(b, s[i:i+n]...)
		case r > 0xffff:
			b = fmt.Appendf(b, `\U%08x`, r)
		default:
			b = fmt.Appendf(b, `\u%04x`, r)
		}
		i += n
	}
	return string(b)
}

// isSafe reports whether s has nothing for Escape to change; it is the fast
// path for the usual plain ASCII.
func isSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= utf8.RuneSelf || c == '\\' || c == 0x7f {
			return isSafeRunes(s)
		}
	}
	return true
}

func isSafeRunes(s string) bool {
	for _, r := range s {
		if r == '\\' || r == utf8.RuneError || (r != ' ' && !unicode.IsPrint(r)) {
			return false
		}
	}
	return true
}

// readableDuration writes a duration as Go's text ("11ms", "1m30s")
// instead of slog's JSON default, a count of nanoseconds.
func readableDuration(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Printf makes a Logger usable where a library wants a printf-style logger
// (go-redis's SetLogger): the lines go to l at debug level, because amexd
// reports the failures they describe itself, once per interval.
type Printf struct{ L *slog.Logger }

// Printf logs one formatted line.
func (p Printf) Printf(ctx context.Context, format string, args ...any) {
	p.L.DebugContext(ctx, fmt.Sprintf(format, args...))
}
