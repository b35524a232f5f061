// Command amexd is the amexd daemon. Run without a subcommand it is the
// supervisor: it starts the worker processes and serves the operator socket.
// "amexd worker" is the worker mode the supervisor re-executes itself in.
// "amexd check [flags]" loads the configuration as the supervisor would and
// says whether it would start; a binary upgrade runs it first.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/amexd/amexd/internal/auth"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/logging"
	"github.com/amexd/amexd/internal/version"
	"github.com/amexd/amexd/supervisor"
	"github.com/amexd/amexd/worker/process"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(process.Main(os.Args[2:]))
	}
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "-version" || os.Args[1] == "--version") {
		fmt.Println("amexd", version.Long())
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "check" {
		os.Exit(check(os.Args[2:]))
	}
	os.Exit(run())
}

// load reads and checks the configuration; code is the exit status when
// amexd cannot go on (0 after -h).
func load(args []string) (cfg config.Config, src config.Source, log *slog.Logger, code int) {
	cfg, src, err := config.Load(args, os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return cfg, src, nil, 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "amexd:", err)
		return cfg, src, nil, 2
	}
	// A file a worker cannot open would make every worker exit at start,
	// one after another: refuse it once, here.
	if err := cfg.CheckFiles(); err != nil {
		fmt.Fprintln(os.Stderr, "amexd:", err)
		return cfg, src, nil, 2
	}
	if cfg.Auth.Enabled {
		// Load the key now: a bad one should stop the daemon at start, not
		// make every worker fail one after another.
		if _, err := auth.NewVerifier(cfg.Auth); err != nil {
			fmt.Fprintln(os.Stderr, "amexd:", err)
			return cfg, src, nil, 2
		}
	}
	log, err = logging.New(os.Stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "amexd:", err)
		return cfg, src, nil, 2
	}
	return cfg, src, log, 0
}

// check says whether this binary would start with args, in the line a
// binary upgrade looks for.
func check(args []string) int {
	if _, _, log, code := load(args); log == nil {
		return code
	}
	fmt.Println(supervisor.CheckOK())
	return 0
}

func run() int {
	cfg, src, log, code := load(os.Args[1:])
	if log == nil {
		return code
	}
	redis.SetLogger(logging.Printf{L: log.With("component", "go-redis")})
	if err := supervisor.Run(context.Background(), src, cfg, log); err != nil {
		log.Error("amexd stopped", "err", err)
		return 1
	}
	return 0
}
