package operator

import (
	"strings"
	"testing"
)

func TestSocketPath(t *testing.T) {
	cases := []struct {
		socket, runtime, xdg, want string
	}{
		{"/x/a.sock", "/run/amexd", "", "/x/a.sock"},
		{"", "/run/amexd:/run/other", "/run/user/0", "/run/amexd/amexd.sock"},
		{"", "", "/run/user/0", "/run/user/0/amexd/amexd.sock"},
		{"", "", "", "amexd-"},
	}
	for _, c := range cases {
		t.Setenv("RUNTIME_DIRECTORY", c.runtime)
		t.Setenv("XDG_RUNTIME_DIR", c.xdg)
		if got := SocketPath(c.socket); !strings.Contains(got, c.want) {
			t.Errorf("SocketPath(%+v) = %q, want it to contain %q", c, got, c.want)
		}
	}
}
