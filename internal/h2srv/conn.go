package h2srv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// initialWindow is the flow-control window of the protocol's initial
	// settings (RFC 9113 §6.9.2).
	initialWindow = 65535
	maxWindow     = 1<<31 - 1
	// outFlush: once this much is queued, the writer is woken whether or
	// not a handler has reached a flush point.
	outFlush = 32 << 10
	// outMax: past this much queued, response DATA waits for the writer
	// (a client that does not read cannot make the router buffer more).
	outMax = 256 << 10
	// outCtrlMax: past this much queued after a frame was processed, the
	// connection ends (backlogged): the client sends faster than it reads.
	outCtrlMax = 1 << 20
	// linger is how long a closing connection keeps reading (and
	// discarding) after its last frame, so the client gets the GOAWAY
	// before the close and not a reset.
	linger = time.Second
	// prefaceTimeout bounds the wait for the client preface and SETTINGS.
	prefaceTimeout = 10 * time.Second
	// creditMin: a WINDOW_UPDATE is sent once this much was consumed, or
	// the window left is smaller than what was consumed.
	creditMin = 4 << 10
	// maxSettings: a SETTINGS frame with more entries is refused; there
	// are seven settings (RFC 9113 §6.5.2, RFC 8441 §3), and repeating
	// them over and over only costs the router work.
	maxSettings = 100
)

// conn is one served connection. The reading goroutine (serve) owns fr
// and the frame processing; everything under mu is shared with the
// handlers and the writer.
type conn struct {
	srv    *Server
	nc     net.Conn
	ctx    context.Context
	remote string
	tls    *tls.ConnectionState
	fr     *http2.Framer // reading; serve's goroutine only
	br     blockReader   // what fr reads from; serve's goroutine only
	wrenew time.Time     // when the write deadline is next renewed; the writer's only (write)
	wg     sync.WaitGroup

	mu      sync.Mutex
	work    sync.Cond // on mu: the writer waits for out to fill or closed
	drained sync.Cond // on mu: waits for out to empty
	// out is the frames queued for the writer; wfr frames into it, enc
	// codes header blocks into hbuf. All under mu: header blocks must go
	// out in the order they were coded (RFC 7541 §2.2).
	out, spare []byte
	wfr        *http2.Framer
	enc        *hpack.Encoder
	hbuf       bytes.Buffer
	writing    bool  // the writer has a batch in flight
	closed     bool  // nothing more is written or read; streams fail
	werr       error // the write that failed

	streams   map[uint32]*stream
	maxID     uint32 // highest client stream ID seen
	goAwayID  uint32 // when goingAway: streams above it are ignored
	goingAway bool   // GOAWAY queued
	lastIdle  time.Time
	idleTimer *time.Timer

	sendWindow   int64 // the client's connection window
	peerWindow   int32 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32
	recvAvail    int64     // what the client may still send on the connection
	recvUnsent   int64     // consumed, not yet given back
	spaceWaiters int       // streams waiting for out to drain
	recentResets [8]uint32 // streams the client reset lately (closedByClientLocked)
	nextReset    int
	canonCache   map[string]string
	lowerCache   map[string]string
}

func newConn(s *Server, ctx context.Context, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, ctx: ctx, streams: make(map[uint32]*stream),
		sendWindow: initialWindow, peerWindow: initialWindow, peerMaxFrame: 16 << 10,
		recvAvail: int64(s.cfg.ConnWindow)}
	if a := nc.RemoteAddr(); a != nil {
		c.remote = a.String()
	}
	if ts, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		cs := ts.ConnectionState()
		c.tls = &cs
	}
	c.work.L, c.drained.L = &c.mu, &c.mu
	// Twice the list, as the Framer allows a block's encoded bytes
	// (which can be longer than the fields, RFC 7541 §5.2), and 16 frames
	// at least.
	c.br = blockReader{r: nc, budget: 2*int64(s.cfg.MaxHeaderListSize) + 16*blockFrameMin}
	c.fr = http2.NewFramer(nil, &c.br)
	c.fr.SetMaxReadFrameSize(s.cfg.MaxReadFrameSize)
	c.fr.MaxHeaderListSize = s.cfg.MaxHeaderListSize
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.SetReuseFrames()
	c.wfr = http2.NewFramer(outWriter{c}, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	return c
}

