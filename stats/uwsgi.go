// Package stats publishes the routing table for tools: a stats server that
// speaks uWSGI's router stats format (--stats), so scripts written against
// uWSGI's --http-stats / --fastrouter-stats keep working, and opt-in
// per-node Prometheus series (--metrics-per-node, nodes.go).
//
// Both read the table at request time; neither adds work to the request
// path.
package stats

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/sockutil"
)

// Table is what the stats server reads.
type Table interface {
	Pools() []*balancer.Pool
}

// Config configures a Server.
type Config struct {
	// Table is the routing table. Required.
	Table Table
	// Name is the router's uWSGI short name, the key under which the
	// socket list appears: "http" for an HTTP router. Default "http".
	Name string
	// Sockets are the names of the router's listeners and subscription
	// sockets, listed under Name as uWSGI lists its gateway sockets.
	Sockets []string
	// Version is the "version" field. Default "fastrouter".
	Version string
	// WriteTimeout bounds writing the document to one client. Default 5s.
	WriteTimeout time.Duration
	// Logger, default slog.Default().
	Logger *slog.Logger
}

// maxConns bounds the clients served at once; more are closed at once. A
// stats client reads one document, so this only matters under abuse.
const maxConns = 16

// Server is a uWSGI-compatible router stats server: each connection gets one
// JSON document, then the server closes it (uWSGI's
// plugins/corerouter/corerouter.c corerouter_send_stats).
//
// Layout, as uWSGI 2.0.21 writes it for a router with subscriptions (tab
// indented):
//
//	{ "version", "pid", "uid", "gid", "cwd", "active_sessions",
//	  "<Name>": [ socket names ],
//	  "subscriptions": [ { "key", "hash", "hits", "sni_enabled",
//	      "nodes": [ { "name", "modifier1", "modifier2", "last_check", "pid", "uid", "gid",
//	                   "requests", "last_requests", "tx", "rx", "cores", "load", "weight",
//	                   "wrr", "ref", "failcnt", "death_mark" } ] } ],
//	  "cheap" }
//
// fastrouter fills them from its table: hash is uWSGI's (djb33x of the key
// mod 65535) and pools come in its order; hits and requests count picks;
// last_requests equals requests (fastrouter does not reset it on announce);
// tx is response body bytes from the node, rx bytes sent to it; ref is
// in-flight requests; failcnt counts connect failures; death_mark is 1
// while the node takes no traffic (draining, drained, failed).
// active_sessions is the requests in flight. pid, uid, gid, wrr,
// sni_enabled and cheap are always 0. Like uWSGI's master branch it adds
// "algo" per pool and "backup" and "proto" per node, and it adds "state"
// per node. "static_nodes" is left out: fastrouter's static nodes (--to)
// belong to keyed pools and are listed there.
type Server struct {
	cfg Config // immutable after New
	log *slog.Logger

	mu     sync.Mutex
	lns    []net.Listener // guarded by mu
	closed bool           // guarded by mu

	sem chan struct{}  // one token per client being served
	wg  sync.WaitGroup // Serve loops and client goroutines
}

// New validates cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Table == nil {
		return nil, errors.New("stats: Config.Table is required")
	}
	if cfg.Name == "" {
		cfg.Name = "http"
	}
	if cfg.Version == "" {
		cfg.Version = "fastrouter"
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{cfg: cfg, log: cfg.Logger, sem: make(chan struct{}, maxConns)}, nil
}

// Serve answers every connection accepted on ln until Close. It returns nil
// after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.lns = append(s.lns, ln)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	acc := &sockutil.Acceptor{Listener: ln, OnRetry: func(err error, backoff time.Duration) {
		s.log.Warn("stats: accept failed; retrying", "err", err, "backoff", backoff)
	}}
	for {
		c, err := acc.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		select {
		case s.sem <- struct{}{}:
		default:
			c.Close() // too many at once
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			s.serveConn(c)
		}()
	}
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := c.Write(s.Document()); err != nil {
		s.log.Debug("stats: write", "remote", c.RemoteAddr(), "err", err)
	}
}

