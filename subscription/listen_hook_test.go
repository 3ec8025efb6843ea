package subscription

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// bindUnixgram binds a unix datagram socket at path, closed at cleanup.
func bindUnixgram(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// An inherited unix socket (live: the previous process bound it) is taken
// as is; Handoff+Close leaves its file to the successor, a plain Close
// removes it.
func TestListenHookInheritedUnixgram(t *testing.T) {
	for _, tc := range []struct {
		name     string
		handoff  bool
		wantFile bool
	}{
		{"handoff then close", true, true},
		{"plain close", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tbl, _ := newTable(t)
			path := filepath.Join(t.TempDir(), "sub.sock")
			prev := bindUnixgram(t, path) // what the upgrader hands over
			var calls []string
			hook := func(network, addr string) (net.PacketConn, error) {
				calls = append(calls, network+" "+addr)
				return prev, nil
			}
			s := newServer(t, Config{Addrs: []string{path}, ListenPacket: hook}, tbl)
			// removeStale would refuse: the inherited socket is live.
			if err := s.Start(); err != nil {
				t.Fatalf("Start with an inherited socket: %v", err)
			}
			if want := []string{"unixgram " + path}; !slices.Equal(calls, want) {
				t.Errorf("hook calls = %q; want %q", calls, want)
			}
			send(t, unixSender(t, path), captured(t))
			waitCount(t, s, resSubscribe, 1)
			if tc.handoff {
				s.Handoff()
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			_, err := os.Lstat(path)
			switch {
			case tc.wantFile && err != nil:
				t.Errorf("after Handoff and Close the socket file is gone: %v", err)
			case !tc.wantFile && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("after Close without Handoff: Lstat = %v; want the file removed", err)
			}
		})
	}
}

// A fresh bind through the hook over a stale file (a crashed run) removes
// the file and calls the hook again; over someone else's live socket it
// fails and leaves the socket alone.
func TestListenHookFreshBindStaleAndLive(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	dir := t.TempDir()
	calls := 0
	hook := func(network, addr string) (net.PacketConn, error) {
		calls++
		return net.ListenPacket(network, addr)
	}

	stale := filepath.Join(dir, "stale.sock")
	bindUnixgram(t, stale).Close() // unixgram sockets leave their file behind
	s := startServer(t, Config{Addrs: []string{stale}, ListenPacket: hook}, tbl)
	if calls != 2 {
		t.Errorf("hook called %d times over a stale file; want 2 (fail, remove, bind)", calls)
	}
	send(t, unixSender(t, stale), captured(t))
	waitCount(t, s, resSubscribe, 1)

	live := filepath.Join(dir, "live.sock")
	bindUnixgram(t, live)
	s2 := newServer(t, Config{Addrs: []string{live}, ListenPacket: hook}, tbl)
	if err := s2.Start(); !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "live socket") {
		s2.Close()
		t.Fatalf("Start over a live socket = %v; want EADDRINUSE naming the live socket", err)
	}
	if _, err := os.Lstat(live); err != nil {
		t.Errorf("live socket file removed: %v", err)
	}
}

// UDP goes through the hook with the network and address as configured,
// and the socket it returns serves.
func TestListenHookUDP(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	var calls []string
	hook := func(network, addr string) (net.PacketConn, error) {
		calls = append(calls, network+" "+addr)
		return net.ListenPacket(network, addr)
	}
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, ListenPacket: hook}, tbl)
	if want := []string{"udp4 127.0.0.1:0"}; !slices.Equal(calls, want) {
		t.Errorf("hook calls = %q; want %q", calls, want)
	}
	send(t, udpSender(t, s.Addrs()[0]), captured(t))
	waitCount(t, s, resSubscribe, 1)
}

func TestListenHookWrongType(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	var got net.PacketConn
	hook := func(string, string) (net.PacketConn, error) {
		c, err := net.ListenPacket("unixgram", filepath.Join(t.TempDir(), "x.sock"))
		got = c
		return c, err
	}
	s := newServer(t, Config{Addrs: []string{"127.0.0.1:0"}, ListenPacket: hook}, tbl)
	err := s.Start()
	if err == nil || !strings.Contains(err.Error(), "want *net.UDPConn") {
		s.Close()
		t.Fatalf("Start with a hook returning %T = %v; want an error", got, err)
	}
	if _, err := got.WriteTo([]byte("x"), got.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the rejected conn was not closed: WriteTo = %v", err)
	}
}
