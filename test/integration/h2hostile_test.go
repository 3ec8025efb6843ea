package integration

// HTTP/2 attacks beyond rapid reset (issue 19, part 2), each against the
// real binary with x/net/http2's Framer: CONTINUATION floods, HPACK bombs,
// flow-control window overflow, stream-count exhaustion, SETTINGS and PING
// floods. For each: how the connection ends, how long it took, the
// router's CPU and memory, and its goroutines back to their baseline. The
// figures are logged (SECURITY.md has the table).

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// procStat is a process's CPU time (user+system) and resident memory.
type procStat struct {
	cpu time.Duration
	rss int64
}

func statOf(t *testing.T, pid int) procStat {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces): state is field 3;
	// utime and stime are fields 14 and 15, in clock ticks (100 Hz).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s := procStat{cpu: time.Duration(ut+st) * 10 * time.Millisecond}
	sb, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(sb), "\n") {
		if fs := strings.Fields(line); len(fs) >= 2 && fs[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			s.rss = kb << 10
		}
	}
	return s
}

// attack is one hostile client: it writes frames on its connection until
// write reports done (false) or the server ends the connection, with
// reading (frames are read and SETTINGS acknowledged) or without (the
// client never reads: what the server queues must stay bounded).
type attack struct {
	name  string
	read  bool
	write func(h *h2Conn, i int) (more bool, err error)
	// want is how the server must end it: a GOAWAY code, "rst" (a stream
	// reset, connection kept), "431"/"413"/... (a status on stream 1), or
	// "closed" (GOAWAY or close, no matter which).
	want string
	// budget bounds the attack: it stops after this long if the server
	// has not ended it (then want must be "open").
	budget time.Duration
}

// outcome of an attack.
type attackResult struct {
	end     string // "GOAWAY <code>", "RST_STREAM <code>", ":status N", "closed", "open"
	writes  int
	bytes   int64
	took    time.Duration
	cpu     time.Duration
	rssPeak int64 // RSS growth at the end of the attack over the baseline
}

// countingWriter counts what the framer writes.
type countingWriter struct {
	h *h2Conn
	n int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.h.bw.Write(p)
}

func runAttack(t *testing.T, r *router, a attack) attackResult {
	t.Helper()
	h := dialH2C(t, r.http)
	cw := &countingWriter{h: h}
	h.fr = http2.NewFramer(cw, h.Conn)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	h.fr.AllowIllegalWrites = true
	before := statOf(t, r.pid())
	ended := make(chan string, 2)
	if a.read {
		go func() {
			for {
				f, err := h.fr.ReadFrame()
				if err != nil {
					ended <- "closed (" + err.Error() + ")"
					return
				}
				// (SETTINGS are not acknowledged: only the attack writes.)
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					ended <- "GOAWAY " + f.ErrCode.String()
					if len(f.DebugData()) > 0 {
						ended <- fmt.Sprintf("GOAWAY %v %q", f.ErrCode, f.DebugData())
					}
					return
				case *http2.RSTStreamFrame:
					ended <- "RST_STREAM " + f.ErrCode.String()
					return
				case *http2.MetaHeadersFrame:
					if s := f.PseudoValue("status"); f.StreamID == 1 && s != "" {
						ended <- ":status " + s
						return
					}
				}
			}
		}()
	}
	start := time.Now()
	deadline := start.Add(a.budget)
	_ = h.SetWriteDeadline(deadline.Add(5 * time.Second))
	res := attackResult{end: "open"}
	for i := 0; ; i++ {
		select {
		case e := <-ended:
			res.end = e
		default:
		}
		if res.end != "open" || time.Now().After(deadline) {
			break
		}
		more, err := a.write(h, i)
		if err == nil && i%64 == 63 {
			err = h.bw.Flush()
		}
		res.writes++
		if err != nil {
			res.end = "write failed (" + err.Error() + ")"
			break
		}
		if !more {
			if err := h.bw.Flush(); err != nil {
				res.end = "write failed (" + err.Error() + ")"
				break
			}
			// Written: wait for the server's verdict.
			select {
			case e := <-ended:
				res.end = e
			case <-time.After(time.Until(deadline)):
			}
			if !a.read && res.end == "open" {
				// Not reading: the verdict is whether it closed.
				_ = h.SetReadDeadline(time.Now().Add(2 * time.Second))
				var b [1]byte
				for {
					if _, err := h.Read(b[:]); err != nil {
						if !strings.Contains(err.Error(), "timeout") {
							res.end = "closed"
						}
						break
					}
				}
			}
			break
		}
	}
	res.took = time.Since(start)
	res.bytes = cw.n
	after := statOf(t, r.pid())
	res.cpu, res.rssPeak = after.cpu-before.cpu, after.rss-before.rss
	h.Close()
	return res
}

