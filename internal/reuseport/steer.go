package reuseport

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// MigrateReqPath is the sysctl that makes Linux (5.14 and later) move the
// connections queued on a closing SO_REUSEPORT socket to another socket
// of its group instead of resetting them.
const MigrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// KernelMigrates reports whether net.ipv4.tcp_migrate_req is on.
func KernelMigrates() bool {
	b, err := os.ReadFile(MigrateReqPath)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// SteerTo makes the kernel hand every new connection of f's SO_REUSEPORT
// group to one of the group's first n sockets, at random: a socket past
// them receives none, so it can be emptied and closed without resetting a
// connection. The sockets are in the order they started listening, and a
// closed one is replaced by the last, so closing the highest slots first
// keeps slot i at index i.
func SteerTo(f *os.File, n int) error {
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtRand},
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)},
		bpf.RetA{},
	})
	if err != nil {
		return fmt.Errorf("steer connections: assemble: %w", err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	return onSocket(f, "steer connections", func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	})
}

// Unsteer returns f's group to the kernel's hashing over all its sockets.
func Unsteer(f *os.File) error {
	return onSocket(f, "stop steering connections", func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	})
}

// onSocket runs op on f's descriptor.
func onSocket(f *os.File, what string, op func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = op(int(fd)) }); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if opErr != nil {
		return fmt.Errorf("%s: %w", what, opErr)
	}
	return nil
}
