// Package lograte limits how many log lines of one kind a process writes,
// so that a flood of input (subscription datagrams, admin calls, failing
// nodes) cannot turn into a flood of log lines that fills the disk or
// buries the lines that matter. It is a log/slog Handler that wraps the
// one that writes.
//
// Records are counted per message (the constant text of a log call, so
// the number of kinds is small and bounded): each kind may write Burst
// lines at once and then one per Every. The records of a kind past its
// budget are dropped and counted; the next line of that kind let through,
// or the next Flush, is preceded by one WARN line saying how many were
// suppressed:
//
//	level=WARN msg="log lines suppressed" message="node joined" suppressed=4211
//
// Debug records are never limited: an operator who turns debug on asks
// for every line.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultBurst    = 100
	DefaultEvery    = 100 * time.Millisecond // 10 lines a second per kind once the burst is spent
	DefaultMaxKinds = 1024
)

// SuppressedMessage is the message of the line that reports dropped ones.
const SuppressedMessage = "log lines suppressed"

// Config configures a Handler. The zero value uses the defaults.
type Config struct {
	// Burst is how many lines of one kind may be written at once.
	Burst int
	// Every is how often a kind earns one more line once its burst is spent.
	Every time.Duration
	// MaxKinds bounds the kinds tracked; records of further kinds share
	// one budget.
	MaxKinds int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler is the rate-limiting slog.Handler. Handlers derived with
// WithAttrs and WithGroup share their parent's budgets. Safe for
// concurrent use.
type Handler struct {
	next slog.Handler // this handler's view (attrs, groups) of the writer
	s    *state
}

// state is shared by a Handler and the handlers derived from it.
type state struct {
	cfg  Config
	root slog.Handler // the writer as passed to New, for Flush

	mu    sync.Mutex // guards kinds
	kinds map[string]*budget
}

// budget is one kind's token bucket. Guarded by state.mu.
type budget struct {
	tokens     float64
	last       time.Time
	suppressed uint64
}

// overflowKind is the shared budget of the kinds past MaxKinds.
const overflowKind = "\x00overflow"

// New returns a Handler that writes through next.
func New(next slog.Handler, cfg Config) *Handler {
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.MaxKinds <= 0 {
		cfg.MaxKinds = DefaultMaxKinds
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Handler{next: next, s: &state{cfg: cfg, root: next, kinds: map[string]*budget{}}}
}

// Enabled is the writer's.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle writes r unless its kind is over budget.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return h.next.Handle(ctx, r)
	}
	allowed, suppressed := h.s.take(r.Message)
	if !allowed {
		return nil
	}
	if suppressed > 0 {
		_ = h.next.Handle(ctx, summary(r.Message, suppressed, h.s.cfg.Now()))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a handler with the attributes added, sharing h's
// budgets.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), s: h.s}
}

// WithGroup returns a handler with the group opened, sharing h's budgets.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), s: h.s}
}

// Flush writes the count of every kind's suppressed lines now, rather
// than before its next line: call it now and then (the app does, every few
// seconds) and before exiting.
func (h *Handler) Flush() {
	s := h.s
	type pending struct {
		msg string
		n   uint64
	}
	var out []pending
	s.mu.Lock()
	for msg, b := range s.kinds {
		if b.suppressed > 0 {
			out = append(out, pending{msg, b.suppressed})
			b.suppressed = 0
		}
	}
	s.mu.Unlock()
	now := s.cfg.Now()
	for _, p := range out {
		_ = s.root.Handle(context.Background(), summary(p.msg, p.n, now))
	}
}

// take spends one line of msg's budget. It reports whether the line may
// be written and, if so, how many lines of its kind were suppressed since
// the last one written (their count is then reset).
func (s *state) take(msg string) (allowed bool, suppressed uint64) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.kinds[msg]
	if b == nil {
		if len(s.kinds) >= s.cfg.MaxKinds {
			msg = overflowKind
			b = s.kinds[msg]
		}
		if b == nil {
			b = &budget{tokens: float64(s.cfg.Burst), last: now}
			s.kinds[msg] = b
		}
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(s.cfg.Burst), b.tokens+float64(el)/float64(s.cfg.Every))
		b.last = now
	}
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}

func summary(msg string, n uint64, now time.Time) slog.Record {
	if msg == overflowKind {
		msg = "(other messages)"
	}
	r := slog.NewRecord(now, slog.LevelWarn, SuppressedMessage, 0)
	r.AddAttrs(slog.String("message", msg), slog.Uint64("suppressed", n))
	return r
}
