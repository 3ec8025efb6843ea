// Package upgrade replaces a running router with a fresh exec of its binary
// without refusing a single connection: the new process inherits the
// listening sockets themselves, by file descriptor, instead of binding them.
//
// Hand-off:
//
//	parent (serving)                         child (same path, re-resolved)
//	Upgrade: dup every remembered socket,
//	  ready pipe, unlinked state file,
//	  exec with ExtraFiles ────────────────▶ New: read FASTROUTER_UPGRADE_*,
//	                                           unset them, fds close-on-exec
//	                                         Listen/ListenPacket: take the
//	                                           inherited socket with the same
//	                                           (network, addr) instead of binding
//	  wait for one of: ready byte ◀───────── Ready: write one byte, close the pipe,
//	    child exit, ReadyTimeout, ctx          close inherited fds nobody claimed
//	Upgrade returns the child's pid; the
//	caller stops accepting and drains.
//
// Both processes hold the same kernel socket during the hand-off, so a
// connection that arrives is queued on it and accepted by whichever process
// calls accept: nothing is refused, and once the parent closes its copy
// the child accepts everything. A child that fails before Ready is killed
// and reaped, and the parent, which never stopped serving, carries on. A
// child can Upgrade in turn (a chain of upgrades).
//
// The parent is expected to drain and exit, so whatever supervises the
// router must follow the new pid: systemd needs PIDFile= or NotifyAccess=
// with MAINPID=; in a container the router must not be the process whose
// exit ends the container (PID 1, or the only child of an init such as
// tini), or the parent's exit takes the child down with it.
//
// The package is for Unix; elsewhere Upgrade reports errors.ErrUnsupported.
package upgrade

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultReadyTimeout is how long Upgrade waits for the child's Ready when
// Config.ReadyTimeout is zero.
const DefaultReadyTimeout = 30 * time.Second

// MaxState bounds the state blob Upgrade passes to the child. It is meant
// for small things (a drain deadline, counters, a table snapshot), not bulk.
const MaxState = 64 << 20

// Errors from Upgrade and the listen methods.
var (
	ErrInProgress = errors.New("upgrade: an upgrade is already in progress")
	ErrUpgraded   = errors.New("upgrade: already handed off to a child that is ready")
	ErrClosed     = errors.New("upgrade: upgrader closed")
)

// Config configures an Upgrader. Zero values take the documented defaults.
type Config struct {
	// Logger receives a line per upgrade step. Default: discard.
	Logger *slog.Logger
	// ReadyTimeout is how long Upgrade waits for the child's Ready.
	// Default DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Env is the environment, as "KEY=value" pairs, that New reads the
	// hand-off variables from and that Upgrade passes on to the child (minus
	// stale hand-off variables, plus fresh ones). Nil: the process
	// environment, read when needed (os.Environ); New then also unsets the
	// hand-off variables in it, so processes this one spawns do not inherit
	// them. Tests set it.
	Env []string
	// Executable, if set, is the binary Upgrade runs. Default: os.Executable,
	// resolved at each Upgrade so that a binary replaced on disk since start
	// is the one that runs. A test/advanced hook.
	Executable string
	// Args, if non-nil, are the child's arguments (without argv[0]).
	// Default os.Args[1:]. A test/advanced hook.
	Args []string
}

// Upgrader hands sockets from this process to a successor (Upgrade) and,
// when this process is such a successor, takes them over (New, Listen,
// ListenPacket, Ready). Its methods are safe for concurrent use.
type Upgrader struct {
	// Immutable after New.
	log          *slog.Logger
	readyTimeout time.Duration
	env          []string // nil: the process environment
	executable   string   // "": os.Executable at Upgrade time
	args         []string // nil: os.Args[1:]
	child        bool
	state        []byte // child: the parent's state blob, read in New; nil if none

	upgrading atomic.Bool // held by the one Upgrade in progress

	mu        sync.Mutex   // guards the fields below
	inherited []*inherited // child: sockets from the parent, in fd order
	ready     *os.File     // child: write end of the ready pipe; nil after Ready or Close
	sockets   []*socket    // every socket handed to the caller, for the next Upgrade
	upgraded  bool         // a child reported ready: it owns the sockets now
	closed    bool
}

