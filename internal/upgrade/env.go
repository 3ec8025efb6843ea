package upgrade

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The hand-off variables Upgrade sets in the child's environment. New reads
// them, and (with the process environment) unsets them, so nothing the child
// spawns inherits them; Upgrade strips them from the base environment before
// setting fresh values, so a grandchild sees only its own.
const (
	// EnvFDs lists the inherited sockets in ExtraFiles order, as
	// "fd network quoted-addr" entries separated by "; ":
	//	5 tcp ":8080"; 6 udp "127.0.0.1:2626"; 7 unixgram "/run/sub.sock"
	// network and addr are exactly what the parent passed to Listen or
	// ListenPacket, so a child with the same configuration finds them. The
	// address is Go-quoted (strconv.Quote), so any path survives, byte for
	// byte.
	EnvFDs = "FASTROUTER_UPGRADE_FDS"
	// EnvReadyFD is the write end of the ready pipe (decimal fd). Its
	// presence is what makes a process a child.
	EnvReadyFD = "FASTROUTER_UPGRADE_READY_FD"
	// EnvStateFD is an unlinked regular file holding the state blob
	// (decimal fd). Absent: no state.
	EnvStateFD = "FASTROUTER_UPGRADE_STATE_FD"
)

var envVars = [...]string{EnvFDs, EnvReadyFD, EnvStateFD}

// key identifies a socket across an upgrade: the network and address exactly
// as the caller configured them (":8080", "127.0.0.1:0", "/run/sub.sock").
type key struct {
	network, addr string
}

func (k key) String() string { return k.network + " " + k.addr }

// fdEntry is one element of EnvFDs.
type fdEntry struct {
	fd  int
	key key
}

// handoff is the decoded hand-off environment.
type handoff struct {
	child   bool // EnvReadyFD was set
	readyFD int
	stateFD int // -1: no state
	sockets []fdEntry
}

// firstFD is where ExtraFiles start in the child: 0-2 are stdio.
const firstFD = 3

// lookupEnv returns the value of name in env ("KEY=value" pairs). As with
// os.Getenv, the last occurrence wins.
func lookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name); ok && strings.HasPrefix(v, "=") {
			return v[1:], true
		}
	}
	return "", false
}

// stripEnv returns env without the hand-off variables.
func stripEnv(env []string) []string {
	out := make([]string, 0, len(env)+len(envVars))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if name != EnvFDs && name != EnvReadyFD && name != EnvStateFD {
			out = append(out, kv)
		}
	}
	return out
}

// parseEnv decodes and checks the hand-off variables in env. It only parses:
// whether the fds are open and of the right kind is checked by the caller.
func parseEnv(env []string) (handoff, error) {
	h := handoff{readyFD: -1, stateFD: -1}
	ready, hasReady := lookupEnv(env, EnvReadyFD)
	fds, hasFDs := lookupEnv(env, EnvFDs)
	state, hasState := lookupEnv(env, EnvStateFD)
	if !hasReady {
		if hasFDs || hasState {
			return h, fmt.Errorf("upgrade: %s or %s set without %s", EnvFDs, EnvStateFD, EnvReadyFD)
		}
		return h, nil
	}
	h.child = true
	seen := make(map[int]bool)
	parseFD := func(name, v string) (int, error) {
		fd, err := strconv.Atoi(v)
		switch {
		case err != nil:
			return -1, fmt.Errorf("upgrade: %s=%q: not a number", name, v)
		case fd < firstFD:
			return -1, fmt.Errorf("upgrade: %s=%d: below %d", name, fd, firstFD)
		case seen[fd]:
			return -1, fmt.Errorf("upgrade: %s=%d: fd listed twice", name, fd)
		}
		seen[fd] = true
		return fd, nil
	}
	var err error
	if h.readyFD, err = parseFD(EnvReadyFD, ready); err != nil {
		return h, err
	}
	if hasState {
		if h.stateFD, err = parseFD(EnvStateFD, state); err != nil {
			return h, err
		}
	}
	if hasFDs {
		if h.sockets, err = decodeFDs(fds); err != nil {
			return h, fmt.Errorf("upgrade: %s=%q: %w", EnvFDs, fds, err)
		}
	}
	for _, e := range h.sockets {
		if _, err := parseFD(EnvFDs, strconv.Itoa(e.fd)); err != nil {
			return h, err
		}
	}
	return h, nil
}

// entrySep separates EnvFDs entries.
const entrySep = "; "

// decodeFDs parses an EnvFDs value. An empty value is an empty list.
func decodeFDs(s string) ([]fdEntry, error) {
	var out []fdEntry
	for s != "" {
		fdStr, rest, ok1 := strings.Cut(s, " ")
		network, rest, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 || network == "" {
			return nil, errors.New("want \"fd network quoted-addr\" entries")
		}
		fd, err := strconv.Atoi(fdStr)
		if err != nil {
			return nil, fmt.Errorf("fd %q is not a number", fdStr)
		}
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return nil, fmt.Errorf("fd %d: address is not a quoted string", fd)
		}
		addr, _ := strconv.Unquote(q) // cannot fail: QuotedPrefix checked it
		out = append(out, fdEntry{fd: fd, key: key{network, addr}})
		s = rest[len(q):]
		if s != "" {
			if s, ok1 = strings.CutPrefix(s, entrySep); !ok1 || s == "" {
				return nil, fmt.Errorf("fd %d: want %q between entries", fd, entrySep)
			}
		}
	}
	return out, nil
}

// encodeFDs renders EnvFDs for sockets placed at ExtraFiles index base
// onwards. Networks never contain a space: only sockets that net accepted
// (or that were inherited under a key that parsed) are remembered.
func encodeFDs(keys []key, base int) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(entrySep)
		}
		b.WriteString(strconv.Itoa(firstFD + base + i))
		b.WriteByte(' ')
		b.WriteString(k.network)
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(k.addr))
	}
	return b.String()
}
