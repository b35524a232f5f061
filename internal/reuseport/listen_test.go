package reuseport

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestListenerStaysNonBlocking: starting a worker (os/exec calls Fd on
// the listener file) must not make the slot's socket blocking for the
// workers already accepting on it.
func TestListenerStaysNonBlocking(t *testing.T) {
	lns, err := Open("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer lns[0].File.Close()
	fd := lns[0].File.Fd()
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK == 0 {
		t.Error("the slot socket is blocking after Fd")
	}
}
