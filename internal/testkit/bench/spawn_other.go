//go:build !linux

package bench

import "syscall"

// childAttr has nothing to add outside Linux, which lacks Pdeathsig.
func childAttr() *syscall.SysProcAttr { return nil }