// inherited is a socket descriptor passed by the parent.
type inherited struct {
	key  key
	file *os.File // nil once claimed by Listen/ListenPacket or closed
}

// socket is one listener or packet conn handed to the caller. Upgrade dups
// its descriptor at upgrade time, not before, so that a socket the caller
// has closed really is closed (and its address free to bind again).
type socket struct {
	key       key
	conn      syscall.Conn
	unix      *net.UnixListener // unix stream listeners: Close would unlink the path
	inherited bool              // taken over from the parent rather than bound here
}

// New returns an Upgrader. If the environment says this process was
// started by Upgrade, it adopts the descriptors listed there (marking them
// close-on-exec) and reads the state blob; a malformed hand-off environment
// is an error. Call it early, before this process starts any other: until
// then the inherited descriptors are not close-on-exec.
func New(cfg Config) (*Upgrader, error) {
	switch {
	case cfg.ReadyTimeout < 0:
		return nil, fmt.Errorf("upgrade: negative ready timeout %s", cfg.ReadyTimeout)
	case cfg.ReadyTimeout == 0:
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	u := &Upgrader{
		log:          cfg.Logger,
		readyTimeout: cfg.ReadyTimeout,
		env:          cfg.Env,
		executable:   cfg.Executable,
		args:         cfg.Args,
	}
	env := cfg.Env
	if env == nil {
		env = os.Environ()
		// Unset even when malformed: a bad hand-off must not propagate.
		for _, name := range envVars {
			_ = os.Unsetenv(name)
		}
	}
	h, err := parseEnv(env)
	if err != nil {
		return nil, err
	}
	if !h.child {
		return u, nil
	}
	if err := adopt(u, h); err != nil {
		return nil, err
	}
	u.log.Info("upgrade: started as the successor of a running process",
		"parent", os.Getppid(), "sockets", len(u.inherited), "state_bytes", len(u.state))
	return u, nil
}

// adopt checks every hand-off descriptor before taking any, so that a bad
// environment leaves this process's descriptors alone.
func adopt(u *Upgrader, h handoff) error {
	if err := checkFD(h.readyFD, kindPipe); err != nil {
		return fmt.Errorf("upgrade: %s: %w", EnvReadyFD, err)
	}
	if h.stateFD >= 0 {
		if err := checkFD(h.stateFD, kindRegular); err != nil {
			return fmt.Errorf("upgrade: %s: %w", EnvStateFD, err)
		}
	}
	for _, e := range h.sockets {
		if err := checkFD(e.fd, kindSocket); err != nil {
			return fmt.Errorf("upgrade: %s (%s): %w", EnvFDs, e.key, err)
		}
	}
	setCloseOnExec(h.readyFD)
	u.child = true
	u.ready = os.NewFile(uintptr(h.readyFD), "upgrade-ready")
	for _, e := range h.sockets {
		setCloseOnExec(e.fd)
		u.inherited = append(u.inherited, &inherited{key: e.key, file: os.NewFile(uintptr(e.fd), e.key.String())})
	}
	if h.stateFD < 0 {
		return nil
	}
	setCloseOnExec(h.stateFD)
	f := os.NewFile(uintptr(h.stateFD), "upgrade-state")
	defer f.Close()
	state, err := readState(f)
	if err != nil {
		u.closeHandoffLocked() // no concurrent use yet
		u.child = false
		return fmt.Errorf("upgrade: reading state (%s): %w", EnvStateFD, err)
	}
	u.state = state
	return nil
}

// readState reads the whole state file from offset 0: the parent's write
// left the shared file offset at the end.
func readState(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxState {
		return nil, fmt.Errorf("%d bytes, over %d", fi.Size(), MaxState)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, fi.Size()), b); err != nil {
		return nil, err
	}
	return b, nil
}

// IsChild reports whether this process was started by Upgrade.
func (u *Upgrader) IsChild() bool { return u.child }

// State returns the state blob the parent passed to Upgrade, or nil if none
// (or this process is not a child). Each call returns a fresh reader.
func (u *Upgrader) State() io.Reader {
	if u.state == nil {
		return nil
	}
	return bytes.NewReader(u.state)
}