// outWriter appends what wfr writes to out (mu held).
type outWriter struct{ c *conn }

func (w outWriter) Write(p []byte) (int, error) {
	w.c.out = append(w.c.out, p...)
	return len(p), nil
}

// connError is a connection error (RFC 9113 §5.4.1): GOAWAY with code.
type connError struct {
	code http2.ErrCode
	name string // for CountError
}

func (e connError) Error() string { return "h2: connection error " + e.code.String() + ": " + e.name }

// serve reads and processes frames until the connection ends, then shuts
// it down in order: GOAWAY if the end is an error of the protocol, what is
// queued written, a short linger, the streams cancelled, the socket
// closed, the handlers and the writer waited for.
func (c *conn) serve(shut bool) {
	s := c.srv
	if !c.readPreface() {
		c.nc.Close()
		return
	}
	c.wg.Add(1)
	go c.writeLoop()
	c.mu.Lock()
	_ = c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: s.cfg.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: s.cfg.MaxReadFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: s.cfg.MaxHeaderListSize},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: s.cfg.StreamWindow},
		http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1},
	)
	if d := s.cfg.ConnWindow - initialWindow; d > 0 {
		_ = c.wfr.WriteWindowUpdate(0, d)
	}
	c.lastIdle = time.Now()
	if s.cfg.IdleTimeout > 0 {
		c.idleTimer = time.AfterFunc(s.cfg.IdleTimeout, c.idleCheck)
	}
	c.work.Signal()
	c.mu.Unlock()
	if shut {
		c.goAway()
	}
	err := c.readLoop()
	c.end(err)
}

// readPreface reads the client preface (RFC 9113 §3.4); false when it is
// not one. Over TLS, an HTTP/2 connection needs TLS 1.2 or later (§9.2).
func (c *conn) readPreface() bool {
	if c.tls != nil && c.tls.Version < tls.VersionTLS12 {
		c.srv.countError("conn_tls_version")
		return false
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var b [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.nc, b[:]); err != nil || string(b[:]) != http2.ClientPreface {
		c.srv.countError("conn_bad_preface")
		return false
	}
	return true
}

func (c *conn) readLoop() error {
	first := true
	for {
		if c.backlogged() { // after the previous frame, whatever it was
			return connError{http2.ErrCodeEnhanceYourCalm, "conn_control_backlog"}
		}
		f, err := c.fr.ReadFrame()
		if first && err == nil {
			// The preface's SETTINGS must come first (RFC 9113 §3.4).
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				return connError{http2.ErrCodeProtocol, "conn_first_not_settings"}
			}
			c.mu.Lock()
			if !c.goingAway { // else the deadline is closeIfIdleLocked's
				_ = c.nc.SetReadDeadline(time.Time{})
			}
			c.mu.Unlock()
			first = false
		}
		if err != nil {
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se):
				c.mu.Lock()
				if se.StreamID > c.maxID && se.Cause == nil {
					// A frame the Framer refused without decoding it (a
					// WINDOW_UPDATE of 0, a HEADERS frame padded past its
					// end) on an idle stream: a connection error (RFC 9113
					// §5.1, §6.2).
					c.mu.Unlock()
					return connError{http2.ErrCodeProtocol, "conn_stream_error_idle"}
				}
				if se.StreamID%2 == 1 && se.StreamID > c.maxID && f == nil {
					c.maxID = se.StreamID // a header block refused: the stream is closed, not idle
				}
				c.resetLocked(se.StreamID, se.Code, "stream_"+codeName(se.Code))
				c.mu.Unlock()
				continue
			case errors.As(err, &ce):
				return connError{http2.ErrCode(ce), "conn_" + codeName(http2.ErrCode(ce))}
			case errors.Is(err, http2.ErrFrameTooLarge):
				return connError{http2.ErrCodeFrameSize, "conn_frame_too_large"}
			case errors.Is(err, errBlockTooLong):
				return connError{http2.ErrCodeEnhanceYourCalm, "conn_header_block_too_long"}
			}
			return err
		}
		if err := c.process(f); err != nil {
			return err
		}
	}
}

