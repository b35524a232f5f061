package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/amexd/amexd/internal/operator"
)

// explain is the one line amexctl prints for err.
func explain(err error, socket string, timeout time.Duration) string {
	switch {
	case errors.Is(err, operator.ErrNotRunning):
		return fmt.Sprintf("amexctl: amexd is not running (no socket at %s)", socket)
	case errors.Is(err, operator.ErrPermission):
		return fmt.Sprintf("amexctl: permission denied on %s: run as root, the amexd user or a member of control.group", socket)
	case errors.Is(err, operator.ErrTimeout):
		return fmt.Sprintf("amexctl: amexd did not answer on %s within %v", socket, timeout)
	}
	return "amexctl: " + err.Error()
}
