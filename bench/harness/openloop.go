package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The open-loop load generator drives one HTTP/1.1 target the way wrk2 does,
// without coordinated omission: request i is due at start + i/rate whatever
// happened to the ones before it, and its latency is measured from that due
// time, so a router that stalls is charged for the queue it builds instead
// of pausing the load. A closed-loop tool (wrk, h2load) waits for answers
// before it sends more and so measures a stall as one slow request.

// requestMix is the fleet's request mix: most requests ask the app for a
// few ms of work (uniform in [minMS, maxMS]), a rare one (slowFrac) for
// slowMS. The sequence is drawn from seed, so every router gets the same.
type requestMix struct {
	minMS, maxMS float64
	slowFrac     float64
	slowMS       float64
	seed         uint64
}

// paths returns n request targets drawn from the mix.
func (m requestMix) paths(n int) []string {
	r := rand.New(rand.NewPCG(m.seed, 21))
	out := make([]string, n)
	for i := range out {
		ms := m.minMS + r.Float64()*(m.maxMS-m.minMS)
		if r.Float64() < m.slowFrac {
			ms = m.slowMS
		}
		out[i] = "/work?ms=" + strconv.FormatFloat(ms, 'f', 2, 64)
	}
	return out
}

// openLoopConfig is one open-loop run.
type openLoopConfig struct {
	addr, host string        // target ip:port and Host header
	rate       float64       // requests per second
	warmup     time.Duration // at rate, not measured
	dur        time.Duration // measured window
	mix        requestMix
	timeout    time.Duration // per request, from its due time
	maxConns   int           // client connections at most (keep-alive, reused)
	// event, when set, runs once at eventAt into the measured window (the
	// fleet scenario kills a node there), on its own goroutine.
	eventAt time.Duration
	event   func()
}

// Failure kinds of a sample.
const (
	okSample     = iota
	failStatus   // an answer other than 2xx
	failConn     // connect refused, reset, EOF before a whole response
	failTimeout  // no whole answer within the timeout
	failKinds    // number of kinds
	unknownNode  = -1
	fleetMaxNode = 16
)

var failNames = [failKinds]string{"ok", "non-2xx", "connection", "timeout"}

// sample is one measured request.
type sample struct {
	due    time.Duration // due time, from the start of the measured window
	lat    time.Duration // from due time to the last byte of the answer (or the failure)
	lag    time.Duration // from due time to the request's first write attempt (the generator's own delay)
	status int           // HTTP status (0 when none arrived)
	fail   uint8
	node   int8 // the node that answered (its "node=N" body), unknownNode if none
}

// openLoopResult is one run's measured window, in due order.
type openLoopResult struct {
	samples []sample
	rate    float64
	// firstErr is the first failure of each kind, as text, for the log.
	firstErr [failKinds]string
}

var errOLTimeout = errors.New("timeout")

// openLoop runs cfg. It returns when every request has answered or timed
// out, at most warmup + dur + timeout + a little after it began.
func openLoop(ctx context.Context, cfg openLoopConfig) (openLoopResult, error) {
	if cfg.rate <= 0 {
		return openLoopResult{}, errors.New("open loop: rate must be positive")
	}
	warmN := int(cfg.rate * cfg.warmup.Seconds())
	n := warmN + int(cfg.rate*cfg.dur.Seconds())
	paths := cfg.mix.paths(n)
	all := make([]sample, n)
	pool := newConnPool(cfg.addr, cfg.maxConns)
	defer pool.closeIdle()
	interval := time.Duration(float64(time.Second) / cfg.rate)
	start := time.Now().Add(20 * time.Millisecond)
	measureStart := start.Add(time.Duration(warmN) * interval)
	var wg sync.WaitGroup
	stopEvent, eventDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(eventDone)
		if cfg.event == nil {
			return
		}
		select {
		case <-time.After(time.Until(measureStart.Add(cfg.eventAt))):
			cfg.event()
		case <-stopEvent:
		}
	}()
	dispatch(ctx, start, interval, n, func(i int, due time.Time) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			all[i] = pool.do(due, cfg.host, paths[i], cfg.timeout)
			all[i].due = due.Sub(measureStart)
		}()
	})
	wg.Wait()
	close(stopEvent)
	<-eventDone // the event's writes are seen by the caller
	if err := ctx.Err(); err != nil {
		return openLoopResult{}, err
	}
	pool.mu.Lock()
	defer pool.mu.Unlock()
	return openLoopResult{samples: all[warmN:], rate: cfg.rate, firstErr: pool.firstErr}, nil
}