// Listen returns the listener inherited from the parent under (network,
// addr), exactly as configured, or else a fresh net.Listen. Either way the
// socket is remembered and handed to the child by a later Upgrade; closing
// it is the caller's business, and a closed socket is simply not handed on.
func (u *Upgrader) Listen(network, addr string) (net.Listener, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, ErrClosed
	}
	k := key{network, addr}
	var ln net.Listener
	inherited := false
	if f := u.claimLocked(k); f != nil {
		var err error
		ln, err = net.FileListener(f)
		f.Close() // FileListener holds its own dup
		if err != nil {
			return nil, fmt.Errorf("upgrade: inherited %s: %w", k, err)
		}
		if got := ln.Addr().Network(); got != family(network) {
			ln.Close()
			return nil, fmt.Errorf("upgrade: inherited %s is a %s socket", k, got)
		}
		inherited = true
		u.log.Info("upgrade: took over inherited listener", "network", network, "addr", addr, "bound", ln.Addr().String())
	} else {
		var err error
		if ln, err = net.Listen(network, addr); err != nil {
			return nil, err
		}
	}
	s := &socket{key: k, conn: ln.(syscall.Conn), inherited: inherited} // net's listeners all are syscall.Conns
	if ul, ok := ln.(*net.UnixListener); ok {
		s.unix = ul
	}
	u.sockets = append(u.sockets, s)
	return ln, nil
}

// ListenPacket is Listen for "udp", "udp4", "udp6" and "unixgram" (a path,
// or "@name" in the Linux abstract namespace). For a path, removing a stale
// socket file before a fresh bind is the caller's business: a fresh bind
// over an existing file fails with "address already in use", whereas an
// inherited socket needs no file work at all.
func (u *Upgrader) ListenPacket(network, addr string) (net.PacketConn, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, ErrClosed
	}
	k := key{network, addr}
	var pc net.PacketConn
	inherited := false
	if f := u.claimLocked(k); f != nil {
		var err error
		pc, err = net.FilePacketConn(f)
		f.Close() // FilePacketConn holds its own dup
		if err != nil {
			return nil, fmt.Errorf("upgrade: inherited %s: %w", k, err)
		}
		if got := pc.LocalAddr().Network(); got != family(network) {
			pc.Close()
			return nil, fmt.Errorf("upgrade: inherited %s is a %s socket", k, got)
		}
		inherited = true
		u.log.Info("upgrade: took over inherited packet socket", "network", network, "addr", addr, "bound", pc.LocalAddr().String())
	} else {
		var err error
		if pc, err = net.ListenPacket(network, addr); err != nil {
			return nil, err
		}
	}
	sc, ok := pc.(syscall.Conn)
	if !ok { // net.ListenPacket never returns such a conn (ip:… returns *IPConn, a syscall.Conn)
		pc.Close()
		return nil, fmt.Errorf("upgrade: %s: %T has no descriptor", k, pc)
	}
	u.sockets = append(u.sockets, &socket{key: k, conn: sc, inherited: inherited})
	return pc, nil
}

// claimLocked takes the first unclaimed inherited socket with key k; nil if
// there is none. Keys may repeat (two Listen("tcp", ":0") calls), and then
// the child's calls get them in the parent's order.
func (u *Upgrader) claimLocked(k key) *os.File {
	for _, in := range u.inherited {
		if in.file != nil && in.key == k {
			f := in.file
			in.file = nil
			return f
		}
	}
	return nil
}

// family maps a Listen network to what the socket's Addr().Network() says.
func family(network string) string {
	switch network {
	case "tcp", "tcp4", "tcp6":
		return "tcp"
	case "udp", "udp4", "udp6":
		return "udp"
	}
	return network
}

// Ready tells the parent this process is serving: it writes one byte to the
// ready pipe and closes it, and closes every inherited socket that no
// Listen or ListenPacket claimed (the new configuration no longer has it).
// From then on an inherited unix stream listener unlinks its path on Close
// like a freshly bound one; before, a child that fails must not remove the
// file its parent still serves. Ready is a no-op for a process that is not
// a child, and after the first call.
func (u *Upgrader) Ready() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ready == nil {
		return nil
	}
	// One byte into an empty pipe never blocks, so no deadline is needed.
	_, err := u.ready.Write([]byte{1})
	u.closeHandoffLocked()
	if err != nil {
		// The parent gave up (timeout or ctx) and is killing this process.
		return fmt.Errorf("upgrade: telling the parent we are ready: %w", err)
	}
	for _, s := range u.sockets {
		if s.inherited && s.unix != nil {
			if a := s.unix.Addr().String(); a != "" && a[0] != '@' {
				s.unix.SetUnlinkOnClose(true)
			}
		}
	}
	u.log.Info("upgrade: ready; the parent can stop serving", "parent", os.Getppid())
	return nil
}

