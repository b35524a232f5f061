package freeport

import (
	"net"
	"testing"
)

func TestPortIsFreeToBind(t *testing.T) {
	addr, err := Loopback()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("binding the port given, %s: %v", addr, err)
	}
	defer ln.Close()
	if _, err := On("192.0.2.1"); err == nil {
		t.Error("a port on an address of no interface here: no error")
	}
}