// dispatch calls fire(i, due) for i in [0, n) at start + i·interval, from a
// locked OS thread that sleeps with nanosleep(2): the runtime's timers wake
// up to a millisecond late here, which would be charged to every request.
// A call that is late (the thread was descheduled) fires at once; its
// latency still counts from its due time.
func dispatch(ctx context.Context, start time.Time, interval time.Duration, n int, fire func(int, time.Time)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for i := 0; i < n && ctx.Err() == nil; i++ {
			due := start.Add(time.Duration(i) * interval)
			if d := time.Until(due); d > 0 {
				ts := syscall.NsecToTimespec(int64(d))
				_ = syscall.Nanosleep(&ts, nil) // EINTR: fire a little early, harmless
			}
			fire(i, due)
		}
	}()
	<-done
}

// connPool holds the generator's keep-alive connections to one address.
// Safe for concurrent use: idle is a channel, slots counts open
// connections (a token per connection, returned when it closes).
type connPool struct {
	addr  string
	idle  chan *olConn
	slots chan struct{}

	mu       sync.Mutex
	firstErr [failKinds]string // guarded by mu
}

// noteErr keeps the first error of each failure kind.
func (p *connPool) noteErr(kind uint8, err error) {
	p.mu.Lock()
	if p.firstErr[kind] == "" {
		p.firstErr[kind] = err.Error()
	}
	p.mu.Unlock()
}

type olConn struct {
	net.Conn
	br *bufio.Reader
}

func newConnPool(addr string, max int) *connPool {
	return &connPool{addr: addr, idle: make(chan *olConn, max), slots: make(chan struct{}, max)}
}

// get returns an idle connection, or a new one while fewer than max are
// open, or waits for one to come back until deadline.
func (p *connPool) get(deadline time.Time) (*olConn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case c := <-p.idle:
		return c, nil
	case p.slots <- struct{}{}:
		c, err := net.DialTimeout("tcp", p.addr, time.Until(deadline))
		if err != nil {
			<-p.slots
			return nil, err
		}
		return &olConn{Conn: c, br: bufio.NewReaderSize(c, 4096)}, nil
	case <-t.C:
		return nil, errOLTimeout
	}
}

func (p *connPool) put(c *olConn) { p.idle <- c }

func (p *connPool) discard(c *olConn) {
	c.Close()
	<-p.slots
}

func (p *connPool) closeIdle() {
	for {
		select {
		case c := <-p.idle:
			p.discard(c)
		default:
			return
		}
	}
}

// do sends one GET and reads its answer; the sample's times count from due.
func (p *connPool) do(due time.Time, host, path string, timeout time.Duration) sample {
	s := sample{lag: time.Since(due), node: unknownNode}
	deadline := due.Add(timeout)
	finish := func(kind uint8) sample {
		s.lat, s.fail = time.Since(due), kind
		return s
	}
	fail := func(err error) sample {
		s = finish(failKind(err))
		p.noteErr(s.fail, err)
		return s
	}
	c, err := p.get(deadline)
	if err != nil {
		return fail(err)
	}
	_ = c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		p.discard(c)
		return fail(err)
	}
	status, node, keep, err := readAnswer(c.br)
	if err != nil {
		p.discard(c)
		return fail(err)
	}
	if keep {
		p.put(c)
	} else {
		p.discard(c)
	}
	s.status, s.node = status, node
	if status < 200 || status > 299 {
		return finish(failStatus)
	}
	return finish(okSample)
}

