package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newLogger(cfg Config) (*slog.Logger, *Handler, *bytes.Buffer, *clock) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1e9, 0)}
	cfg.Now = c.now
	h := New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), cfg)
	return slog.New(h), h, &buf, c
}

func count(s, sub string) int { return strings.Count(s, sub) }

// A flood of one kind writes its burst, then one line per Every; the rest
// are counted and reported in one line before the next one let through.
// Other kinds keep their own budget.
func TestFloodIsBounded(t *testing.T) {
	log, h, buf, c := newLogger(Config{Burst: 5, Every: time.Second})
	for i := range 10000 {
		log.Info("node joined", "i", i)
	}
	log.Warn("node failed", "node", "a")
	out := buf.String()
	if n := count(out, `msg="node joined"`); n != 5 {
		t.Fatalf("%d join lines written during the flood; want the burst of 5:\n%s", n, out)
	}
	if count(out, `msg="node failed"`) != 1 {
		t.Fatalf("another kind was suppressed by the flood:\n%s", out)
	}
	c.add(time.Second)
	buf.Reset()
	log.Info("node joined", "i", "after")
	out = buf.String()
	if !strings.Contains(out, `level=WARN msg="log lines suppressed" message="node joined" suppressed=9995`) ||
		!strings.Contains(out, "i=after") || strings.Index(out, "suppressed=") > strings.Index(out, "i=after") {
		t.Fatalf("after a second: %q; want the suppressed count, then the line", out)
	}
	buf.Reset()
	log.Info("node joined", "i", "again") // no token left until the next second
	h.Flush()
	if out := buf.String(); !strings.Contains(out, "suppressed=1") || strings.Contains(out, "i=again") {
		t.Fatalf("Flush: %q; want one suppressed line reported", out)
	}
	buf.Reset()
	h.Flush()
	if buf.Len() != 0 {
		t.Fatalf("a second Flush wrote %q", buf.String())
	}
}

// Debug lines are never limited; derived loggers share the budget.
func TestDebugAndDerived(t *testing.T) {
	log, _, buf, _ := newLogger(Config{Burst: 2, Every: time.Hour})
	for range 50 {
		log.Debug("probe failed")
	}
	if n := count(buf.String(), `msg="probe failed"`); n != 50 {
		t.Fatalf("%d of 50 debug lines written", n)
	}
	buf.Reset()
	a, b := log.With("component", "a"), log.WithGroup("g")
	a.Info("x")
	b.Info("x")
	a.Info("x")
	if n := count(buf.String(), `msg=x`); n != 2 {
		t.Fatalf("%d lines of one kind through two derived loggers; want the shared burst of 2:\n%s", n, buf)
	}
}

// Kinds past MaxKinds share one budget: distinct messages cannot grow the
// map without bound.
func TestKindsBounded(t *testing.T) {
	log, h, buf, _ := newLogger(Config{Burst: 1, Every: time.Hour, MaxKinds: 3})
	for i := range 100 {
		log.Info("m" + string(rune('a'+i%26)) + string(rune('a'+i/26)))
	}
	if n := len(h.s.kinds); n > 4 {
		t.Fatalf("%d kinds tracked; want at most MaxKinds+1", n)
	}
	if n := count(buf.String(), "level=INFO"); n != 4 {
		t.Fatalf("%d lines written; want 3 kinds and the overflow's one", n)
	}
}
