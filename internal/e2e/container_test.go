package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amexd/amexd/internal/auth"
	"github.com/amexd/amexd/internal/config"
	"github.com/amexd/amexd/internal/operator"
)

// nonrootUID is the uid of distroless's nonroot user, which the image runs as.
const nonrootUID = 65532

// dockerfileEnv returns the ENV settings of the shipped Dockerfile as
// environment entries, and checks that it runs as nonroot.
func dockerfileEnv(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	user := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "ENV "); ok {
			key, value, ok := strings.Cut(rest, "=")
			if !ok {
				t.Fatalf("Dockerfile: %q: want ENV KEY=VALUE", line)
			}
			if unq, err := strconv.Unquote(value); err == nil {
				value = unq
			}
			env = append(env, key+"="+value)
		}
		if rest, ok := strings.CutPrefix(line, "USER "); ok {
			user = rest
		}
	}
	if user != "nonroot:nonroot" {
		t.Fatalf("Dockerfile runs as %q; this test plays nonroot (uid %d)", user, nonrootUID)
	}
	return env
}

// The container example of docs/service.md without a container engine: the shipped
// production.yaml and a JWT secret, both mode 0644 as mounted, the image's
// environment, uid and gid 65532, no /var/log/amexd. It must start and
// answer POST /events with a token; without the image's environment it is
// refused at once. Only the secret's path differs, since the test cannot
// mount it on /etc/amexd.
func TestContainerExampleConfiguration(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs the tests as root, which this test needs to run amexd as uid 65532")
		}
		t.Skip("needs root to run amexd as uid 65532")
	}
	if _, err := os.Stat("/var/log/amexd"); err == nil {
		t.Skip("/var/log/amexd exists here: the image has none")
	}
	imageEnv := dockerfileEnv(t)

	// A directory uid 65532 can enter, as the image's / is.
	dir, err := os.MkdirTemp("", "amexd-container-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "amexd")
	copyFile(t, binary, bin, 0o755)
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	secretPath := filepath.Join(dir, "jwt.secret")
	if err := os.WriteFile(secretPath, []byte(hex.EncodeToString(secret)), 0o644); err != nil {
		t.Fatal(err)
	}
	prod, err := os.ReadFile("../../configs/production.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(prod, []byte("/etc/amexd/jwt.secret")) {
		t.Fatal("production.yaml no longer names /etc/amexd/jwt.secret")
	}
	cfgPath := filepath.Join(dir, "production.yaml")
	if err := os.WriteFile(cfgPath, bytes.ReplaceAll(prod, []byte("/etc/amexd/jwt.secret"), []byte(secretPath)), 0o644); err != nil {
		t.Fatal(err)
	}

	// The socket's directory is the user's own, as /tmp/amexd-65532 is in
	// the image.
	runDir := filepath.Join(dir, "run")
	if err := os.Mkdir(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(runDir, nonrootUID, nonrootUID); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(runDir, "amexd.sock")
	// What the test sets besides the image: a free port instead of 3000,
	// its own socket, two workers.
	testEnv := []string{"AMEXD_LISTEN=127.0.0.1:0", "AMEXD_CONTROL_SOCKET=" + socket, "AMEXD_WORKERS=2"}
	run := func(ctx context.Context, env []string, out io.Writer, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nonrootUID, Gid: nonrootUID}}
		return cmd
	}

	// Without the image's environment: production.yaml's access file is
	// refused once, before any worker.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var refused bytes.Buffer
	err = run(ctx, testEnv, &refused, "-config", cfgPath).Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 ||
		!strings.Contains(refused.String(), "log.access_file: /var/log/amexd/access.log: directory does not exist or is not writable") {
		t.Errorf("without the image's environment: %v, want exit 2 naming log.access_file:\n%s", err, refused.String())
	}

	logPath := filepath.Join(dir, "amexd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := run(t.Context(), append(testEnv, imageEnv...), logf, "-config", cfgPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("amexd log:\n%s", out)
		}
	})
	op := operator.NewClient(socket)
	var st operator.Status
	if !waitUntil(t.Context(), 30*time.Second, exited, func() bool {
		st, err = operator.Call(t.Context(), op, operator.GetStatus, operator.None{})
		return err == nil && st.Healthy
	}) {
		t.Fatalf("amexd did not become healthy: %v %+v", err, st)
	}

	cfg, err := config.DecodeFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	token, err := auth.Mint(cfg.Auth, auth.Token{Subject: "container-test", TTL: time.Minute}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + st.Listen + "/events"
	body := `{"name":"container example","userId":1}`
	if code, out := post(t, fresh(), url, body); code != http.StatusUnauthorized {
		t.Errorf("POST /events without a token: %d %s, want 401", code, out)
	}
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Request-ID", "container-example")
	res, err := fresh().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /events with a token: %d %s, want 201", res.StatusCode, out)
	}
	// The access line goes where the image sends it: stderr, beside the
	// daemon's own lines.
	if !waitUntil(t.Context(), 10*time.Second, exited, func() bool {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte(`"request_id":"container-example"`))
	}) {
		t.Error("no access line for the POST on amexd's stderr")
	}
	for _, w := range st.Workers {
		if w.Restarts != 0 {
			t.Errorf("slot %d restarted %d times", w.Slot, w.Restarts)
		}
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