// Close stops every Serve loop and waits for the clients being served (each
// bounded by WriteTimeout).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	lns := s.lns
	s.lns = nil
	s.mu.Unlock()
	var errs []error
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// The document's objects, in uWSGI's field order (encoding/json keeps the
// order of struct fields).
type (
	header struct {
		Version        string `json:"version"`
		PID            int    `json:"pid"`
		UID            int    `json:"uid"`
		GID            int    `json:"gid"`
		Cwd            string `json:"cwd"`
		ActiveSessions int64  `json:"active_sessions"`
	}
	subscription struct {
		Key        string `json:"key"`
		Hash       uint32 `json:"hash"`
		Hits       uint64 `json:"hits"`
		SNIEnabled int    `json:"sni_enabled"`
		Algo       string `json:"algo"`
		Nodes      []node `json:"nodes"`
	}
	node struct {
		Name         string `json:"name"`
		Modifier1    uint8  `json:"modifier1"`
		Modifier2    uint8  `json:"modifier2"`
		LastCheck    int64  `json:"last_check"`
		PID          int    `json:"pid"`
		UID          int    `json:"uid"`
		GID          int    `json:"gid"`
		Requests     uint64 `json:"requests"`
		LastRequests uint64 `json:"last_requests"`
		Tx           uint64 `json:"tx"`
		Rx           uint64 `json:"rx"`
		Cores        uint64 `json:"cores"`
		Load         uint64 `json:"load"`
		Weight       int64  `json:"weight"`
		Wrr          int    `json:"wrr"`
		Ref          int64  `json:"ref"`
		Failcnt      uint64 `json:"failcnt"`
		DeathMark    int    `json:"death_mark"`
		Backup       uint64 `json:"backup"`
		Proto        string `json:"proto"`
		State        string `json:"state"`
	}
)

// Document returns the stats document: tab-indented JSON and a newline.
// Safe for concurrent use.
func (s *Server) Document() []byte {
	pools := s.cfg.Table.Pools()
	subs := make([]subscription, 0, len(pools))
	var active int64
	for _, p := range pools {
		sub := subscription{Key: p.Key, Hash: uwsgiHash(p.Key), Algo: string(p.Algo()), Nodes: []node{}}
		for _, n := range p.Nodes() {
			i := n.Info()
			death := 0
			switch i.State {
			case balancer.StateDraining, balancer.StateDrained, balancer.StateFailed:
				death = 1
			}
			sub.Hits += i.Requests
			active += i.Inflight
			sub.Nodes = append(sub.Nodes, node{
				Name: i.Address, Modifier1: i.Modifier1, Modifier2: i.Modifier2,
				LastCheck: i.LastSeen.Unix(), Requests: i.Requests, LastRequests: i.Requests,
				Tx: i.TxBytes, Rx: i.RxBytes, Cores: i.Cores, Load: i.Load, Weight: i.Weight,
				Ref: i.Inflight, Failcnt: i.Failures, DeathMark: death,
				Backup: i.Backup, Proto: "uwsgi", State: i.State.String(),
			})
		}
		subs = append(subs, sub)
	}
	// uWSGI walks its hash table: pools in bucket order.
	slices.SortFunc(subs, func(a, b subscription) int {
		if a.Hash != b.Hash {
			return int(a.Hash) - int(b.Hash)
		}
		return strings.Compare(a.Key, b.Key)
	})
	cwd, _ := os.Getwd()
	h := header{Version: s.cfg.Version, PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid(), Cwd: cwd, ActiveSessions: active}

	// The top level has a key chosen at run time (the router's name), so
	// it is assembled from marshalled parts, then indented as a whole.
	var compact bytes.Buffer
	hb, _ := json.Marshal(h)
	compact.Write(hb[:len(hb)-1]) // without the closing brace
	compact.WriteByte(',')
	nb, _ := json.Marshal(s.cfg.Name)
	compact.Write(nb)
	compact.WriteByte(':')
	socks := s.cfg.Sockets
	if socks == nil {
		socks = []string{}
	}
	sb, _ := json.Marshal(socks)
	compact.Write(sb)
	compact.WriteString(`,"subscriptions":`)
	ub, _ := json.Marshal(subs)
	compact.Write(ub)
	compact.WriteString(`,"cheap":0}`)
	var out bytes.Buffer
	out.Grow(compact.Len() * 2)
	_ = json.Indent(&out, compact.Bytes(), "", "\t") // valid by construction
	out.WriteByte('\n')
	return out.Bytes()
}

// uwsgiHash is the bucket uWSGI files a subscription key under: the djb33x
// hash of the key modulo 65535 (core/subscription.c).
func uwsgiHash(key string) uint32 {
	h := uint32(5381)
	for i := 0; i < len(key); i++ {
		h = (h<<5 + h) ^ uint32(key[i])
	}
	return h % 0xffff
}