// hdrs encodes fields with enc (the connection's encoder) into a block.
func hdrs(h *h2Conn, fields ...[2]string) []byte {
	h.hb.Reset()
	for _, f := range fields {
		_ = h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return append([]byte(nil), h.hb.Bytes()...)
}

func TestH2HostileFrames(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "hostile.test", nodeOpts{id: "h"})
	waitForNodes(t, r, "hostile.test", 1)
	base := goroutines(t, r)
	get := stdReq("GET", "hostile.test", "/")
	post := stdReq("POST", "hostile.test", "/upload", [2]string{"content-length", "10"})

	attacks := []attack{
		{
			// Each CONTINUATION carries 16 KiB of new literal headers: the
			// decoded list passes --max-header-bytes at once.
			name: "CONTINUATION flood, 16 KiB literals", read: true, want: "closed", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				if i == 0 {
					return true, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(h, get...)})
				}
				var blk bytes.Buffer
				e := hpack.NewEncoder(&blk)
				for blk.Len() < 16000 {
					_ = e.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-%d", blk.Len()), Value: strings.Repeat("v", 200), Sensitive: true})
				}
				return i < 100000, h.fr.WriteContinuation(1, false, blk.Bytes())
			},
		},
		{
			// Empty CONTINUATION frames never end the header block and
			// decode to nothing.
			name: "CONTINUATION flood, empty frames", read: true, want: "GOAWAY ENHANCE_YOUR_CALM", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				if i == 0 {
					return true, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(h, get...)})
				}
				return i < 2000000, h.fr.WriteContinuation(1, false, nil)
			},
		},
		{
			// HPACK table size updates decode to nothing, so the fields
			// never pass --max-header-bytes: the block's bytes are bounded
			// instead (twice the limit).
			name: "CONTINUATION flood, table size updates", read: true, want: "GOAWAY ENHANCE_YOUR_CALM", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				frag := bytes.Repeat([]byte{0x20}, 16000)
				if i == 0 {
					return true, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag})
				}
				return i < 100000, h.fr.WriteContinuation(1, false, frag)
			},
		},
		{
			// One answered GET, then empty DATA frames with END_STREAM on
			// its stream, each answered RST_STREAM STREAM_CLOSED, which the
			// client never reads.
			name: "RST_STREAM answers, never reading", read: false, want: "closed", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				if i == 0 {
					return true, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(h, get...), EndStream: true, EndHeaders: true})
				}
				return i < 4000000, h.fr.WriteData(1, true, nil)
			},
		},
		{
			// One 4000-byte field into the dynamic table, then 12000
			// one-byte references to it: 48 MB decoded from 16 KB, in one
			// HEADERS frame within the 16 KiB SETTINGS_MAX_FRAME_SIZE (a
			// larger frame is a FRAME_SIZE_ERROR before any decoding).
			name: "HPACK bomb, dynamic table references", read: true, want: ":status 431", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				blk := hdrs(h, append(get, [2]string{"x-bomb", strings.Repeat("b", 4000)})...)
				for j := 0; j < 12000; j++ {
					blk = append(blk, 0x80|62) // indexed: dynamic table entry 1 (x-bomb)
				}
				return false, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndStream: true, EndHeaders: true})
			},
		},
		{
			// A Huffman string claiming 16 MB.
			name: "HPACK bomb, huge literal length", read: true, want: "closed", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				blk := hdrs(h, get...)
				blk = append(blk, 0x00, 0x01, 'x', 0x80) // literal, new name "x", a Huffman value of 16 MiB
				blk = appendHpackInt(blk, 7, 16<<20)
				blk = append(blk, bytes.Repeat([]byte{0xff}, 1000)...)
				return false, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndStream: true, EndHeaders: true})
			},
		},
		{
			// A dynamic table size update over SETTINGS_HEADER_TABLE_SIZE.
			name: "HPACK table size update to 1 GiB", read: true, want: "GOAWAY COMPRESSION_ERROR", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				blk := appendHpackInt([]byte{0x20}, 5, 1<<30)
				blk = append(blk, hdrs(h, get...)...)
				return false, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndStream: true, EndHeaders: true})
			},
		},
		{
			name: "10,000 small fields", read: true, want: ":status 431", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				f := append([][2]string(nil), get...)
				for j := 0; j < 10000; j++ {
					f = append(f, [2]string{"a", "b"})
				}
				return false, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(h, f...), EndStream: true, EndHeaders: true})
			},
		},
		{
			name: "connection window overflow", read: true, want: "GOAWAY FLOW_CONTROL_ERROR", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				return i < 1, h.fr.WriteWindowUpdate(0, 1<<31-1)
			},
		},
		{
			name: "stream window overflow", read: true, want: "RST_STREAM FLOW_CONTROL_ERROR", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				switch i {
				case 0:
					return true, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(h, post...), EndHeaders: true})
				case 1:
					return true, h.fr.WriteWindowUpdate(1, 1<<31-1)
				}
				return false, h.fr.WriteWindowUpdate(1, 1<<31-1)
			},
		},
		{
			name: "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1", read: true, want: "GOAWAY FLOW_CONTROL_ERROR", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				return false, h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
			},
		},
		{
			name: "zero WINDOW_UPDATE", read: true, want: "GOAWAY PROTOCOL_ERROR", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) { return false, h.fr.WriteWindowUpdate(0, 0) },
		},
		{
			// DATA past the stream's window while the node does not read
			// (the declared body is larger than what is sent... the handler
			// reads, but no faster than the node takes it).
			name: "DATA past the receive window", read: true, want: "closed", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				if i == 0 {
					return true, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(h, stdReq("POST", "hostile.test", "/slow?ms=5000")...), EndHeaders: true})
				}
				return i < 200, h.fr.WriteData(1, false, make([]byte, 16384))
			},
		},
		{
			// 1000 streams that declare a body and never send it: at most
			// 250 are served at a time (the rest refused), each handler
			// waits at most --timeout for the body.
			name: "1000 streams, bodies never sent", read: true, want: "RST_STREAM REFUSED_STREAM", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				return i < 999, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hdrs(h, post...), EndHeaders: true})
			},
		},
		{
			name: "SETTINGS flood, never reading", read: false, want: "closed", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) { return i < 2000000, h.fr.WriteSettings() },
		},
		{
			name: "PING flood, never reading", read: false, want: "closed", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) { return i < 2000000, h.fr.WritePing(false, [8]byte{}) },
		},
		{
			name: "PING flood, reading the acks", read: true, want: "GOAWAY ENHANCE_YOUR_CALM", budget: 5 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) { return i < 200000, h.fr.WritePing(false, [8]byte{}) },
		},
		{
			name: "SETTINGS with 1000 entries", read: true, want: "GOAWAY PROTOCOL_ERROR", budget: 10 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				s := make([]http2.Setting, 1000)
				for j := range s {
					s[j] = http2.Setting{ID: http2.SettingID(0x100 + j), Val: 1}
				}
				return false, h.fr.WriteSettings(s...)
			},
		},
		{
			name: "PRIORITY flood", read: true, want: "GOAWAY ENHANCE_YOUR_CALM", budget: 5 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				return i < 200000, h.fr.WritePriority(uint32(2*(i%1000)+1), http2.PriorityParam{StreamDep: uint32(2*((i+1)%1000) + 1), Weight: 1})
			},
		},
		{
			name: "empty DATA flood", read: true, want: "GOAWAY ENHANCE_YOUR_CALM", budget: 5 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				if i == 0 {
					return true, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(h, stdReq("POST", "hostile.test", "/upload")...), EndHeaders: true})
				}
				return i < 2000000, h.fr.WriteData(1, false, nil)
			},
		},
		{
			name: "SETTINGS flood, reading the acks", read: true, want: "GOAWAY ENHANCE_YOUR_CALM", budget: 5 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) { return i < 200000, h.fr.WriteSettings() },
		},
		{
			// DATA of padding only: no data for the handler, but x/net
			// returns the padding's flow-control credit with two
			// WINDOW_UPDATE frames each.
			name: "padding-only DATA flood", read: true, want: "closed", budget: 5 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) {
				if i == 0 {
					return true, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdrs(h, stdReq("POST", "hostile.test", "/upload")...), EndHeaders: true})
				}
				return i < 2000000, h.fr.WriteDataPadded(1, false, nil, []byte{0})
			},
		},
		{
			name: "WINDOW_UPDATE flood (+1 each)", read: true, want: "closed", budget: 5 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) { return i < 2000000, h.fr.WriteWindowUpdate(0, 1) },
		},
		{
			name: "unknown frame type flood", read: true, want: "GOAWAY ENHANCE_YOUR_CALM", budget: 5 * time.Second,
			write: func(h *h2Conn, i int) (bool, error) { return i < 2000000, h.fr.WriteRawFrame(0xfa, 0, 0, nil) },
		},
	}
	for _, a := range attacks {
		res := runAttack(t, r, a)
		g := settleGoroutines(t, r, base, 10, a.name)
		t.Logf("%-40s %-32s %8d frames %9d bytes in %7s; router CPU %6s, RSS %+6d KiB; goroutines %d -> %d",
			a.name, res.end, res.writes, res.bytes, res.took.Round(time.Millisecond), res.cpu, res.rssPeak>>10, base, g)
		switch {
		case a.want == "closed" && res.end != "open" && !strings.HasPrefix(res.end, ":status"):
		case res.end == a.want:
		default:
			t.Errorf("%s: %s; want %s", a.name, res.end, a.want)
		}
		if res.rssPeak > 64<<20 {
			t.Errorf("%s: RSS grew by %d MiB; want it bounded", a.name, res.rssPeak>>20)
		}
	}
	// The cuts are counted by their reason.
	for _, typ := range []string{"conn_header_block_too_long", "conn_control_backlog"} {
		if v := metricValue(t, r, `fastrouter_http2_errors_total{type="`+typ+`"}`); v < 1 {
			t.Errorf(`fastrouter_http2_errors_total{type=%q} = %v; want at least 1`, typ, v)
		}
	}
	// Nothing is left behind: every connection's goroutines end.
	g := settleGoroutines(t, r, base, 2, "all the attacks")
	t.Logf("goroutines: %d before the attacks, %d after", base, g)
	// The router serves as before.
	if code, body := getH2(t, r, "hostile.test", "/"); code != 200 || body != "node=h" {
		t.Errorf("after the attacks: %d %q", code, body)
	}
}

