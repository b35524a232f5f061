package operator

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SocketPath is the operator socket's path: configured (control.socket)
// when set, else amexd.sock in $RUNTIME_DIRECTORY (the first one when systemd
// lists several), else $XDG_RUNTIME_DIR/amexd/amexd.sock, else
// /tmp/amexd-<uid>/amexd.sock.
func SocketPath(configured string) string {
	if configured != "" {
		return configured
	}
	if dir, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); dir != "" {
		return filepath.Join(dir, "amexd.sock")
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "amexd", "amexd.sock")
	}
	return filepath.Join(os.TempDir(), "amexd-"+strconv.Itoa(os.Getuid()), "amexd.sock")
}
