// Command amexctl is amexd's operator CLI: it asks a running supervisor,
// over its operator socket, for status, workers, breakers and health, and
// tells it to reload, reset breakers or purge caches. Output is aligned
// tables, or the daemon's own JSON with --json; `amexctl top` is a live view
// of the workers.
//
// Exit status: 0 on success; 1 when amexd is unhealthy, refused the command,
// is not running or refused the caller; 2 for a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/amexd/amexd/internal/auth"
	"github.com/amexd/amexd/internal/operator"
	"github.com/amexd/amexd/internal/settings"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	defaultWait = 5 * time.Second
	// reloadWait is longer because a reload starts a new worker per slot,
	// one after another, and each may take up to supervisor.ready_timeout.
	reloadWait = 2 * time.Minute
)

// systemdSocket is where the unit's RuntimeDirectory=amexd puts the socket;
// an operator's shell has no RUNTIME_DIRECTORY to find it by.
const systemdSocket = "/run/amexd/amexd.sock"

const usage = `Usage: amexctl [flags] COMMAND [ARGS]

Commands:
  status               supervisor and workers at a glance
  workers              workers with accept-queue depth and backlog
  breakers             circuit breakers per worker, and a summary
  breakers reset [N]   close breaker N (all breakers without N) in every worker
  health               exit 0 when every slot serves, 1 otherwise
  reload               rolling reload with the configuration re-read
  upgrade              run the amexd binary now installed, every process,
                       without closing the sockets (SIGUSR2 does the same)
  scale N              run N workers from now on (until the next reload)
  cache purge          empty every worker's cache, and first the shared
                       tier in Redis with cache.shared: redis
  metrics              Prometheus metrics of the supervisor and the workers
  top [--interval D] [-n N]
                       live view of the workers (requests/s, p99, cache hit
                       ratio, 429s/s, breakers, memory); q or Ctrl-C quits
  pprof [SLOT] [cpu|heap|goroutine] [--seconds N] [-o FILE]
                       a worker's pprof profile (slot 0, cpu over 30 s by default),
                       written to FILE (amexd-SLOT-KIND.pprof); read it with go tool pprof
  token --secret-file F [--role R] [--ttl D] [--sub NAME]
                       mint an HS256 JWT for the write endpoints

Flags (before or after the command):
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the flags every command accepts.
type options struct {
	json    bool
	socket  string
	config  string
	timeout time.Duration
}

// register adds the flags to fs with their current values as defaults, so
// that a command's flag set keeps what the global one parsed.
func (o *options) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.json, "json", o.json, "print the daemon's JSON instead of tables")
	fs.StringVar(&o.socket, "socket", o.socket, "operator socket `path` (default: amexd's, see control.socket)")
	fs.StringVar(&o.config, "config", o.config, "amexd configuration `file` to read control.socket and auth from (also AMEXD_CONFIG)")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "how long to wait for amexd (default 5s, 2m for reload, upgrade and scale)")
}

// run is amexctl with its environment passed in, returning the exit status.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	inv := &invocation{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	o := &inv.opts
	fs := flag.NewFlagSet("amexctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		fs.Usage()
		return exitOK
	}
	cmd, ok := commandNamed(name)
	if !ok {
		fmt.Fprintf(stderr, "amexctl: unknown command %q (try amexctl -h)\n", name)
		return exitUsage
	}

	cfs := flag.NewFlagSet("amexctl "+name, flag.ContinueOnError)
	cfs.SetOutput(stderr)
	o.register(cfs)
	if cmd.flags != nil {
		cmd.flags(cfs, inv)
	}
	pos, err := parseInterspersed(cfs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}

	// The configuration only matters for the socket's path and for token;
	// an explicit --socket skips it, so a broken AMEXD_* variable in the
	// operator's shell cannot get in the way.
	inv.socket = o.socket
	if cmd.local || inv.socket == "" {
		cfg, err := loadConfig(o.config, env)
		if err != nil {
			fmt.Fprintln(stderr, "amexctl:", err)
			return exitUsage
		}
		inv.cfg = cfg
	}
	if cmd.local {
		return cmd.run(ctx, inv, pos)
	}
	if inv.socket == "" {
		inv.socket = defaultSocket(inv.cfg)
	}
	wait := o.timeout
	if wait <= 0 {
		wait = cmd.wait
	}
	inv.client = operator.NewClient(inv.socket)
	inv.wait = wait
	if cmd.live {
		return cmd.run(ctx, inv, pos)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return cmd.run(ctx, inv, pos)
}

// parseInterspersed parses flags wherever they appear among the arguments
// and returns the positional ones, so "amexctl status --json" works.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// daemonConfig is the part of amexd's configuration amexctl needs: where
// the operator socket is (control.socket) and how tokens are checked
// (auth), under the daemon's keys.
type daemonConfig struct {
	Control struct {
		Socket string `yaml:"socket"`
	} `yaml:"control"`
	Auth auth.Config `yaml:"auth"`
}

// loadConfig reads amexd's configuration the way amexd does (file from
// -config or AMEXD_CONFIG, then AMEXD_* variables), so that control.socket
// and auth resolve to the same values the daemon sees. The other sections
// are the daemon's to check.
func loadConfig(file string, env []string) (daemonConfig, error) {
	cfg := daemonConfig{Auth: auth.DefaultConfig()}
	if _, err := settings.Read(&cfg, file, env, false); err != nil {
		return daemonConfig{}, fmt.Errorf("read amexd configuration: %w", err)
	}
	if err := cfg.Auth.Validate(); err != nil {
		return daemonConfig{}, fmt.Errorf("read amexd configuration: %w", err)
	}
	return cfg, nil
}

// defaultSocket is the daemon's default socket path; when no path is
// configured and nothing exists there, the systemd unit's socket is used if
// it is there, since a shell lacks the service's RUNTIME_DIRECTORY.
func defaultSocket(cfg daemonConfig) string {
	return chooseSocket(cfg, func(path string) error { _, err := os.Stat(path); return err })
}

// chooseSocket is defaultSocket with stat as its seam. A path that cannot
// be looked at (EACCES on /run/amexd for a user outside control.group) is
// there as far as amexctl knows: connecting to it then says why.
func chooseSocket(cfg daemonConfig, stat func(string) error) string {
	present := func(path string) bool { return !errors.Is(stat(path), fs.ErrNotExist) }
	path := operator.SocketPath(cfg.Control.Socket)
	if cfg.Control.Socket != "" || present(path) {
		return path
	}
	if present(systemdSocket) {
		return systemdSocket
	}
	return path
}

// invocation is what a command runs with.
type invocation struct {
	opts   options
	cfg    daemonConfig
	socket string
	wait   time.Duration
	client *operator.Client
	token  tokenOptions
	top    topOptions
	stdin  io.Reader
	pprof  pprofOptions
	stdout io.Writer
	stderr io.Writer
}

// fail prints err's one-line explanation and returns exitFailed.
func (inv *invocation) fail(err error) int {
	fmt.Fprintln(inv.stderr, explain(err, inv.socket, inv.wait))
	return exitFailed
}

func (inv *invocation) usageError(format string, args ...any) int {
	fmt.Fprintf(inv.stderr, "amexctl: "+format+"\n", args...)
	return exitUsage
}