// backlogged reports a client that sends faster than it reads: past
// outCtrlMax queued, the answers the reader queues (SETTINGS and PING
// acknowledgements, RST_STREAM for frames on closed streams,
// WINDOW_UPDATE) would pile up without bound. Response data waits below
// outMax, so it cannot cause this alone.
func (c *conn) backlogged() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out) > outCtrlMax
}

func (c *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		c.mu.Lock()
		_ = c.wfr.WritePing(true, f.Data)
		c.work.Signal()
		c.mu.Unlock()
		return nil
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PriorityFrame:
		// Parsed and checked, otherwise ignored (RFC 9113 §5.3.2).
		if f.StreamDep == f.StreamID {
			c.mu.Lock()
			c.resetLocked(f.StreamID, http2.ErrCodeProtocol, "stream_priority_self")
			c.mu.Unlock()
		}
		return nil
	case *http2.GoAwayFrame:
		c.goAway() // the client leaves: no new streams, close once done
		return nil
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "conn_push_promise"}
	case *http2.ContinuationFrame, *http2.HeadersFrame:
		return connError{http2.ErrCodeProtocol, "conn_continuation"}
	}
	return nil // unknown frame types are ignored (RFC 9113 §5.5)
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if f.NumSettings() > maxSettings {
		return connError{http2.ErrCodeProtocol, "conn_settings_too_many"}
	}
	if err := f.ForeachSetting(func(st http2.Setting) error { return st.Valid() }); err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return connError{http2.ErrCode(ce), "conn_bad_setting"}
		}
		return connError{http2.ErrCodeProtocol, "conn_bad_setting"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Repeated settings apply in order (RFC 9113 §6.5.3).
	err := f.ForeachSetting(func(st http2.Setting) error {
		switch st.ID {
		case http2.SettingInitialWindowSize:
			d := int64(st.Val) - int64(c.peerWindow)
			for _, s := range c.streams {
				s.sendWindow += d
				if s.sendWindow > maxWindow {
					return connError{http2.ErrCodeFlowControl, "conn_window_overflow"}
				}
				s.wakeWrite()
			}
			c.peerWindow = int32(st.Val)
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = st.Val
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSize(st.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_ = c.wfr.WriteSettingsAck()
	c.work.Signal()
	return nil
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > maxWindow {
			return connError{http2.ErrCodeFlowControl, "conn_window_overflow"}
		}
		for _, s := range c.streams {
			s.wakeWrite()
		}
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxID {
			return connError{http2.ErrCodeProtocol, "conn_window_update_idle"}
		}
		return nil // closed: ignored (RFC 9113 §5.1)
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > maxWindow {
		c.resetLocked(f.StreamID, http2.ErrCodeFlowControl, "stream_window_overflow")
		return nil
	}
	st.wakeWrite()
	return nil
}

func (c *conn) processReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxID {
			return connError{http2.ErrCodeProtocol, "conn_reset_idle"}
		}
		return nil
	}
	st.abortLocked(errStreamReset)
	st.resetRecv = true
	c.recentResets[c.nextReset%len(c.recentResets)] = f.StreamID
	c.nextReset++
	return nil
}

// closedByClientLocked reports a stream the client reset lately: a frame
// on it other than PRIORITY, WINDOW_UPDATE or RST_STREAM is a
// STREAM_CLOSED error (RFC 9113 §5.1), not a stream ID gone down.
func (c *conn) closedByClientLocked(id uint32) bool {
	for _, r := range c.recentResets {
		if r == id {
			return true
		}
	}
	return false
}

func (c *conn) processData(f *http2.DataFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := f.StreamID
	n := int64(f.Length) // padding included (RFC 9113 §6.9.1)
	if n > c.recvAvail {
		return connError{http2.ErrCodeFlowControl, "conn_flow_control"}
	}
	c.recvAvail -= n
	st := c.streams[id]
	if st == nil || st.remoteDone || st.aborted {
		if st == nil && id > c.maxID {
			return connError{http2.ErrCodeProtocol, "conn_data_idle"}
		}
		c.creditLocked(n)
		if st != nil && st.aborted && !st.resetRecv {
			return nil // reset by us already: the client will stop
		}
		c.srv.countError("stream_data_closed")
		_ = c.wfr.WriteRSTStream(id, http2.ErrCodeStreamClosed)
		c.work.Signal()
		return nil
	}
	if n > st.recvAvail {
		c.creditLocked(n)
		c.resetLocked(id, http2.ErrCodeFlowControl, "stream_flow_control")
		return nil
	}
	st.recvAvail -= n
	data := f.Data()
	if pad := n - int64(len(data)); pad > 0 {
		c.creditLocked(pad)
		st.creditLocked(pad)
	}
	st.received += int64(len(data))
	if st.declared >= 0 && st.received > st.declared {
		c.creditLocked(int64(len(data)))
		c.resetLocked(id, http2.ErrCodeProtocol, "stream_body_too_long")
		return nil
	}
	if st.bodyClosed {
		c.creditLocked(int64(len(data)))
	} else if len(data) > 0 {
		st.rbuf = append(st.rbuf, data...)
		st.wakeRead()
	}
	if f.StreamEnded() {
		c.endRemoteLocked(st)
	}
	return nil
}

// endRemoteLocked records the client's END_STREAM on st.
func (c *conn) endRemoteLocked(st *stream) {
	if st.declared >= 0 && st.received != st.declared {
		c.resetLocked(st.id, http2.ErrCodeProtocol, "stream_body_short")
		return
	}
	st.remoteDone = true
	st.rerr = io.EOF
	st.wakeRead()
}

// creditLocked gives n bytes of the connection's receive window back to
// the client, in WINDOW_UPDATEs of at least creditMin.
func (c *conn) creditLocked(n int64) {
	if n <= 0 {
		return
	}
	c.recvUnsent += n
	if c.recvUnsent >= creditMin || c.recvUnsent >= c.recvAvail {
		_ = c.wfr.WriteWindowUpdate(0, uint32(c.recvUnsent))
		c.recvAvail += c.recvUnsent
		c.recvUnsent = 0
		c.work.Signal()
	}
}

// resetLocked sends RST_STREAM with code on stream id and, if it is open,
// aborts it: its handler's reads and writes fail, its context ends. name,
// unless "", is counted (CountError).
func (c *conn) resetLocked(id uint32, code http2.ErrCode, name string) {
	if c.closed {
		return
	}
	if name != "" {
		c.srv.countError(name)
	}
	st := c.streams[id]
	if st != nil {
		if st.aborted {
			return
		}
		st.abortLocked(errStreamReset)
	}
	_ = c.wfr.WriteRSTStream(id, code)
	c.work.Signal()
}

// goAway starts a graceful close: GOAWAY NO_ERROR with the last stream
// accepted; the connection closes once its streams are done.
func (c *conn) goAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway || c.closed {
		return
	}
	c.goingAway = true
	c.goAwayID = c.maxID
	_ = c.wfr.WriteGoAway(c.maxID, http2.ErrCodeNo, nil)
	c.work.Signal()
	c.closeIfIdleLocked()
}

// closeIfIdleLocked ends the reading once GOAWAY is out and no stream is
// left: serve then closes the connection.
func (c *conn) closeIfIdleLocked() {
	if c.goingAway && len(c.streams) == 0 {
		_ = c.nc.SetReadDeadline(time.Now())
	}
}

// idleCheck runs on the idle timer: a connection without a stream since
// IdleTimeout is sent GOAWAY.
func (c *conn) idleCheck() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	idle := c.srv.cfg.IdleTimeout
	left := idle
	if len(c.streams) == 0 {
		left = idle - time.Since(c.lastIdle)
	}
	if left > 0 {
		c.idleTimer.Reset(left)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.goAway()
}

// end shuts the connection down after the reading ended with err.
func (c *conn) end(err error) {
	var ce connError
	c.mu.Lock()
	if errors.As(err, &ce) && !c.closed {
		c.srv.countError(ce.name)
		_ = c.wfr.WriteGoAway(c.maxID, ce.code, nil)
		c.goingAway = true
		c.work.Signal()
	}
	// Let the writer drain what is queued, for at most linger (the
	// socket's write timeout bounds each write anyway).
	cut := time.AfterFunc(linger, func() { c.nc.Close() })
	for (len(c.out) > 0 || c.writing) && !c.closed {
		c.drained.Wait()
	}
	cut.Stop()
	c.mu.Unlock()
	if c.goingAway {
		// Read until the client closes, or linger, so the close does not
		// turn into a reset that drops the GOAWAY on the way.
		// A reader that fails at once (the caller's flood guard) makes
		// this a plain wait: the client's writes then stall, not fail.
		dl := time.Now().Add(linger)
		_ = c.nc.SetReadDeadline(dl)
		if _, err := io.Copy(io.Discard, c.nc); err != nil {
			if d := time.Until(dl); d > 0 {
				time.Sleep(d)
			}
		}
	}
	c.mu.Lock()
	c.closed = true
	for _, st := range c.streams {
		st.abortLocked(errConnClosed)
	}
	c.work.Broadcast()
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	c.nc.Close()
	c.wg.Wait()
}

// writeLoop is the connection's only writer to the socket: it writes
// whatever has been queued since its previous write.
func (c *conn) writeLoop() {
	defer c.wg.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.out) == 0 && !c.closed {
			c.drained.Broadcast()
			c.work.Wait()
		}
		if c.closed {
			c.drained.Broadcast()
			return
		}
		buf := c.out
		c.out = c.spare[:0]
		c.writing = true
		c.mu.Unlock()
		err := c.write(buf)
		c.mu.Lock()
		c.writing = false
		if cap(buf) <= 2*outMax {
			c.spare = buf[:0]
		}
		if err != nil {
			c.werr = err
			c.closed = true
			for _, st := range c.streams {
				st.abortLocked(errConnClosed)
			}
			c.drained.Broadcast()
			c.nc.Close() // the reader ends too
			return
		}
		if c.spaceWaiters > 0 && len(c.out) < outMax {
			for _, st := range c.streams {
				if st.waitSpace {
					st.wakeWrite()
				}
			}
		}
	}
}