func failKind(err error) uint8 {
	var ne net.Error
	if errors.Is(err, errOLTimeout) || (errors.As(err, &ne) && ne.Timeout()) {
		return failTimeout
	}
	return failConn
}

// readAnswer reads one HTTP/1.x response (Content-Length or chunked body)
// and returns its status, the node named in a "node=N" body, and whether
// the connection may carry another request.
func readAnswer(br *bufio.Reader) (status int, node int8, keep bool, err error) {
	node = unknownNode
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, node, false, err
	}
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return 0, node, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(f[1]))
	if err != nil {
		return 0, node, false, fmt.Errorf("bad status line %q", line)
	}
	keep = string(f[0]) == "HTTP/1.1"
	cl, chunked := -1, false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return status, node, false, err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			cl, _ = strconv.Atoi(string(v))
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			if bytes.EqualFold(v, []byte("close")) {
				keep = false
			}
		}
	}
	var body []byte
	switch {
	case chunked:
		body, err = readChunked(br)
	case cl >= 0:
		body = make([]byte, cl)
		_, err = io.ReadFull(br, body)
	default:
		body, err = io.ReadAll(io.LimitReader(br, 1<<20))
		keep = false
	}
	if err != nil {
		return status, node, false, err
	}
	if id, ok := bytes.CutPrefix(body, []byte("node=")); ok {
		if v, err := strconv.Atoi(string(id)); err == nil && v >= 0 && v < fleetMaxNode {
			node = int8(v)
		}
	}
	return status, node, keep, nil
}

// readChunked reads a chunked body (trailers skipped), up to 1 MiB.
func readChunked(br *bufio.Reader) ([]byte, error) {
	var body []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		size, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseInt(string(size), 16, 32)
		if err != nil || n < 0 || len(body)+int(n) > 1<<20 {
			return nil, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for {
				t, err := br.ReadSlice('\n')
				if err != nil {
					return nil, err
				}
				if len(bytes.TrimSpace(t)) == 0 {
					return body, nil
				}
			}
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(br, chunk); err != nil {
			return nil, err
		}
		body = append(body, chunk[:n]...)
	}
}

// latencyStats summarizes a run's successful requests.
type latencyStats struct {
	p50, p99, p999, max float64 // ms
	ok                  int
	fails               [failKinds]int
	perNode             [fleetMaxNode]int
	lagP50, lagP99      float64 // the generator's own delay, ms
}

func summarize(samples []sample) (latencyStats, []float64) {
	var st latencyStats
	lat := make([]float64, 0, len(samples))
	lags := make([]float64, 0, len(samples))
	for _, s := range samples {
		st.fails[s.fail]++
		lags = append(lags, ms(s.lag))
		if s.node >= 0 {
			st.perNode[s.node]++
		}
		if s.fail == okSample {
			lat = append(lat, ms(s.lat))
		}
	}
	st.ok = st.fails[okSample]
	sort.Float64s(lat)
	sort.Float64s(lags)
	st.p50, st.p99, st.p999 = pct(lat, 0.50), pct(lat, 0.99), pct(lat, 0.999)
	if len(lat) > 0 {
		st.max = lat[len(lat)-1]
	}
	st.lagP50, st.lagP99 = pct(lags, 0.50), pct(lags, 0.99)
	return st, lat
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// failed is the number of requests that got no 2xx answer.
func (st latencyStats) failed() int {
	return st.fails[failStatus] + st.fails[failConn] + st.fails[failTimeout]
}

// failText lists the failure kinds that occurred ("" when none).
func (st latencyStats) failText() string {
	var b bytes.Buffer
	for k := failStatus; k < failKinds; k++ {
		if st.fails[k] > 0 {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d %s", st.fails[k], failNames[k])
		}
	}
	return b.String()
}
