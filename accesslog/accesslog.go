// Package accesslog is the access log's file writer: requests hand it
// complete lines, which it copies into memory; its own goroutine writes them
// out. A request therefore never waits for the disk. When the disk falls so
// far behind that the buffer is full, lines are dropped and counted
// (fastrouter_access_log_dropped_lines_total) rather than stalling traffic.
//
// The file is opened for appending and can be reopened (Reopen, on SIGHUP)
// after logrotate moved it away.
package accesslog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Writer. Zero values take the defaults named on each
// field.
type Config struct {
	// Path is the file to append to; "-" is Stdout. Required.
	Path string
	// Stdout is where "-" writes. Default os.Stdout.
	Stdout io.Writer
	// BufferSize bounds the bytes waiting to be written; a line that does
	// not fit is dropped. Default 1 MiB.
	BufferSize int
	// FlushInterval is how often buffered lines are written even when few.
	// Default 1s.
	FlushInterval time.Duration
	// Logger receives write errors (at most one per flush). Default
	// slog.Default().
	Logger *slog.Logger
	// Registerer receives the writer's metrics. Default: a private registry.
	Registerer prometheus.Registerer
}

// stuckAfter bounds how long Reopen and Close wait for the goroutine, which
// may be blocked in a write to a hung disk: shutdown and SIGHUP must not hang
// with it.
const stuckAfter = 5 * time.Second

// flushAt is how full the buffer gets before the writer goroutine is woken
// ahead of its interval: large writes, few syscalls.
const flushAt = 64 << 10

// Writer is a non-blocking, buffered line writer. Write is safe for
// concurrent use; New starts its goroutine and Close stops it.
type Writer struct {
	cfg Config // immutable after New
	log *slog.Logger

	mu      sync.Mutex
	pending []byte // lines not yet handed to the goroutine; guarded by mu
	closed  bool   // guarded by mu

	// Owned by the writer goroutine (and by Close once it has stopped).
	out   io.Writer
	file  *os.File // nil for stdout
	spare []byte   // the buffer being written while pending fills

	dropped atomic.Uint64 // lines dropped because the buffer was full
	errors  atomic.Uint64 // failed writes

	kick   chan struct{}   // buffered 1: pending passed flushAt; never closed
	reopen chan chan error // Reopen requests; never closed
	stop   chan struct{}   // closed by Close
	done   chan struct{}   // closed when the goroutine has returned
}

// New opens the file and starts the writer goroutine.
func New(cfg Config) (*Writer, error) {
	if cfg.Path == "" {
		return nil, errors.New("accesslog: Config.Path is required")
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 1 << 20
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	w := &Writer{
		cfg:     cfg,
		log:     cfg.Logger,
		pending: make([]byte, 0, min(cfg.BufferSize, flushAt*2)),
		spare:   make([]byte, 0, min(cfg.BufferSize, flushAt*2)),
		kick:    make(chan struct{}, 1),
		reopen:  make(chan chan error),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if err := w.open(); err != nil {
		return nil, err
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fastrouter_access_log_dropped_lines_total",
			Help: "Access-log lines dropped because the log file could not keep up (its buffer was full).",
		}, func() float64 { return float64(w.dropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fastrouter_access_log_write_errors_total",
			Help: "Failed writes to the access-log file (the lines of a failed write are lost).",
		}, func() float64 { return float64(w.errors.Load()) }),
	} {
		if err := cfg.Registerer.Register(c); err != nil {
			w.closeFile()
			return nil, fmt.Errorf("accesslog: metrics: %w", err)
		}
	}
	go w.run()
	return w, nil
}

func (w *Writer) open() error {
	if w.cfg.Path == "-" {
		w.out = w.cfg.Stdout
		return nil
	}
	f, err := os.OpenFile(w.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("accesslog: %w", err)
	}
	w.file, w.out = f, f
	return nil
}

func (w *Writer) closeFile() error {
	if w.file == nil {
		return nil
	}
	err := w.file.Close()
	w.file = nil
	return err
}

// Write queues p, which must be one or more complete lines, and never
// blocks on I/O: when the buffer is full the line is dropped and counted.
// It always reports success, since a lost log line must not fail a request.
// p is copied, not retained.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed || len(w.pending)+len(p) > w.cfg.BufferSize {
		w.mu.Unlock()
		w.dropped.Add(1)
		return len(p), nil
	}
	w.pending = append(w.pending, p...)
	full := len(w.pending) >= flushAt
	w.mu.Unlock()
	if full {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Dropped returns how many lines were dropped so far.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Reopen writes what is buffered, then closes and reopens the file, so
// that lines go to a new file after logrotate renamed the old one. A no-op
// for stdout. If the file cannot be reopened, the old one stays in use.
func (w *Writer) Reopen() error {
	if w.cfg.Path == "-" {
		return nil
	}
	ch := make(chan error, 1)
	stuck := time.NewTimer(stuckAfter)
	defer stuck.Stop()
	select {
	case w.reopen <- ch:
	case <-w.done:
		return errors.New("accesslog: closed")
	case <-stuck.C:
		return errStuck
	}
	select {
	case err := <-ch:
		return err
	case <-stuck.C:
		return errStuck // the reopen still happens when the write returns
	}
}

var errStuck = errors.New("accesslog: the writer is blocked in a write")

// Close writes what is buffered, closes the file and stops the goroutine.
// Lines written after Close are dropped. Safe to call more than once. If
// the goroutine is blocked in a write for longer than stuckAfter, Close
// gives up and leaves it.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	select {
	case <-w.done:
	case <-time.After(stuckAfter):
		return errStuck // the goroutine owns the file until its write returns
	}
	w.flush()
	return w.closeFile()
}

// run is the writer goroutine.
func (w *Writer) run() {
	defer close(w.done)
	t := time.NewTicker(w.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		case <-w.kick:
		case ch := <-w.reopen:
			w.flush()
			ch <- w.reopenFile()
			continue
		}
		w.flush()
	}
}

func (w *Writer) reopenFile() error {
	old := w.file
	if err := w.open(); err != nil {
		return err
	}
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// flush swaps the buffers and writes the full one. Only the goroutine (or
// Close after it stopped) calls it.
func (w *Writer) flush() {
	w.mu.Lock()
	if len(w.pending) == 0 {
		w.mu.Unlock()
		return
	}
	w.pending, w.spare = w.spare[:0], w.pending
	w.mu.Unlock()
	if _, err := w.out.Write(w.spare); err != nil {
		w.errors.Add(1)
		w.log.Error("access log: write failed; lines lost", "path", w.cfg.Path, "bytes", len(w.spare), "err", err)
	}
	w.spare = w.spare[:0]
}