// appendHpackInt appends an HPACK integer with an n-bit prefix (RFC 7541
// §5.1) to b, whose last byte holds the prefix's high bits.
func appendHpackInt(b []byte, n uint, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		b[len(b)-1] |= byte(v)
		return b
	}
	b[len(b)-1] |= byte(max)
	v -= max
	for v >= 128 {
		b = append(b, byte(v%128+128))
		v /= 128
	}
	return append(b, byte(v))
}

// getH2 is one h2c GET through the router.
func getH2(t *testing.T, r *router, host, path string) (int, string) {
	t.Helper()
	h := dialH2C(t, r.http)
	defer h.Close()
	if err := h.writeReq(1, stdReq("GET", host, path), true); err != nil {
		t.Fatal(err)
	}
	o := h.await(1, 10*time.Second)
	code, _ := strconv.Atoi(o.status)
	return code, o.body
}

// TestH2StalledBodies: streams that declare a body and never send it (the
// h2 slowloris: up to 250 per connection, each a handler goroutine) are
// answered once --timeout passes without a byte, with or without a
// content-length, while the connection stays open; their goroutines end.
func TestH2StalledBodies(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--timeout", "2s")
	startNode(t, r, "stall.test", nodeOpts{id: "s"})
	waitForNodes(t, r, "stall.test", 1)
	base := goroutines(t, r)
	h := dialH2C(t, r.http)
	const n = 250
	for i := 0; i < n; i++ {
		f := stdReq("POST", "stall.test", "/upload")
		if i%2 == 0 {
			f = append(f, [2]string{"content-length", "10"})
		}
		h.hb.Reset()
		for _, kv := range f {
			_ = h.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: h.hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the 250 stalled streams to be open", func() bool {
		return goroutines(t, r) >= base+n
	})
	start := time.Now()
	statuses := map[string]int{}
	seen := map[uint32]bool{} // streams answered (a status, or a reset without one)
	_ = h.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(seen) < n {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d of %d streams answered (%v): %v", len(seen), n, statuses, err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if !seen[f.StreamID] {
				statuses[f.PseudoValue("status")]++
				seen[f.StreamID] = true
			}
		case *http2.RSTStreamFrame:
			// x/net resets a stream answered before its body ended
			// (NO_ERROR): only a reset without an answer counts.
			if !seen[f.StreamID] {
				statuses["RST_STREAM "+f.ErrCode.String()]++
				seen[f.StreamID] = true
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after %d streams answered; want the connection kept", f.ErrCode, len(seen))
		}
	}
	took := time.Since(start)
	g := settleGoroutines(t, r, base, 5, "the stalled streams")
	t.Logf("250 stalled bodies: answered %v within %s of --timeout 2s; goroutines %d -> %d with the connection still open", statuses, took.Round(time.Millisecond), base, g)
	if statuses["408"] != n {
		t.Errorf("stalled bodies answered %v; want 408 for all %d", statuses, n)
	}
}