// closeHandoffLocked closes the ready pipe and every unclaimed inherited
// socket.
func (u *Upgrader) closeHandoffLocked() {
	if u.ready != nil {
		u.ready.Close()
		u.ready = nil
	}
	for _, in := range u.inherited {
		if in.file != nil {
			in.file.Close()
			in.file = nil
		}
	}
}

// Close releases what the Upgrader holds: the ready pipe (a child that has
// not called Ready thereby tells its parent it failed) and the inherited
// sockets nobody claimed. It never closes a socket returned by Listen or
// ListenPacket. An Upgrade already running finishes; later ones fail.
func (u *Upgrader) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	u.closed = true
	u.closeHandoffLocked()
	u.sockets = nil
	return nil
}

// Upgrade starts a successor: the executable (re-resolved now), with this
// process's arguments and environment plus the hand-off variables, every
// socket from Listen/ListenPacket still open, and state (nil: none; at most
// MaxState bytes). It returns the child's pid once the child calls Ready.
//
// It fails, having killed and reaped the child, if the child exits first
// ("upgrade: child exited before ready: exit status 2"), is not ready
// within ReadyTimeout, or ctx ends; this process keeps serving throughout.
// After a success, stop accepting and drain: the child owns the sockets,
// and further Upgrades return ErrUpgraded. One Upgrade runs at a time; a
// concurrent call returns ErrInProgress.
//
// The successful child is released, not waited for: it is a long-lived
// separate process. Should it exit while this process still runs, it stays
// a zombie until this one exits and init reaps it.
func (u *Upgrader) Upgrade(ctx context.Context, state []byte) (pid int, err error) {
	if !u.upgrading.CompareAndSwap(false, true) {
		return 0, ErrInProgress
	}
	defer u.upgrading.Store(false)
	if len(state) > MaxState {
		return 0, fmt.Errorf("upgrade: state is %d bytes, over %d", len(state), MaxState)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("upgrade: %w", context.Cause(ctx))
	}
	cmd, readyR, unix, err := u.start(state)
	if err != nil {
		return 0, err
	}
	defer readyR.Close()
	pid = cmd.Process.Pid
	u.log.Info("upgrade: started child; waiting for it to be ready", "pid", pid, "path", cmd.Path, "timeout", u.readyTimeout)

	if err := u.waitReady(ctx, cmd, readyR); err != nil {
		return 0, err
	}
	u.mu.Lock()
	u.upgraded = true
	// The child serves these paths now: closing our listener must not
	// unlink them.
	for _, ul := range unix {
		ul.SetUnlinkOnClose(false)
	}
	u.mu.Unlock()
	_ = cmd.Process.Release()
	u.log.Info("upgrade: child is ready; stop accepting and drain", "pid", pid)
	return pid, nil
}

// start dups the sockets and starts the child. It returns the read end of
// the ready pipe (the write end is the child's alone, so EOF means the child
// closed it, normally by exiting) and the unix listeners handed on.
func (u *Upgrader) start(state []byte) (cmd *exec.Cmd, readyR *os.File, unix []*net.UnixListener, err error) {
	var extra []*os.File // the child's fds 3, 4, …; all ours to close once it has them
	defer func() {
		for _, f := range extra {
			f.Close()
		}
	}()
	keys, files, unix, err := u.dupSockets()
	if err != nil {
		return nil, nil, nil, err
	}
	exe := u.executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			closeFiles(files)
			return nil, nil, nil, fmt.Errorf("upgrade: finding own executable: %w", err)
		}
	}
	args := u.args
	if args == nil {
		args = os.Args[1:]
	}
	env := u.env
	if env == nil {
		env = os.Environ()
	}
	env = stripEnv(env)

	readyR, readyW, err := os.Pipe()
	if err != nil {
		closeFiles(files)
		return nil, nil, nil, fmt.Errorf("upgrade: ready pipe: %w", err)
	}
	extra = append(extra, readyW)
	env = append(env, EnvReadyFD+"="+strconv.Itoa(firstFD))
	if state != nil {
		sf, err := stateFile(state)
		if err != nil {
			closeFiles(files)
			readyR.Close()
			return nil, nil, nil, err
		}
		extra = append(extra, sf)
		env = append(env, EnvStateFD+"="+strconv.Itoa(firstFD+1))
	}
	env = append(env, EnvFDs+"="+encodeFDs(keys, len(extra)))
	extra = append(extra, files...)

	cmd = exec.Command(exe, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // the child's logs go where ours do
	cmd.ExtraFiles = extra
	if err := cmd.Start(); err != nil {
		readyR.Close()
		return nil, nil, nil, fmt.Errorf("upgrade: starting child: %w", err)
	}
	return cmd, readyR, unix, nil
}

