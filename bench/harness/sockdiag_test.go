package main

import (
	"net"
	"strconv"
	"testing"
)

// tcpSockets sees a listener's queued and accepted connections, and the
// listener itself, by port.
func TestTCPSockets(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(p)
	ports := map[uint16]bool{uint16(n): true}
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	accepted, err := ln.Accept() // one accepted, two still in the listen queue
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	conns, listening, err := tcpSockets(ports, 1<<tcpEstablished|1<<tcpSynRecv|1<<tcpListen)
	if err != nil {
		t.Fatal(err)
	}
	if !listening {
		t.Error("listening = false; want true")
	}
	if len(conns) != len(clients) {
		t.Errorf("got %d connections on port %d; want %d", len(conns), n, len(clients))
	}
	ln.Close()
	accepted.Close()
	_, listening, err = tcpSockets(ports, 1<<tcpListen)
	if err != nil || listening {
		t.Errorf("after close: listening = %v, err = %v; want false, nil", listening, err)
	}
}