// write writes p to the socket. With a WriteTimeout, a write that makes
// no progress for that long fails, and the connection with it: a client
// that reads nothing holds the writer, and what is queued, no longer.
// Rather than set the deadline before and clear it after every write (a
// runtime timer moved twice per write), write renews it once a quarter of
// WriteTimeout has passed, so a stalled write is cut after between ¾ and
// all of it. A write the deadline stops after some progress goes on with
// a fresh one (over TLS it cannot: crypto/tls fails the connection).
// Writer's goroutine only.
func (c *conn) write(p []byte) error {
	wt := c.srv.cfg.WriteTimeout
	if wt <= 0 {
		_, err := c.nc.Write(p)
		return err
	}
	for {
		if now := time.Now(); !now.Before(c.wrenew) {
			if err := c.nc.SetWriteDeadline(now.Add(wt)); err != nil {
				return err
			}
			c.wrenew = now.Add(wt / 4)
		}
		n, err := c.nc.Write(p)
		p = p[n:]
		if err == nil || n == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		c.wrenew = time.Time{}
	}
}

// streamDone removes st, whose handler has returned, from the connection.
func (c *conn) streamDoneLocked(st *stream) {
	delete(c.streams, st.id)
	if len(c.streams) == 0 {
		c.lastIdle = time.Now()
		c.closeIfIdleLocked()
	}
}
