package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/auth"
	"github.com/amexd/amexd/internal/operator"
)

// fakeDaemon is an operator socket serving the fixtures, answering health
// and reload with the configured status codes.
type fakeDaemon struct {
	sock       string
	healthCode int
	reloadCode int

	mu        sync.Mutex
	resetName string
	resets    int
}

func startFake(t *testing.T, sock string, healthCode, reloadCode int) *fakeDaemon {
	t.Helper()
	f := &fakeDaemon{sock: sock, healthCode: healthCode, reloadCode: reloadCode}
	status, err := os.ReadFile("testdata/status.json")
	if err != nil {
		t.Fatal(err)
	}
	breakers, err := os.ReadFile("testdata/breakers.json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Workers json.RawMessage `json:"workers"`
	}
	if err := json.Unmarshal(status, &st); err != nil {
		t.Fatal(err)
	}
	reply := func(w http.ResponseWriter, code int, body string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { reply(w, 200, string(status)) })
	mux.HandleFunc("GET /workers", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, 200, `{"workers":`+string(st.Workers)+`}`)
	})
	mux.HandleFunc("GET /breakers", func(w http.ResponseWriter, _ *http.Request) { reply(w, 200, string(breakers)) })
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		if f.healthCode == http.StatusOK {
			reply(w, 200, `{"healthy":true,"slots":2,"serving":2}`)
			return
		}
		reply(w, f.healthCode, `{"healthy":false,"slots":2,"serving":1,"reason":"slot 1 degraded"}`)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "amexd_supervisor_live_workers 2\n")
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		if f.reloadCode == http.StatusOK {
			reply(w, 200, `{"generation":3,"duration_ms":812}`)
			return
		}
		reply(w, f.reloadCode, `{"error":"reload refused: workers: -1 must be between 0 (one per CPU) and 1024"}`)
	})
	mux.HandleFunc("POST /breakers/reset", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Name string `json:"name"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				reply(w, 400, `{"error":"bad body"}`)
				return
			}
		}
		f.mu.Lock()
		f.resetName, f.resets = body.Name, f.resets+1
		f.mu.Unlock()
		if body.Name != "" {
			reply(w, 200, `{"reset":["`+body.Name+`"],"workers":2}`)
			return
		}
		reply(w, 200, `{"reset":["addEvent","getUsers"],"workers":2}`)
	})
	mux.HandleFunc("POST /cache/purge", func(w http.ResponseWriter, _ *http.Request) { reply(w, 200, `{"workers":2}`) })
	mux.HandleFunc("POST /scale", func(w http.ResponseWriter, r *http.Request) {
		var body operator.Scale
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			reply(w, 400, `{"error":"bad body"}`)
			return
		}
		reply(w, 200, fmt.Sprintf(`{"workers":%d,"duration_ms":1500}`, body.Workers))
	})

	serveUnix(t, sock, mux)
	return f
}

func serveUnix(t *testing.T, sock string, h http.Handler) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, env []string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, env, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		health     int
		reload     int
		wantCode   int
		wantOut    string // substring of stdout
		wantErr    string // substring of stderr
		wantResets int
		wantReset  string
	}{
		{name: "status", args: []string{"status"}, wantOut: "down (degraded)"},
		{name: "status json after", args: []string{"status", "--json"}, wantOut: `"pid": 4242`},
		{name: "status json before", args: []string{"-json", "status"}, wantOut: `"uptime_seconds": 3723.4`},
		{name: "status extra argument", args: []string{"status", "now"}, wantCode: exitUsage, wantErr: "takes no arguments"},
		{name: "workers", args: []string{"workers"}, wantOut: "BACKLOG"},
		{name: "breakers", args: []string{"breakers"}, wantOut: "HALF-OPEN"},
		{name: "breakers reset one", args: []string{"breakers", "reset", "getUsers"}, wantOut: "reset getUsers in 2 workers",
			wantResets: 1, wantReset: "getUsers"},
		{name: "breakers reset all", args: []string{"breakers", "reset"}, wantOut: "reset addEvent, getUsers in 2 workers",
			wantResets: 1},
		{name: "breakers reset two names", args: []string{"breakers", "reset", "a", "b"}, wantCode: exitUsage, wantErr: "at most one"},
		{name: "health ok", args: []string{"health"}, wantOut: "healthy: 2 of 2 slots serving"},
		{name: "health unhealthy", args: []string{"health"}, health: 503, wantCode: exitFailed,
			wantOut: "unhealthy: 1 of 2 slots serving (slot 1 degraded)"},
		{name: "health unhealthy json", args: []string{"health", "--json"}, health: 503, wantCode: exitFailed, wantOut: `"healthy": false`},
		{name: "reload", args: []string{"reload"}, wantOut: "reloaded: generation 3 in 812ms"},
		{name: "reload refused", args: []string{"reload"}, reload: 400, wantCode: exitFailed,
			wantErr: "amexctl: POST /reload refused: reload refused: workers: -1"},
		{name: "reload conflict", args: []string{"reload"}, reload: 409, wantCode: exitFailed, wantErr: "refused"},
		{name: "cache purge", args: []string{"cache", "purge"}, wantOut: "purged the cache of 2 workers"},
		{name: "scale", args: []string{"scale", "4"}, wantOut: "scaled to 4 workers in 1.5s"},
		{name: "scale to nothing", args: []string{"scale", "0"}, wantCode: exitUsage, wantErr: "usage: amexctl scale N"},
		{name: "scale without N", args: []string{"scale"}, wantCode: exitUsage, wantErr: "usage: amexctl scale N"},
		{name: "cache alone", args: []string{"cache"}, wantCode: exitUsage, wantErr: "usage: amexctl cache purge"},
		{name: "metrics", args: []string{"metrics"}, wantOut: "amexd_supervisor_live_workers 2\n"},
		{name: "no command", args: nil, wantCode: exitUsage, wantErr: "Usage: amexctl"},
		{name: "unknown command", args: []string{"restart"}, wantCode: exitUsage, wantErr: `unknown command "restart"`},
		{name: "unknown flag", args: []string{"status", "--verbose"}, wantCode: exitUsage, wantErr: "flag provided but not defined"},
		{name: "help", args: []string{"-h"}, wantCode: exitOK, wantErr: "breakers reset [N]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			health, reload := tt.health, tt.reload
			if health == 0 {
				health = 200
			}
			if reload == 0 {
				reload = 200
			}
			sock := filepath.Join(t.TempDir(), "op.sock")
			f := startFake(t, sock, health, reload)
			r := runCLI(t, nil, append([]string{"--socket", sock}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr: %s", r.code, tt.wantCode, r.stderr)
			}
			if !strings.Contains(r.stdout, tt.wantOut) {
				t.Errorf("stdout %q lacks %q", r.stdout, tt.wantOut)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tt.wantErr)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.resets != tt.wantResets || f.resetName != tt.wantReset {
				t.Errorf("daemon saw %d resets of %q, want %d of %q", f.resets, f.resetName, tt.wantResets, tt.wantReset)
			}
		})
	}
}

func TestJSONIsValid(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "op.sock")
	startFake(t, sock, 200, 200)
	for _, cmd := range [][]string{{"status"}, {"workers"}, {"breakers"}, {"health"}, {"reload"}, {"cache", "purge"}, {"breakers", "reset"}} {
		r := runCLI(t, nil, append([]string{"--json", "--socket", sock}, cmd...)...)
		if r.code != exitOK || !json.Valid([]byte(r.stdout)) {
			t.Errorf("%v: exit %d, stdout not JSON: %q", cmd, r.code, r.stdout)
		}
	}
}

func TestUnreachable(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nothing listens: ECONNREFUSED

	closing := filepath.Join(dir, "closing.sock")
	cln, err := net.Listen("unix", closing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cln.Close() })
	go func() {
		for {
			c, err := cln.Accept()
			if err != nil {
				return
			}
			c.Close() // as the daemon does when SO_PEERCRED fails
		}
	}()

	forbidden := filepath.Join(dir, "403.sock")
	serveUnix(t, forbidden, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		operator.Refuse(w, 65534) // the daemon's own answer to a refused peer
	}))

	silent := filepath.Join(dir, "silent.sock")
	release := make(chan struct{})
	serveUnix(t, silent, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release) })

	missing := filepath.Join(dir, "missing.sock")
	denied := func(p string) string {
		return "amexctl: permission denied on " + p + ": run as root, the amexd user or a member of control.group\n"
	}
	tests := []struct {
		name, sock string
		args       []string
		want       string
	}{
		{"missing socket", missing, nil, "amexctl: amexd is not running (no socket at " + missing + ")\n"},
		{"connection refused", stale, nil, "amexctl: amexd is not running (no socket at " + stale + ")\n"},
		{"closed by daemon", closing, nil, denied(closing)},
		{"403", forbidden, nil, denied(forbidden)},
		{"timeout", silent, []string{"--timeout", "100ms"}, "amexctl: amexd did not answer on " + silent + " within 100ms\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, nil, append(append([]string{"--socket", tt.sock}, tt.args...), "status")...)
			if r.code != exitFailed || r.stderr != tt.want || r.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and stderr %q", r.code, r.stdout, r.stderr, tt.want)
			}
		})
	}
}

func TestExplainPermission(t *testing.T) {
	err := fmt.Errorf("%w: connect: EACCES", operator.ErrPermission)
	if got := explain(err, "/run/amexd/amexd.sock", time.Second); !strings.HasPrefix(got, "amexctl: permission denied on /run/amexd/amexd.sock:") {
		t.Errorf("explain: %q", got)
	}
}

func TestSocketResolution(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	dir := t.TempDir()

	envSock := filepath.Join(dir, "env.sock")
	startFake(t, envSock, 200, 200)
	if r := runCLI(t, []string{"AMEXD_CONTROL_SOCKET=" + envSock}, "health"); r.code != exitOK {
		t.Errorf("AMEXD_CONTROL_SOCKET: exit %d, stderr %s", r.code, r.stderr)
	}

	fileSock := filepath.Join(dir, "file.sock")
	startFake(t, fileSock, 200, 200)
	cfgFile := filepath.Join(dir, "amexd.yaml")
	if err := os.WriteFile(cfgFile, []byte("control:\n  socket: "+fileSock+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, "--config", cfgFile, "health"); r.code != exitOK {
		t.Errorf("--config: exit %d, stderr %s", r.code, r.stderr)
	}
	if r := runCLI(t, []string{"AMEXD_CONFIG=" + cfgFile}, "health"); r.code != exitOK {
		t.Errorf("AMEXD_CONFIG: exit %d, stderr %s", r.code, r.stderr)
	}

	xdg := filepath.Join(dir, "xdg")
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	startFake(t, filepath.Join(xdg, "amexd", "amexd.sock"), 200, 200)
	if r := runCLI(t, nil, "health"); r.code != exitOK {
		t.Errorf("XDG_RUNTIME_DIR default: exit %d, stderr %s", r.code, r.stderr)
	}

	if r := runCLI(t, nil, "--config", filepath.Join(dir, "absent.yaml"), "health"); r.code != exitUsage {
		t.Errorf("absent config: exit %d, want %d", r.code, exitUsage)
	}
}

func TestToken(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "jwt.secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("s3cr3t-", 6)+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.secret")
	if err := os.WriteFile(short, []byte("short"), 0o400); err != nil {
		t.Fatal(err)
	}
	cfg := auth.DefaultConfig()
	cfg.Enabled, cfg.HS256SecretFile = true, secret
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, nil, "token", "--secret-file", secret, "--sub", "ops", "--ttl", "10m")
	if r.code != exitOK {
		t.Fatalf("token: exit %d, stderr %s", r.code, r.stderr)
	}
	sub, err := v.Verify(strings.TrimSpace(r.stdout))
	if err != nil || sub != "ops" {
		t.Errorf("minted token: subject %q, err %v", sub, err)
	}

	r = runCLI(t, nil, "token", "--secret-file", secret, "--role", "events:read")
	if r.code != exitOK {
		t.Fatalf("token --role: exit %d, stderr %s", r.code, r.stderr)
	}
	if _, err := v.Verify(strings.TrimSpace(r.stdout)); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("token without events:write verified with %v, want ErrForbidden", err)
	}

	if r := runCLI(t, nil, "token", "--secret-file", short); r.code != exitFailed || !strings.Contains(r.stderr, "amexctl: token:") {
		t.Errorf("short secret: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestSocketBehindPermissions: a user outside control.group cannot stat
// /run/amexd/amexd.sock (EACCES on the 0750 directory); amexctl must use
// it, and so say "permission denied", not "not running" at another path.
func TestSocketBehindPermissions(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	stat := func(path string) error {
		if path == systemdSocket {
			return &os.PathError{Op: "stat", Path: path, Err: syscall.EACCES}
		}
		return &os.PathError{Op: "stat", Path: path, Err: syscall.ENOENT}
	}
	if got := chooseSocket(daemonConfig{}, stat); got != systemdSocket {
		t.Errorf("chooseSocket = %q, want %q", got, systemdSocket)
	}
	none := func(path string) error { return &os.PathError{Op: "stat", Path: path, Err: syscall.ENOENT} }
	if got := chooseSocket(daemonConfig{}, none); got == systemdSocket {
		t.Errorf("chooseSocket with nothing anywhere = %q, want the default path", got)
	}
}
