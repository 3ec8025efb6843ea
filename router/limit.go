package router

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connLimit bounds the open client connections of one listener
// (--max-conns). A connection holds its slot from accept until it is
// closed, whatever protocol it turns out to speak. Safe for concurrent use.
type connLimit struct {
	max      int64        // > 0
	open     atomic.Int64 // connections holding a slot
	refusing atomic.Int64 // refusals still lingering (see refuse)
}

// maxRefusing bounds refusals in progress: beyond it an over-limit
// connection is closed without an answer, so a connection flood cannot
// turn refusals into a goroutine flood.
const maxRefusing = 64

// refuseLinger is how long a refused connection is kept open after the 503
// to drain what the client sent, so the kernel does not answer its request
// bytes with a reset that could destroy the 503 before the client reads it.
const refuseLinger = time.Second

// refusal503 is the whole answer to a connection over the limit. It is
// written before any byte of the request is read.
const refusal503 = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\nConnection: close\r\nContent-Length: 43\r\n\r\n" +
	"503 Service Unavailable: too many connections\n"

// admit takes a slot for c and returns c wrapped so that closing it frees
// the slot; ok is false when the listener is full.
func (l *connLimit) admit(c net.Conn) (_ net.Conn, ok bool) {
	if l.open.Add(1) > l.max {
		l.open.Add(-1)
		return nil, false
	}
	return &limitedConn{Conn: c, l: l}, true
}

// refuse answers an over-limit connection. Clear text: a 503 with
// Retry-After, then close (after draining the request briefly, on its own
// goroutine, bounded by maxRefusing). TLS: closed at once; answering would
// cost a handshake, which is what the limit protects.
func (l *connLimit) refuse(c net.Conn, tls bool, now time.Time) {
	if tls || l.refusing.Add(1) > maxRefusing {
		if !tls {
			l.refusing.Add(-1)
		}
		c.Close()
		return
	}
	go func() {
		defer l.refusing.Add(-1)
		defer c.Close()
		_ = c.SetDeadline(now.Add(refuseLinger))
		if _, err := io.WriteString(c, refusal503); err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// limitedConn frees its listener slot when closed (once, however often
// Close is called).
type limitedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}
