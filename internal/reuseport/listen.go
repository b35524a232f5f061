// Package reuseport opens the listening sockets amexd's workers share:
// one SO_REUSEPORT socket per worker slot (or systemd's sockets under
// socket activation), and steers a group's new connections away from the
// sockets about to close.
package reuseport

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Listener is one slot's listening socket, held open by the supervisor for
// its whole life so that a replacement worker inherits the same queue.
type Listener struct {
	File *os.File
	// Addr is the address the socket is bound to, port resolved.
	Addr string
	// Systemd is every socket systemd passed, under socket activation.
	Systemd []*os.File
}

// Open returns n listening sockets: systemd's when it passed some
// (slot i gets socket i modulo their number), else n SO_REUSEPORT sockets
// bound to addr. With port 0 the first socket's port is reused by the rest.
func Open(addr string, n int) ([]*Listener, error) {
	if files := activation.Files(true); len(files) > 0 {
		out := make([]*Listener, n)
		for i := range n {
			f := files[i%len(files)]
			out[i] = &Listener{File: f, Addr: SocketName(f), Systemd: files}
		}
		return out, nil
	}
	// Plain TCP, not Go's default MPTCP: the kernel steers connections
	// of a plain TCP reuseport group, which scaling down relies on.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	lc.SetMultipathTCP(false)
	out := make([]*Listener, 0, n)
	for i := range n {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			for _, l := range out {
				l.File.Close()
			}
			return nil, fmt.Errorf("listen on %s for slot %d: %w", addr, i, err)
		}
		if i == 0 {
			host, _, _ := net.SplitHostPort(addr)
			addr = net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		}
		f, err := socketFile(ln.(*net.TCPListener))
		ln.Close() // f holds its own descriptor for the same socket
		if err != nil {
			return nil, fmt.Errorf("listener file for slot %d: %w", i, err)
		}
		out = append(out, &Listener{File: f, Addr: addr})
	}
	return out, nil
}

// socketFile is a descriptor of ln's socket as a file that stays
// non-blocking when os/exec passes it to a worker. TCPListener.File's does
// not: its Fd, which os/exec calls, makes the socket blocking for every
// process sharing it, and a worker blocked in accept(2) then cannot close
// its listener to drain.
func socketFile(ln *net.TCPListener) (*os.File, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listener descriptor: %w", err)
	}
	dup, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("listener descriptor: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("dup listener: %w", derr)
	}
	return os.NewFile(uintptr(dup), "listener"), nil
}

// SocketName is the address f's socket is bound to, or f's name when it
// has none that is IPv4 or IPv6.
func SocketName(f *os.File) string {
	var name string
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if sa, err := unix.Getsockname(int(fd)); err == nil {
				switch a := sa.(type) {
				case *unix.SockaddrInet4:
					name = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
				case *unix.SockaddrInet6:
					name = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
				}
			}
		})
	}
	if name == "" {
		return f.Name()
	}
	return name
}

// Queue reports a listening socket's accept queue: connections waiting to
// be accepted, and the queue's limit (the listen backlog). For a socket in
// LISTEN state Linux reports these in tcpi_unacked and tcpi_sacked.
func (l *Listener) Queue() (depth, backlog uint32, err error) {
	rc, err := l.File.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("accept queue: %w", err)
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, 0, fmt.Errorf("accept queue: %w", err)
	}
	if gerr != nil {
		return 0, 0, fmt.Errorf("TCP_INFO: %w", gerr)
	}
	return info.Unacked, info.Sacked, nil
}
