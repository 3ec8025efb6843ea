// Package h2srv serves HTTP/2 (RFC 9113) server connections that the
// caller has accepted itself, calling an http.Handler once per request
// stream. Frames are read and written with golang.org/x/net/http2's Framer
// and header blocks coded with its hpack package; the connection and
// stream logic (settings, flow control, stream states, header rules,
// GOAWAY) is this package's.
//
// Per connection there is one reading goroutine (the caller of
// ServeConn), which processes every frame as it is read, and one writing
// goroutine, which writes to the socket whatever frames have been queued
// since its previous write: the handlers and the reader queue frames into
// one buffer under the connection's mutex, so a response's HEADERS and
// DATA, and the frames of concurrent streams, leave in one write. Handlers
// run on a Server's pool of long-lived workers, so a stream costs neither
// a goroutine start nor a fresh stack.
//
// Ownership: the request, its header map, body and the ResponseWriter a
// handler gets are pooled; they belong to the handler until it returns and
// must not be used after.
package h2srv

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Config is a Server's settings; New fills zero fields with defaults.
type Config struct {
	// MaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS: streams a
	// client may have open at once; more are refused (REFUSED_STREAM).
	MaxConcurrentStreams uint32
	// MaxReadFrameSize is SETTINGS_MAX_FRAME_SIZE: a larger frame is a
	// connection error FRAME_SIZE_ERROR.
	MaxReadFrameSize uint32
	// MaxHeaderListSize is SETTINGS_MAX_HEADER_LIST_SIZE; a larger
	// request head is answered 431 without calling the handler.
	MaxHeaderListSize uint32
	// StreamWindow and ConnWindow are the receive windows (flow control,
	// RFC 9113 §5.2): what a client may send on a stream, and on the
	// connection, before the handler has read it.
	StreamWindow, ConnWindow uint32
	// IdleTimeout: a connection without an open stream for this long is
	// sent GOAWAY and closed. 0: none.
	IdleTimeout time.Duration
	// WriteTimeout bounds a response write that waits, without a write
	// deadline of the handler's own, for the client's flow-control window
	// or for the connection's buffer to drain: the stream is reset after
	// it. It also bounds the connection's socket writes: one that makes no
	// progress for this long ends the connection, so a client that reads
	// nothing holds it, and what it has queued, no longer. 0: none.
	WriteTimeout time.Duration
	// CountError, when set, is called with a fixed name for each error
	// answered: "conn_" and a reason for one that ends the connection
	// (GOAWAY), "stream_" and a reason for one that resets a stream; for
	// the errors the Framer finds, the reason is the error code's name
	// ("conn_PROTOCOL_ERROR", "stream_FLOW_CONTROL_ERROR"…).
	CountError func(name string)
	// OnPanic, when set, is called on the handler's goroutine with what a
	// handler panicked with (other than http.ErrAbortHandler), and its
	// stack; the stream is reset either way.
	OnPanic func(v any, stack []byte)
}

// Server serves HTTP/2 connections with one handler. Safe for concurrent
// use; its configuration is fixed at New.
type Server struct {
	cfg     Config
	h       http.Handler
	workers workers
	streams sync.Pool // of *stream

	mu    sync.Mutex
	conns map[*conn]struct{} // guarded by mu: connections being served
	shut  bool               // guarded by mu: Shutdown was called

	date atomic.Pointer[dateValue]
}

// New returns a Server calling h for each request stream.
func New(cfg Config, h http.Handler) *Server {
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = 250
	}
	if cfg.MaxReadFrameSize == 0 {
		cfg.MaxReadFrameSize = 16 << 10
	}
	if cfg.MaxHeaderListSize == 0 {
		cfg.MaxHeaderListSize = 1 << 20
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = 256 << 10
	}
	if cfg.ConnWindow < initialWindow {
		cfg.ConnWindow = 1 << 20
	}
	s := &Server{cfg: cfg, h: h, conns: make(map[*conn]struct{})}
	s.workers.init(maxWorkers, workerIdle)
	return s
}

const (
	// maxWorkers bounds the pool's goroutines; a stream beyond them gets a
	// goroutine of its own.
	maxWorkers = 1024
	// workerIdle: a worker without a stream for this long ends.
	workerIdle = 10 * time.Second
)

// ServeConn serves one HTTP/2 connection, whose client preface has not
// been read, until it ends, then closes it. ctx is the parent of every
// stream's request context (its values are theirs). It returns once every
// handler of the connection has.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	c := newConn(s, ctx, nc)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	shut := s.shut
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.serve(shut)
}

// Shutdown sends GOAWAY on every connection, and on every connection
// served from now on; each closes once its streams are done. It also lets
// the workers end once idle.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.shut = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	s.workers.stop()
}

func (s *Server) countError(name string) {
	if s.cfg.CountError != nil {
		s.cfg.CountError(name)
	}
}

// dateValue is a formatted Date field and the second it is of.
type dateValue struct {
	sec int64
	v   string
}

// dateNow is the Date field of a response without one (RFC 9110 §6.6.1),
// formatted once a second.
func (s *Server) dateNow() string {
	now := time.Now()
	if d := s.date.Load(); d != nil && d.sec == now.Unix() {
		return d.v
	}
	d := &dateValue{sec: now.Unix(), v: now.UTC().Format(http.TimeFormat)}
	s.date.Store(d)
	return d.v
}

// workers is a pool of goroutines that run streams one after another, so
// their stacks, once grown, stay. Each ends after idle without a stream or
// once the pool is stopped and its stream is done.
type workers struct {
	jobs chan *stream // unbuffered: a send succeeds only to an idle worker
	quit chan struct{}
	once sync.Once
	n    atomic.Int32 // live workers
	max  int32
	idle time.Duration
}

func (w *workers) init(max int32, idle time.Duration) {
	w.jobs = make(chan *stream)
	w.quit = make(chan struct{})
	w.max, w.idle = max, idle
}

// run serves st on an idle worker, a new one, or (past max) a goroutine
// of its own. It never blocks.
func (w *workers) run(st *stream) {
	select {
	case w.jobs <- st:
		return
	default:
	}
	if w.n.Add(1) <= w.max {
		go w.work(st)
		return
	}
	w.n.Add(-1)
	go st.serve()
}

func (w *workers) work(st *stream) {
	defer w.n.Add(-1)
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		st.serve()
		t.Reset(w.idle)
		select {
		case st = <-w.jobs:
		case <-t.C:
			return
		case <-w.quit:
			return
		}
	}
}

func (w *workers) stop() { w.once.Do(func() { close(w.quit) }) }
