package sockutil

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestNetwork(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:1717": "tcp", ":1717": "tcp", "[::1]:1717": "tcp",
		"/run/fastrouter/stats.sock": "unix", "stats.sock": "unix", "@fastrouter": "unix",
	} {
		if got := Network(addr); got != want {
			t.Errorf("Network(%q) = %q; want %q", addr, got, want)
		}
	}
}

// staleFile leaves a socket file of network at path that nothing is bound
// to, as a crashed run does.
func staleFile(t *testing.T, network, path string) {
	t.Helper()
	switch network {
	case "unix":
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
	case "unixgram":
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		c.Close() // unixgram sockets leave their file behind
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("expected a stale socket file: %v", err)
	}
}

func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := RemoveStale("unix", path); !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "live socket") {
		t.Fatalf("RemoveStale of a live socket = %v; want EADDRINUSE naming the live socket", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves the file, as a crash would
	if err := RemoveStale("unix", path); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if _, err := net.Listen("unix", path); err != nil {
		t.Fatalf("bind after RemoveStale: %v", err)
	}
	if err := RemoveStale("unix", filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RemoveStale("unix", file); !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("RemoveStale of a regular file = %v; want EADDRINUSE naming it not a socket", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Fatalf("regular file damaged: %q, %v", b, err)
	}
}

// A datagram socket is told live or stale by a datagram connect.
func TestRemoveStaleUnixgram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if err := RemoveStale("unixgram", path); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("RemoveStale of a live datagram socket = %v; want EADDRINUSE", err)
	}
	c.Close()
	if err := RemoveStale("unixgram", path); err != nil {
		t.Fatalf("stale datagram socket: %v", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("stale file still there: %v", err)
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	tcp, err := Listen(net.Listen, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if tcp.Addr().Network() != "tcp" {
		t.Fatalf("127.0.0.1:0 bound as %s", tcp.Addr().Network())
	}

	stale := filepath.Join(dir, "stale.sock")
	staleFile(t, "unix", stale)
	ln, err := Listen(net.Listen, stale)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	// A live socket is not stolen, and the error names the path.
	if _, err := Listen(net.Listen, stale); !errors.Is(err, syscall.EADDRINUSE) || !strings.HasPrefix(err.Error(), stale+": ") {
		t.Fatalf("Listen over a live socket = %v; want EADDRINUSE naming %s", err, stale)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(net.Listen, file); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen over a regular file = %v; want EADDRINUSE", err)
	}
}

func TestListenShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "front.sock")
	ln, err := ListenShared(net.Listen, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o666 {
		t.Fatalf("shared socket mode %o; want 666", m)
	}
	abstract, err := ListenShared(net.Listen, "@fastrouter-sockutil-test-"+filepath.Base(t.TempDir()))
	if err != nil {
		t.Fatalf("abstract name: %v", err)
	}
	abstract.Close()
	tcp, err := ListenShared(net.Listen, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcp: %v", err)
	}
	tcp.Close()
}
