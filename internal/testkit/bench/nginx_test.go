package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestNginxConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := NginxConfig{Dir: dir, Listen: "127.0.0.1:18082", Upstream: "http://127.0.0.1:18081/", Workers: 2}
	if strings.Contains(cfg.Config(), "user ") {
		t.Error("a user directive without User")
	}
	cfg.User = "root"
	conf := cfg.Config()
	for _, want := range []string{
		"user root;",
		"daemon off;",
		"worker_processes 2;",
		"listen 127.0.0.1:18082 reuseport;",
		"server 127.0.0.1:18081;",
		"location ~ ^/users/([0-9]+)$",
		"proxy_pass http://eventapi/getUserById/$1;",
		"proxy_cache api;",
		"proxy_cache_valid 200 10s;",
		"access_log " + filepath.Join(dir, "access.log") + ";",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	// Every path nginx writes is under Dir, so that a run leaves nothing
	// behind and needs no root.
	for _, line := range strings.Split(conf, "\n") {
		f := strings.Fields(strings.TrimSuffix(strings.TrimSpace(line), ";"))
		if len(f) >= 2 && (f[0] == "pid" || strings.HasSuffix(f[0], "_path") || strings.HasSuffix(f[0], "_log")) &&
			!strings.HasPrefix(f[1], dir+string(filepath.Separator)) {
			t.Errorf("%s writes outside %s: %q", f[0], dir, line)
		}
	}

	// nginx itself accepts it, where it is installed (CI installs it).
	bin, err := NginxBinary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v; .ci/packages lists nginx-light", err)
		}
		t.Skip(err)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log")).CombinedOutput(); err != nil {
		t.Errorf("nginx -t: %v\n%s", err, out)
	}
}
