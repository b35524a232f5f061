// Command amexd is the amexd daemon. Run without a subcommand it is the
// supervisor: it starts the worker processes and serves the operator socket.
// "amexd worker" is the worker mode the supervisor re-executes itself in.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/amexd/amexd/internal/auth"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/logging"
	"github.com/amexd/amexd/supervisor"
	"github.com/amexd/amexd/worker"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(worker.Main(os.Args[2:]))
	}
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "-version" || os.Args[1] == "--version") {
		fmt.Println("amexd", supervisor.Version)
		return
	}
	os.Exit(run())
}

func run() int {
	cfg, src, err := config.Load(os.Args[1:], os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "amexd:", err)
		return 2
	}
	if cfg.Auth.Enabled {
		// Load the key now: a bad one should stop the daemon at start, not
		// make every worker fail one after another.
		if _, err := auth.NewVerifier(cfg.Auth); err != nil {
			fmt.Fprintln(os.Stderr, "amexd:", err)
			return 2
		}
	}
	log, err := logging.New(os.Stderr, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "amexd:", err)
		return 2
	}
	redis.SetLogger(logging.Printf{L: log.With("component", "go-redis")})
	if err := supervisor.Run(context.Background(), src, cfg, log); err != nil {
		log.Error("amexd stopped", "err", err)
		return 1
	}
	return 0
}
