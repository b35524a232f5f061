// Package logging builds amexd's slog loggers: tint's colourful handler when
// the output is a terminal, JSON otherwise, at the configured level.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

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
		return slog.New(tint.NewHandler(w, &tint.Options{
			Level:      lvl,
			TimeFormat: time.TimeOnly + ".000",
			NoColor:    format == "text",
		})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, text or json", format)
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
