package bench

import "syscall"

// childAttr makes the kernel send amexd SIGTERM if amexbench dies without
// stopping it, so a crashed benchmark leaves no daemon behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
