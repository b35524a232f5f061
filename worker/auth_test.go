package worker

import (
	"bytes"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/amexd/amexd/internal/auth"
	"github.com/amexd/amexd/internal/config"
)

const testSecret = "worker-test-secret-0123456789abcdef"

// authConfig is testConfig with authentication on and an HS256 secret file.
func authConfig(t testing.TB) config.Config {
	t.Helper()
	cfg := testConfig()
	path := filepath.Join(t.TempDir(), "jwt.secret")
	if err := os.WriteFile(path, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Auth.Enabled = true
	cfg.Auth.HS256SecretFile = path
	return cfg
}

func mint(t testing.TB, cfg config.Config, roles ...string) string {
	t.Helper()
	tok, err := auth.Mint(cfg.Auth, auth.Token{Subject: "test", Roles: roles, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func signed(t testing.TB, key string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestWriteAuthentication(t *testing.T) {
	cfg := authConfig(t)
	e := newEnv(t, cfg)
	hour := time.Now().Add(time.Hour).Unix()
	body := `{"name":"Guarded","userId":1}`
	for _, tc := range []struct {
		name      string
		header    string // Authorization
		status    int
		code      string
		challenge string // in WWW-Authenticate
	}{
		{"no token", "", 401, "unauthorized", `Bearer realm="amexd"`},
		{"not bearer", "Basic dXNlcjpwYXNz", 401, "unauthorized", `Bearer realm="amexd"`},
		{"malformed", "Bearer abc.def", 401, "unauthorized", `error="invalid_token"`},
		{"wrong signature", "Bearer " + signed(t, strings.Repeat("k", 40), jwt.MapClaims{"exp": hour, "roles": []string{"events:write"}}), 401, "unauthorized", `error="invalid_token"`},
		{"expired", "Bearer " + signed(t, testSecret, jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix(), "roles": []string{"events:write"}}), 401, "unauthorized", `error="invalid_token"`},
		{"no role", "Bearer " + mint(t, cfg, "events:read"), 403, "forbidden", `error="insufficient_scope"`},
		{"good", "Bearer " + mint(t, cfg), 201, "", ""},
		{"good, lower-case scheme", "bearer " + mint(t, cfg, "events:write"), 201, "", ""},
	} {
		for _, path := range []string{"/events", "/addEvent"} {
			t.Run(tc.name+" "+path, func(t *testing.T) {
				var hdr []string
				if tc.header != "" {
					hdr = []string{"Authorization", tc.header}
				}
				a := e.do(t, "POST", path, body, hdr...)
				if path == "/addEvent" && tc.status == http.StatusCreated {
					tc.status = http.StatusOK // the original's answer to a create
				}
				if a.status != tc.status {
					t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.body)
				}
				if tc.code == "" {
					return
				}
				if code := a.errorCode(t); code != tc.code {
					t.Errorf("code %q, want %q", code, tc.code)
				}
				if got := a.header.Get("WWW-Authenticate"); !strings.Contains(got, tc.challenge) {
					t.Errorf("WWW-Authenticate %q, want it to contain %q", got, tc.challenge)
				}
				if tc.header != "" && bytes.Contains(a.body, []byte(strings.TrimPrefix(tc.header, "Bearer "))) {
					t.Error("the answer echoes the token")
				}
			})
		}
	}
	if a := e.do(t, "GET", "/events/1", ""); a.status != 200 {
		t.Errorf("a read without a token: %d, want 200 (reads stay public)", a.status)
	}
	if got := e.sim.Stats().AddEvent.Created; got != 4 {
		t.Errorf("upstream created %d events, want the 4 from good tokens", got)
	}
}

func TestProtectedReads(t *testing.T) {
	cfg := authConfig(t)
	cfg.Auth.ProtectReads = true
	e := newEnv(t, cfg)
	for _, tc := range []struct {
		path   string
		token  bool
		status int
	}{
		{"/users", false, 401},
		{"/getEvents", false, 401},
		{"/users", true, 200},
		{"/events/user/1", false, 401},
		{"/events/circuit-status", false, 200},
		{"/healthz", false, 200},
		{"/readyz", false, 200},
		{"/openapi.json", false, 200},
		{"/no/such/route", false, 404},
	} {
		var hdr []string
		if tc.token {
			hdr = []string{"Authorization", "Bearer " + mint(t, cfg)}
		}
		if a := e.do(t, "GET", tc.path, "", hdr...); a.status != tc.status {
			t.Errorf("GET %s (token %v): %d, want %d", tc.path, tc.token, a.status, tc.status)
		}
	}
}

func TestAuthOffWarnsOnce(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		cfg := authConfig(t)
		cfg.Auth.Enabled = enabled
		cfg.Upstream.URL = "http://127.0.0.1:1"
		var logs bytes.Buffer
		e, err := build(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		e.close()
		want := 0
		if !enabled {
			want = 1
		}
		if got := strings.Count(logs.String(), "writes are not authenticated"); got != want {
			t.Errorf("auth.enabled=%v: %d warnings, want %d:\n%s", enabled, got, want, logs.String())
		}
	}
}

func TestAuthKeyErrorFailsBuild(t *testing.T) {
	cfg := authConfig(t)
	cfg.Auth.HS256SecretFile = filepath.Join(t.TempDir(), "missing")
	cfg.Upstream.URL = "http://127.0.0.1:1"
	_, err := build(cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "auth.hs256_secret_file") {
		t.Errorf("Build with a missing secret file: %v, want an error naming auth.hs256_secret_file", err)
	}
}

func TestUnauthenticatedWriteAllowedWhenOff(t *testing.T) {
	e := newEnv(t, testConfig())
	if a := e.do(t, "POST", "/events", `{"name":"Open","userId":1}`); a.status != http.StatusCreated {
		t.Errorf("POST without a token, auth off: %d, want 201", a.status)
	}
}
