package balancer

import (
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// State is a node's lifecycle state as shown by the admin API.
type State uint32

const (
	StateActive   State = iota // receives new requests
	StateDraining              // no new requests; in-flight ones finish
	StateDrained               // drain complete; kept listed, no traffic
	StateFailed                // recent connect failure; skipped until its backoff ends
	StateBackup                // healthy but held in reserve (backup level > lowest usable)
)

var stateNames = [...]string{"active", "draining", "drained", "failed", "backup"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Network says how a node is reached.
type Network uint8

const (
	NetTCP  Network = iota // uwsgi over TCP, address "ip:port" or "[ip6]:port"
	NetUnix                // uwsgi over a unix stream socket ("@name" = abstract)
	NetHTTP                // HTTP/1.1 over TCP with keep-alive, address "http://ip:port" (idle.go)
)

// ErrBadAddress is returned for a node address that names neither an IP
// endpoint nor a unix socket path.
var ErrBadAddress = errors.New("balancer: node address must be ip:port, [ip6]:port, http://ip:port or a unix socket path")

// ErrBadHTTPAddress is returned for an http:// node address that is not
// "http://ip[:port][/]" with an IP literal.
var ErrBadHTTPAddress = errors.New("balancer: http node address must be http://ip[:port] or http://[ip6][:port] (no host name, path, user or query)")

// Endpoint is a parsed node address.
type Endpoint struct {
	Network Network
	// Dial is the string handed to net.Dial: "ip:port" or a socket path.
	Dial string
	// AddrPort is set for NetTCP and NetHTTP.
	AddrPort netip.AddrPort
}

// ParseEndpoint interprets a node address the way uWSGI does, minus DNS:
// "ip:port" and "[ip6]:port" are TCP, anything else without a colon (or starting with '/', '.', '@') is a unix
// socket path, and "http://ip[:port]" is an HTTP/1.1 node (port 80 when
// absent; one trailing "/" is allowed, nothing else after the authority).
// Host names are refused: a router that resolves names on every announce
// can be steered by whoever controls DNS, and uWSGI never did it.
//
// The node's identity stays the address as given, byte for byte:
// "http://127.0.0.1" and "http://127.0.0.1:80/" are two nodes that dial the
// same socket, as "127.0.0.1:3031" and a unix path to the same app would be.
func ParseEndpoint(addr string) (Endpoint, error) {
	if addr == "" || len(addr) > 255 {
		return Endpoint{}, ErrBadAddress
	}
	if len(addr) >= 7 && strings.EqualFold(addr[:7], "http://") {
		return parseHTTPEndpoint(addr[7:])
	}
	switch addr[0] {
	case '/', '.', '@':
		return Endpoint{Network: NetUnix, Dial: addr}, nil
	}
	if !strings.Contains(addr, ":") {
		return Endpoint{Network: NetUnix, Dial: addr}, nil
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 {
		return Endpoint{}, ErrBadAddress
	}
	return Endpoint{Network: NetTCP, Dial: ap.String(), AddrPort: ap}, nil
}

// parseHTTPEndpoint parses the authority of an http:// node address: an IP
// literal ("[ip6]" bracketed, no zone), an optional port 1-65535, an
// optional single trailing "/".
func parseHTTPEndpoint(a string) (Endpoint, error) {
	a = strings.TrimSuffix(a, "/")
	if a == "" || strings.ContainsAny(a, "/?#@%\\ ") {
		return Endpoint{}, ErrBadHTTPAddress
	}
	host, port := a, "80"
	if a[0] == '[' {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return Endpoint{}, ErrBadHTTPAddress
		}
		host = a[1:end]
		switch rest := a[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port = rest[1:]
		default:
			return Endpoint{}, ErrBadHTTPAddress
		}
	} else if i := strings.IndexByte(a, ':'); i >= 0 {
		host, port = a[:i], a[i+1:]
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" || (a[0] == '[') != ip.Is6() || ip.Is4In6() {
		return Endpoint{}, ErrBadHTTPAddress
	}
	p, ok := parsePort(port)
	if !ok {
		return Endpoint{}, ErrBadHTTPAddress
	}
	ap := netip.AddrPortFrom(ip, p)
	return Endpoint{Network: NetHTTP, Dial: ap.String(), AddrPort: ap}, nil
}

// parsePort accepts 1 to 5 decimal digits naming a port in 1..65535.
func parsePort(s string) (uint16, bool) {
	if len(s) == 0 || len(s) > 5 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// Node is one backend in a pool.
//
// Immutable after creation: Address, Endpoint, Static, Modifier1, Modifier2
// (uWSGI does not change modifiers on refresh either), pool and hash.
// Everything else is an atomic that any goroutine may read; writers are the
// Table (announce, expiry) and the router (in-flight, failures). A Node
// outlives its removal from a pool for as long as requests in flight hold it.
type Node struct {
	Address   string
	Endpoint  Endpoint
	Static    bool
	Modifier1 uint8
	Modifier2 uint8

	// pool is the pool the node was created in (nil for nodes built by
	// hand in tests); State asks it which backup level is serving.
	pool *Pool
	// hash is hashBytes(Address), the node's identity in rendezvous hashing.
	hash uint64

	weight   atomic.Int64  // >= 1
	level    atomic.Uint64 // backup level, 0 = primary (the backup=N key)
	cores    atomic.Uint64
	load     atomic.Uint64
	lastSeen atomic.Int64 // unix nanoseconds of the last announce
	notify   atomic.Pointer[string]

	state    atomic.Uint32 // State
	inflight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	// rxBytes and txBytes count traffic as uWSGI's router stats do, from
	// the node's side: rx to it, tx from it (traffic.go).
	rxBytes atomic.Uint64
	txBytes atomic.Uint64

	// Passive health: consecutive connect failures and the time (unix ns)
	// before which the node is not picked.
	consecFails atomic.Int32
	retryAt     atomic.Int64

	// down is the verdict of an active health check (SetHealthy): a down
	// node is not picked whatever its lifecycle state, and shows as failed.
	// Kept apart from state so a drain or undrain never overrides it, nor
	// it a drain.
	down atomic.Bool

	// removed is set once the node left its pool (unsubscribe, expiry,
	// delete); in-flight requests may still hold it.
	removed atomic.Bool

	// Lifecycle (drain.go). joined is when the node (re)joined, for slow
	// start. drainDeadline is the unix-ns deadline of a drain in progress.
	// drainReqs is the request count when the drain began. unsubscribed marks
	// a node draining because it unsubscribed: it is removed once drained.
	joined        atomic.Int64
	drainDeadline atomic.Int64
	drainStarted  atomic.Int64
	drainReqs     atomic.Uint64
	forced        atomic.Uint64
	unsubscribed  atomic.Bool

	// conns are the backend connections of requests in flight, so a drain
	// deadline can cut them. Guarded by connMu.
	connMu sync.Mutex
	conns  map[io.Closer]struct{}
	// idle are the keep-alive connections of an http node waiting for its
	// next request (idle.go), oldest first. Guarded by connMu; nIdle
	// mirrors len(idle) so Tick can skip nodes without any.
	idle  []idleConn
	nIdle atomic.Int32

	// sed's latency estimate (latency.go): lat is the moving average in
	// ns, 0 while the node has no sample; latAt the unix ns of its last
	// sample.
	lat   atomic.Int64
	latAt atomic.Int64

	// cw is the smooth-WRR current weight. Guarded by the owning Pool's mu.
	cw int64
}

// NodeInfo is a consistent-enough copy of a node's public state.
type NodeInfo struct {
	Address string
	Weight  int64
	Cores   uint64
	Load    uint64
	State   State
	// Healthy is false while the node is failing: its last connect failed
	// (passive health) or an active health check marks it down. Read
	// with State from the same loads, so the two never disagree: a node
	// that is not healthy shows "failed", unless a drain holds it
	// ("draining", "drained"); a "failed" node is never healthy.
	Healthy   bool
	Backup    uint64 // backup level, 0 = primary
	Inflight  int64
	Requests  uint64
	Failures  uint64
	RxBytes   uint64 // bytes sent to the node (uwsgi packets and request bodies)
	TxBytes   uint64 // response body bytes received from the node (through the uwsgi front, which relays it unparsed: the whole response)
	LastSeen  time.Time
	Static    bool
	Modifier1 uint8
	Modifier2 uint8
}

// Info snapshots the node.
func (n *Node) Info() NodeInfo {
	state, healthy := n.status()
	return NodeInfo{
		Address:   n.Address,
		Weight:    n.weight.Load(),
		Cores:     n.cores.Load(),
		Load:      n.load.Load(),
		State:     state,
		Healthy:   healthy,
		Backup:    n.level.Load(),
		Inflight:  n.inflight.Load(),
		Requests:  n.requests.Load(),
		Failures:  n.failures.Load(),
		RxBytes:   n.rxBytes.Load(),
		TxBytes:   n.txBytes.Load(),
		LastSeen:  time.Unix(0, n.lastSeen.Load()),
		Static:    n.Static,
		Modifier1: n.Modifier1,
		Modifier2: n.Modifier2,
	}
}

// State returns the node's current state. StateBackup is not stored but
// computed here: an active node whose backup level is above the lowest level
// with a usable node is held in reserve, and says so. That costs a scan of
// the pool for backup-level nodes only (primaries return at once), and no
// writer has to revisit every node of a pool when one of them fails or
// recovers. Like Pick, it counts a failed node whose backoff is over as
// usable: it is about to be probed.
func (n *Node) State() State {
	s, _ := n.status()
	return s
}

// status is the node's state and health, both from one load of the
// lifecycle state and one of the health check verdict.
func (n *Node) status() (State, bool) {
	s, down := n.stored(), n.down.Load()
	healthy := !down && s != StateFailed
	if s == StateActive && down {
		return StateFailed, healthy
	}
	if s == StateActive && n.pool != nil && !n.removed.Load() {
		if l := n.level.Load(); l > 0 {
			if serving, ok := serveLevel(n.pool.Nodes(), n.pool.now().UnixNano(), nil); ok && l > serving {
				return StateBackup, healthy
			}
		}
	}
	return s, healthy
}

// stored is the state as written by the lifecycle; it is never StateBackup.
func (n *Node) stored() State { return State(n.state.Load()) }

// Backup returns the node's backup level (0 = primary).
func (n *Node) Backup() uint64 { return n.level.Load() }

// Weight returns the node's configured weight (>= 1).
func (n *Node) Weight() int64 { return n.weight.Load() }

// Inflight returns the number of requests currently holding the node.
func (n *Node) Inflight() int64 { return n.inflight.Load() }

// Notify returns the notify address the node announced, or "".
func (n *Node) Notify() string {
	if p := n.notify.Load(); p != nil {
		return *p
	}
	return ""
}

// Done releases a node obtained from Pool.Pick or Acquire, and wakes a
// request waiting in the pool's queue for a node under its cap.
func (n *Node) Done() {
	n.inflight.Add(-1)
	if p := n.pool; p != nil && p.waiting.Load() > 0 {
		p.signal(1)
	}
}

// SetHealthy records an active health check's verdict. A node marked down
// gets no request until it is marked up again; passive health (connect
// failures) works on top of it either way.
func (n *Node) SetHealthy(up bool) {
	if !up {
		defer n.CloseIdle() // after down is set: PutIdle refuses from then on
	}
	if n.down.Swap(!up) && up {
		if p := n.pool; p != nil && p.waiting.Load() > 0 {
			p.signal(int(p.waiting.Load()))
		}
	}
}

// Healthy reports the last active health check verdict (true when the pool
// has no checks). What the admin API shows as healthy is NodeInfo.Healthy,
// which also counts connect failures.
func (n *Node) Healthy() bool { return !n.down.Load() }

// ReportSuccess clears the node's failure streak after a successful
// connect. It reports whether that brought a failed node back (true once
// per recovery, for the caller to log).
func (n *Node) ReportSuccess() (recovered bool) {
	if n.consecFails.Load() != 0 {
		n.consecFails.Store(0)
		n.retryAt.Store(0)
		n.forgetLatency() // its estimate is its failures': sed starts it afresh
		return n.state.CompareAndSwap(uint32(StateFailed), uint32(StateActive))
	}
	return false
}

// Failing reports whether the node's last connect failed (a failure
// streak that no success has ended yet).
func (n *Node) Failing() bool { return n.consecFails.Load() != 0 }

// ReportFailure marks the node failed after a connect failure. It is skipped
// by Pick until now+backoff, where backoff doubles with consecutive failures
// from minBackoff up to maxBackoff; after that one request probes it. It
// reports whether this failure marked an active node failed (true once per
// failure streak, for the caller to log; a draining node is not marked).
func (n *Node) ReportFailure(now time.Time) (marked bool) {
	n.failures.Add(1)
	c := n.consecFails.Add(1)
	backoff := minBackoff << min(c-1, 16)
	if backoff > maxBackoff || backoff <= 0 {
		backoff = maxBackoff
	}
	n.retryAt.Store(now.Add(backoff).UnixNano())
	return n.state.CompareAndSwap(uint32(StateActive), uint32(StateFailed))
}

const (
	minBackoff = 500 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// usable reports whether Pick may choose the node at time now (unix ns).
func (n *Node) usable(now int64) bool {
	if n.down.Load() {
		return false
	}
	switch n.stored() {
	case StateActive:
		return true
	case StateFailed:
		return now >= n.retryAt.Load()
	}
	return false
}
