package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

// pprofOptions are the pprof command's flags.
type pprofOptions struct {
	seconds int
	out     string
}

func pprofFlags(fs *flag.FlagSet, inv *invocation) {
	fs.IntVar(&inv.pprof.seconds, "seconds", 30, "length of a cpu profile")
	fs.StringVar(&inv.pprof.out, "o", "", "output `file` (default amexd-SLOT-KIND.pprof)")
}

// runPprof fetches a worker's profile through the operator socket and
// writes it to a file for go tool pprof.
func runPprof(ctx context.Context, inv *invocation, args []string) int {
	slot, kind := 0, "cpu"
	if len(args) > 2 {
		return inv.usageError("pprof: want at most SLOT and KIND, got %q", args)
	}
	for _, a := range args {
		if n, err := strconv.Atoi(a); err == nil {
			if n < 0 {
				return inv.usageError("pprof: slot %d: must not be negative", n)
			}
			slot = n
			continue
		}
		kind = a
	}
	switch kind {
	case "cpu", "heap", "goroutine", "allocs", "block", "mutex", "threadcreate":
	default:
		return inv.usageError("pprof: profile %q: want cpu, heap or goroutine (or allocs, block, mutex, threadcreate)", kind)
	}
	o := inv.pprof
	if kind == "cpu" && o.seconds < 1 {
		return inv.usageError("pprof: --seconds %d: must be at least 1", o.seconds)
	}
	if o.out == "" {
		o.out = fmt.Sprintf("amexd-%d-%s.pprof", slot, kind)
	}
	if kind == "cpu" {
		fmt.Fprintf(inv.stderr, "profiling slot %d for %d s …\n", slot, o.seconds)
		// The command's wait is extended by the profile's length; an
		// interrupt still ends it.
		parent := ctx
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(parent), inv.wait+time.Duration(o.seconds)*time.Second)
		defer cancel()
		stop := context.AfterFunc(parent, func() {
			if errors.Is(parent.Err(), context.Canceled) {
				cancel()
			}
		})
		defer stop()
	}
	data, err := inv.client.Profile(ctx, slot, kind, o.seconds)
	if err != nil {
		return inv.fail(err)
	}
	if err := os.WriteFile(o.out, data, 0o644); err != nil {
		fmt.Fprintln(inv.stderr, "amexctl: write profile:", err)
		return exitFailed
	}
	return writeOut(inv, fmt.Sprintf("wrote %s (%d bytes); go tool pprof %s\n", o.out, len(data), o.out))
}
