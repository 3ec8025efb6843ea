// Package sockutil holds what every socket the router serves on shares: the
// accept loop that rides out EMFILE and the like (Acceptor), and binding of
// unix sockets. It binds the unix sockets the router serves on the same way
// everywhere: the --uwsgi and --stats stream sockets (cmd/fastrouter) and
// the --subscription-server datagram sockets (package subscription). A
// socket file a crashed run left behind is replaced; a live socket, or a
// file that is not a socket, never is. A path nginx workers connect to is
// opened to every local user.
//
// Addresses are read as uWSGI reads them: with a colon an address is TCP,
// otherwise it is a unix socket path, or "@name" in Linux's abstract
// namespace (which has no file).
package sockutil

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Network is the stream network of a --stats or --uwsgi address: "tcp"
// when it has a colon, otherwise "unix".
func Network(addr string) string {
	if strings.Contains(addr, ":") {
		return "tcp"
	}
	return "unix"
}

// RemoveStale removes the socket file at path when no process is bound to
// it any more, so that a fresh bind there can succeed. network is the
// socket's type, "unix" or "unixgram": a connect of that type tells a live
// socket from a stale one. A missing file is not an error. A file that is
// not a socket, or a socket a live process is bound to, is left alone with
// an error that wraps syscall.EADDRINUSE and says which; other errors are
// the file system's, and name path.
//
// Call it only after a fresh bind failed with EADDRINUSE: a socket
// inherited from a previous process (internal/upgrade) is live, and
// clearing the path up front would refuse it.
func RemoveStale(network, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%w (not a socket; not removing it)", syscall.EADDRINUSE)
	}
	if c, err := net.DialTimeout(network, path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%w (a live socket is bound there)", syscall.EADDRINUSE)
	}
	return os.Remove(path)
}

// ListenFunc opens a stream listener: net.Listen, or
// (*upgrade.Upgrader).Listen so that the socket survives a binary upgrade.
type ListenFunc func(network, addr string) (net.Listener, error)

// Listen binds addr through listen: TCP when addr has a colon, else a unix
// socket. When a path is taken by a stale socket file it removes the file
// and binds once more; a refusal names the path ("/run/x.sock: address
// already in use (a live socket is bound there)").
func Listen(listen ListenFunc, addr string) (net.Listener, error) {
	network := Network(addr)
	ln, err := listen(network, addr)
	if err != nil && network == "unix" && errors.Is(err, syscall.EADDRINUSE) {
		if rerr := RemoveStale("unix", addr); rerr != nil {
			if errors.Is(rerr, syscall.EADDRINUSE) {
				rerr = fmt.Errorf("%s: %w", addr, rerr)
			}
			return nil, rerr
		}
		ln, err = listen(network, addr)
	}
	return ln, err
}

// ListenShared is Listen for a socket every local user may connect to: a
// unix socket path is made 0666 once bound. A --uwsgi front needs it, since
// nginx workers run as another user and uwsgi_pass needs write access to
// connect; that exposes no more than a --uwsgi port on loopback does.
// Abstract names and TCP addresses have no file and are left as bound.
func ListenShared(listen ListenFunc, addr string) (net.Listener, error) {
	ln, err := Listen(listen, addr)
	if err != nil || Network(addr) != "unix" || strings.HasPrefix(addr, "@") {
		return ln, err
	}
	if err := os.Chmod(addr, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