// dupSockets dups every remembered socket that is still open, forgetting
// those the caller has closed.
func (u *Upgrader) dupSockets() (keys []key, files []*os.File, unix []*net.UnixListener, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.closed:
		return nil, nil, nil, ErrClosed
	case u.upgraded:
		return nil, nil, nil, ErrUpgraded
	}
	live := u.sockets[:0]
	for _, s := range u.sockets {
		f, err := dupConn(s.conn, s.key.String())
		if errors.Is(err, net.ErrClosed) {
			continue
		}
		if err != nil {
			closeFiles(files)
			return nil, nil, nil, fmt.Errorf("upgrade: duplicating %s: %w", s.key, err)
		}
		live = append(live, s)
		keys = append(keys, s.key)
		files = append(files, f)
		if s.unix != nil {
			unix = append(unix, s.unix)
		}
	}
	clear(u.sockets[len(live):])
	u.sockets = live
	return keys, files, unix, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// stateFile returns an unlinked temporary file holding state, so nothing is
// left on disk whichever process dies when.
func stateFile(state []byte) (*os.File, error) {
	f, err := os.CreateTemp("", "fastrouter-upgrade-state-*")
	if err != nil {
		return nil, fmt.Errorf("upgrade: state file: %w", err)
	}
	err = os.Remove(f.Name())
	if err == nil {
		_, err = f.Write(state)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("upgrade: state file: %w", err)
	}
	return f, nil
}

// waitReady waits for the ready byte. On failure the child is dead and
// reaped when it returns.
func (u *Upgrader) waitReady(ctx context.Context, cmd *exec.Cmd, readyR *os.File) error {
	rctx, cancel := context.WithTimeout(ctx, u.readyTimeout)
	defer cancel()
	// A read deadline in the past wakes the Read below when rctx ends.
	stop := context.AfterFunc(rctx, func() { _ = readyR.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var b [1]byte
	n, rerr := readyR.Read(b[:])
	switch {
	case n == 1:
		return nil
	case errors.Is(rerr, io.EOF):
		// The child closed its end without a byte: it exited (or Closed its
		// Upgrader and is about to). Collect the status until rctx ends.
		if exited, werr := waitExit(rctx, cmd); exited {
			return fmt.Errorf("upgrade: child exited before ready: %w", exitError(cmd, werr))
		}
		return fmt.Errorf("upgrade: child %d closed the ready pipe without becoming ready; killed it", cmd.Process.Pid)
	}
	killAndReap(cmd)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("upgrade: waiting for child %d to be ready: %w", cmd.Process.Pid, context.Cause(ctx))
	case rctx.Err() != nil:
		return fmt.Errorf("upgrade: child %d not ready after %s; killed it", cmd.Process.Pid, u.readyTimeout)
	}
	return fmt.Errorf("upgrade: reading the ready pipe: %w", rerr)
}

// waitExit waits for cmd to exit until ctx ends, then kills it. It reports
// whether the child exited on its own, with Wait's error. It always reaps,
// so the goroutine it starts has ended when it returns.
func waitExit(ctx context.Context, cmd *exec.Cmd) (exited bool, err error) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return true, err
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done // prompt: SIGKILL cannot be caught
		return false, nil
	}
}

func killAndReap(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// exitError describes how the child ended: Wait's error ("exit status 2",
// "signal: killed"), or the status itself for a clean exit.
func exitError(cmd *exec.Cmd, werr error) error {
	if werr != nil {
		return werr
	}
	return errors.New(cmd.ProcessState.String())
}
