package operator

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/amexd/amexd/internal/config"
)

// SocketPath is the operator socket's path for cfg: cfg.Control.Socket when
// set, else amexd.sock in $RUNTIME_DIRECTORY (the first one when systemd
// lists several), else $XDG_RUNTIME_DIR/amexd/amexd.sock, else
// /tmp/amexd-<uid>/amexd.sock.
func SocketPath(cfg config.Config) string {
	if cfg.Control.Socket != "" {
		return cfg.Control.Socket
	}
	if dir, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); dir != "" {
		return filepath.Join(dir, "amexd.sock")
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "amexd", "amexd.sock")
	}
	return filepath.Join(os.TempDir(), "amexd-"+strconv.Itoa(os.Getuid()), "amexd.sock")
}
