package router

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/valyala/fasthttp"
)

// eachNodeKind runs f against a router whose pool "k.test" has one node
// answering every request with the raw bytes reply: a uwsgi node, then an
// http node (which closes after each answer).
func eachNodeKind(t *testing.T, reply string, f func(t *testing.T, r *testRouter)) {
	t.Helper()
	t.Run("uwsgi", func(t *testing.T) {
		n := startFakeNode(t, func(map[string]string, []byte) string { return reply })
		r := startRouter(t, Config{})
		r.table.AddStatic("k.test", n.addr(), 1)
		f(t, r)
	})
	t.Run("http", func(t *testing.T) {
		n := startHTTPFake(t, func(*http.Request, []byte, int) (string, bool) { return reply, true })
		r := startRouter(t, Config{})
		r.table.AddStatic("k.test", n.addr(), 1)
		f(t, r)
	})
}

// exchangeRaw writes req (one or more pipelined requests) on a fresh
// connection and reads responses, interim ones included, each with its
// body, until n final ones (or EOF).
func exchangeRaw(t *testing.T, addr, req string, n int) ([]*http.Response, []string) {
	t.Helper()
	c := uwsgitest.Dial(t, addr)
	defer c.Close()
	c.Send(req)
	var resps []*http.Response
	var bodies []string
	for final := 0; final < n; {
		resp, body, err := c.Next("GET")
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatalf("response %d to %.40q: %v", len(resps), req, err)
		}
		resps = append(resps, resp)
		bodies = append(bodies, body)
		if resp.StatusCode >= 200 {
			final++
		}
	}
	return resps, bodies
}

func statuses(rs []*http.Response) []int {
	var s []int
	for _, r := range rs {
		s = append(s, r.StatusCode)
	}
	return s
}

// h2Client speaks h2c with prior knowledge to the router.
func h2Client(t *testing.T) *http.Client {
	t.Helper()
	tr := h2cTransport()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// h2cTransport is net/http's HTTP/2 client with prior knowledge over clear
// text (h2c): the router's h2c front without an HTTP/1.1 upgrade.
func h2cTransport() *http.Transport {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return tr
}

// h2Get GETs path of k.test over h2 and returns the final response, its
// body and the interim responses seen before it.
func h2Get(t *testing.T, c *http.Client, r *testRouter, path string) (*http.Response, string, []int, []http.Header) {
	t.Helper()
	var codes []int
	var hdrs []http.Header
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		codes = append(codes, code)
		hdrs = append(hdrs, http.Header(h))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+r.addr+path, nil)
	req.Host = "k.test"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), codes, hdrs
}

const interimReply = "HTTP/1.1 100 Continue\r\n\r\n" +
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload; as=style\r\nKeep-Alive: timeout=5\r\n\r\n" +
	"HTTP/1.1 102 Processing\r\n\r\n" +
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfinal"

// Interim responses before the final one (RFC 9110 §15.2): 103 and other
// 1xx reach HTTP/1.1 and h2 clients as interim responses, 100 is dropped
// (the router answered Expect itself), and the final response follows. A
// pipelined request is answered with its own responses. HTTP/1.0 clients get
// only the final one.
func TestInterimResponses(t *testing.T) {
	eachNodeKind(t, interimReply, func(t *testing.T, r *testRouter) {
		get := "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n"
		rs, bodies := exchangeRaw(t, r.addr, get+get, 2)
		want := []int{103, 102, 200, 103, 102, 200}
		if got := statuses(rs); len(got) != len(want) || got[0] != 103 || got[1] != 102 || got[2] != 200 || got[5] != 200 {
			t.Fatalf("HTTP/1.1 statuses %v; want %v", got, want)
		}
		if l := rs[0].Header.Get("Link"); l != "</a.css>; rel=preload; as=style" {
			t.Errorf("103 Link = %q", l)
		}
		if v := rs[0].Header.Get("Keep-Alive"); v != "" {
			t.Errorf("103 kept the node's Keep-Alive %q", v)
		}
		if bodies[2] != "final" || bodies[5] != "final" {
			t.Errorf("final bodies %q, %q; want final", bodies[2], bodies[5])
		}

		rs, bodies = exchangeRaw(t, r.addr, "GET / HTTP/1.0\r\nHost: k.test\r\n\r\n", 2)
		if got := statuses(rs); len(got) != 1 || got[0] != 200 || bodies[0] != "final" {
			t.Errorf("HTTP/1.0: statuses %v bodies %q; want one 200 final", got, bodies)
		}

		resp, body, codes, hdrs := h2Get(t, h2Client(t), r, "/")
		if resp.StatusCode != 200 || body != "final" {
			t.Errorf("h2: %d %q; want 200 final", resp.StatusCode, body)
		}
		if len(codes) != 2 || codes[0] != 103 || codes[1] != 102 || hdrs[0].Get("Link") == "" {
			t.Errorf("h2 interim responses %v %v; want 103 (with Link), 102", codes, hdrs)
		}
		if resp.Header.Get("Link") != "" {
			t.Errorf("h2 final response carries the 103's Link")
		}
	})
}

// A node that keeps sending 1xx is answered 502 after maxInterim of them,
// whether it stops or floods; exactly maxInterim is fine.
func TestInterimFlood(t *testing.T) {
	hint := "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
	final := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for _, tc := range []struct {
		name  string
		reply string
		want  int
	}{
		{"max", strings.Repeat(hint, maxInterim) + final, 200},
		{"one more", strings.Repeat(hint, maxInterim+1) + final, 502},
		{"flood", strings.Repeat(hint, 5000) + final, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachNodeKind(t, tc.reply, func(t *testing.T, r *testRouter) {
				rs, _ := exchangeRaw(t, r.addr, "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n", 1)
				got := statuses(rs)
				if len(got) == 0 || got[len(got)-1] != tc.want || len(got) > maxInterim+1 {
					t.Errorf("statuses %v; want at most %d interim then %d", got, maxInterim, tc.want)
				}
			})
		})
	}
}

// A 101 the client did not ask for is a 502, over HTTP/1.1 and h2 (where
// :status 101 does not exist).
func TestUnrequested101(t *testing.T) {
	eachNodeKind(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes", func(t *testing.T, r *testRouter) {
		rs, _ := exchangeRaw(t, r.addr, "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n", 1)
		if got := statuses(rs); len(got) != 1 || got[0] != 502 {
			t.Errorf("HTTP/1.1: statuses %v; want [502]", got)
		}
		resp, _, codes, _ := h2Get(t, h2Client(t), r, "/")
		if resp.StatusCode != 502 || len(codes) != 0 {
			t.Errorf("h2: %d after interim %v; want 502 alone", resp.StatusCode, codes)
		}
	})
}

// A status code must be three digits in 100–999; fasthttp reports a parsed
// 000 as 200.
func TestStatusCodeRange(t *testing.T) {
	for _, line := range []string{"HTTP/1.1 000 X", "HTTP/1.1 000", "HTTP/1.1 099 X", "HTTP/1.1 1000 X",
		"HTTP/1.1 20 X", "HTTP/1.1 2x0 X", "HTTP/1.1 -20 X", "HTTP/1.1 200X"} {
		t.Run(line, func(t *testing.T) {
			eachNodeKind(t, line+"\r\nContent-Length: 2\r\n\r\nok", func(t *testing.T, r *testRouter) {
				resp, _ := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n")
				if resp.StatusCode != 502 {
					t.Errorf("status %d; want 502", resp.StatusCode)
				}
			})
		})
	}
	eachNodeKind(t, "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok", func(t *testing.T, r *testRouter) {
		if resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n"); resp.StatusCode != 999 || body != "ok" {
			t.Errorf("999: %d %q", resp.StatusCode, body)
		}
	})
}

// readAllRaw sends req on a fresh connection and returns everything the
// router sends until it closes.
func readAllRaw(t *testing.T, addr, req string) string {
	t.Helper()
	c := uwsgitest.Dial(t, addr)
	defer c.Close()
	c.Send(req)
	return c.Rest()
}

// A chunked node body reaches an HTTP/1.0 client de-chunked and ended by
// close, without Transfer-Encoding; and a head that is not HTTP/1.1 (uWSGI
// answers an HTTP/1.0 client so, whatever its app chunks) with
// "Transfer-Encoding: chunked" is de-chunked too rather than relayed with
// its chunk framing as the body. Another coding there is a 502.
func TestChunkedNodeBodyFraming(t *testing.T) {
	for _, tc := range []struct{ name, reply string }{
		{"HTTP/1.1 head", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"},
		{"HTTP/1.0 head", "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachNodeKind(t, tc.reply, func(t *testing.T, r *testRouter) {
				got := readAllRaw(t, r.addr, "GET / HTTP/1.0\r\nHost: k.test\r\n\r\n")
				head, body, _ := strings.Cut(got, "\r\n\r\n")
				if strings.Contains(strings.ToLower(head), "transfer-encoding") || body != "hello world" ||
					!strings.Contains(head, "Connection: close") {
					t.Errorf("HTTP/1.0 client got %q; want hello world, close-delimited, no Transfer-Encoding", got)
				}
				resp, b := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n")
				if resp.StatusCode != 200 || b != "hello world" {
					t.Errorf("HTTP/1.1 client: %d %q; want hello world", resp.StatusCode, b)
				}
				resp, b, _, _ = h2Get(t, h2Client(t), r, "/")
				if resp.StatusCode != 200 || b != "hello world" {
					t.Errorf("h2 client: %d %q; want hello world", resp.StatusCode, b)
				}
			})
		})
	}
	eachNodeKind(t, "HTTP/1.0 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", func(t *testing.T, r *testRouter) {
		if resp, _ := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n"); resp.StatusCode != 502 {
			t.Errorf("HTTP/1.0 head with Transfer-Encoding gzip: %d; want 502", resp.StatusCode)
		}
	})
}

// Hop-by-hop headers of the node's response, in any case, do not reach
// the client (RFC 9110 §7.6.1); end-to-end ones do.
func TestHopByHopResponseHeaders(t *testing.T) {
	reply := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n" +
		"Connection: keep-alive, X-Secret\r\nconnection: x-other-secret\r\nKeep-Alive: timeout=5\r\n" +
		"proxy-connection: keep-alive\r\nUpgrade: h2c\r\nTE: trailers\r\nTrailer: X-T\r\n" +
		"X-Secret: 1\r\nX-Other-Secret: 2\r\nX-Kept: yes\r\nSet-Cookie: a=b\r\n\r\nok"
	bad := []string{"Connection", "Keep-Alive", "Proxy-Connection", "Upgrade", "Te", "Trailer", "X-Secret", "X-Other-Secret"}
	check := func(t *testing.T, who string, h http.Header) {
		t.Helper()
		for _, k := range bad {
			if v, ok := h[http.CanonicalHeaderKey(k)]; ok {
				t.Errorf("%s got %s: %q", who, k, v)
			}
		}
		if h.Get("X-Kept") != "yes" || h.Get("Set-Cookie") != "a=b" || h.Get("Content-Type") != "text/plain" {
			t.Errorf("%s lost end-to-end headers: %v", who, h)
		}
	}
	eachNodeKind(t, reply, func(t *testing.T, r *testRouter) {
		rs, bodies := exchangeRaw(t, r.addr, "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n", 1)
		if len(rs) != 1 || rs[0].StatusCode != 200 || bodies[0] != "ok" {
			t.Fatalf("HTTP/1.1: %v %q", statuses(rs), bodies)
		}
		check(t, "HTTP/1.1 client", rs[0].Header)
		resp, body, _, _ := h2Get(t, h2Client(t), r, "/")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("h2: %d %q", resp.StatusCode, body)
		}
		check(t, "h2 client", resp.Header)
	})
}

// An h2 response gets no Content-Type the node did not send (fasthttp's
// default text/plain would otherwise be invented).
func TestH2NoInventedContentType(t *testing.T) {
	eachNodeKind(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", func(t *testing.T, r *testRouter) {
		c := h2Client(t)
		for i := 0; i < 2; i++ { // the second use of the pooled head too
			resp, body, _, _ := h2Get(t, c, r, "/")
			if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("Content-Type") != "" {
				t.Errorf("h2 %d: %d %q Content-Type %q; want none", i, resp.StatusCode, body, resp.Header.Get("Content-Type"))
			}
		}
	})
}

// A uwsgi app's "Connection: close" ends the client's connection after the
// response (as uWSGI's own http router does): a pipelined request is not
// served on it. An http node's "Connection: close" is about the node's
// connection only (as nginx and HAProxy take it): the client's stays open.
func TestNodeConnectionClose(t *testing.T) {
	reply := "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
	get := "GET / HTTP/1.1\r\nHost: k.test\r\n\r\n"
	t.Run("uwsgi", func(t *testing.T) {
		for _, reply := range []string{reply, strings.Replace(reply, "close", "Close", 1), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok"} {
			n := startFakeNode(t, func(map[string]string, []byte) string { return reply })
			r := startRouter(t, Config{})
			r.table.AddStatic("k.test", n.addr(), 1)
			rs, bodies := exchangeRaw(t, r.addr, get+get, 2)
			if len(rs) != 1 || rs[0].StatusCode != 200 || bodies[0] != "ok" || !rs[0].Close {
				t.Errorf("%q: %v %q close=%v; want one 200 that closes the connection", reply, statuses(rs), bodies, len(rs) > 0 && rs[0].Close)
			}
		}
	})
	t.Run("http", func(t *testing.T) {
		n := startHTTPFake(t, func(*http.Request, []byte, int) (string, bool) { return reply, true })
		r := startRouter(t, Config{})
		r.table.AddStatic("k.test", n.addr(), 1)
		rs, bodies := exchangeRaw(t, r.addr, get+get, 2)
		if len(rs) != 2 || bodies[1] != "ok" || rs[0].Close {
			t.Errorf("%v %q; want both pipelined requests answered on one connection", statuses(rs), bodies)
		}
	})
}

// lateBodyNode is an http node that answers HEAD, and GETs of /204 and
// /304, with a head and then, a moment later, a whole response nobody
// asked for; other GETs get "own". It serves each connection in order, as
// servers do.
func lateBodyNode(t *testing.T, late *atomic.Int32) *httpFake {
	smuggled := "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
	lateAfter := func(c *uwsgitest.Conn, head string) {
		io.WriteString(c, head)
		time.Sleep(20 * time.Millisecond)
		io.WriteString(c, smuggled)
		late.Add(1)
	}
	return startHTTPNode(t, func(c *uwsgitest.Conn, r *uwsgitest.Request) {
		switch {
		case r.HTTP.Method == "HEAD":
			lateAfter(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
		case r.HTTP.URL.Path == "/204":
			lateAfter(c, "HTTP/1.1 204 No Content\r\n\r\n")
		case r.HTTP.URL.Path == "/304":
			lateAfter(c, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
		default:
			io.WriteString(c, clReply("own"))
		}
	})
}

// A node's bytes after a response without a body by rule (HEAD, 204, 304)
// must never become another request's response: a HEAD answer's
// connection is not reused, a 204's or 304's only once it stayed quiet.
//
// The node sends its late bytes 20 ms after the head and a 204's
// connection settles for httpSettle (50 ms): on a loaded machine the node
// could be descheduled past the settling time, and the bytes then come on
// a connection already reused, which no check can tell from the answer.
// The router's clock runs 100 times slower here, so the settling time is
// 5 s of the test's; the reuse after it is TestHTTPNodeSettledReuse's.
func TestHTTPNodeLateBodyNotReused(t *testing.T) {
	var late atomic.Int32
	f := lateBodyNode(t, &late)
	began := time.Now()
	slow := func() time.Time { return began.Add(time.Since(began) / 100) }
	r := startRouter(t, Config{Now: slow})
	r.table.AddStatic("k.test", f.addr(), 1)
	for i := 0; i < 20; i++ {
		for _, first := range []string{"HEAD / HTTP/1.1", "GET /204 HTTP/1.1", "GET /304 HTTP/1.1"} {
			resp, _ := raw(t, r.addr, first+"\r\nHost: k.test\r\n\r\n") // a HEAD answer read as one, without a body
			if resp.StatusCode/100 != 2 && resp.StatusCode != 304 {
				t.Fatalf("%s: %d", first, resp.StatusCode)
			}
			// Another client, at once: it must get its own answer.
			if resp, body := raw(t, r.addr, "GET /own HTTP/1.1\r\nHost: k.test\r\n\r\n"); resp.StatusCode != 200 || body != "own" {
				t.Fatalf("run %d, after %s: the next client got %d %q; want its own 200 own", i, first, resp.StatusCode, body)
			}
		}
	}
}

// A 204 or 304 connection that stayed quiet is reused once it settled; one
// the node sent more on meanwhile is dropped then.
func TestHTTPNodeSettledReuse(t *testing.T) {
	var offset atomic.Int64 // the router's clock runs this far ahead
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	var late atomic.Int32
	f := lateBodyNode(t, &late)
	quiet := startHTTPFake(t, func(req *http.Request, _ []byte, _ int) (string, bool) {
		if req.URL.Path == "/204" {
			return "HTTP/1.1 204 No Content\r\n\r\n", false
		}
		return clReply("own"), false
	})
	r := startRouter(t, Config{Now: clock})
	r.table.AddStatic("q.test", quiet.addr(), 1)
	r.table.AddStatic("k.test", f.addr(), 1)
	get := func(host, path string) (int, string) {
		resp, body := raw(t, r.addr, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		return resp.StatusCode, body
	}

	if code, _ := get("q.test", "/204"); code != 204 {
		t.Fatalf("204: %d", code)
	}
	if code, body := get("q.test", "/own"); code != 200 || body != "own" || quiet.Accepted() != 2 {
		t.Fatalf("right after the 204: %d %q, %d connections; want a fresh one", code, body, quiet.Accepted())
	}
	offset.Add(int64(2 * httpSettle))
	if code, body := get("q.test", "/own"); code != 200 || body != "own" || quiet.Accepted() != 2 {
		t.Errorf("after the settling time: %d %q, %d connections; want the 204's reused", code, body, quiet.Accepted())
	}

	if code, _ := get("k.test", "/204"); code != 204 {
		t.Fatalf("204: %d", code)
	}
	waitFor(t, "the node's late bytes", func() bool { return late.Load() == 1 })
	offset.Add(int64(2 * httpSettle))
	if code, body := get("k.test", "/own"); code != 200 || body != "own" || f.Accepted() != 2 {
		t.Errorf("after late bytes: %d %q, %d connections; want own on a fresh one", code, body, f.Accepted())
	}
}

// FuzzScanHead checks scanHead against fasthttp's parser, which reads the
// head after it. Properties: no panic; a head scanned in pieces gives what
// it gives whole; a head fasthttp parses, with a status code in 100–999, is
// never refused by scanHead; and what scanHead accepts and fasthttp parses
// has a code in 100–999.
func FuzzScanHead(f *testing.F) {
	for _, s := range []string{
		interimReply,
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"\r\n\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 000 X\r\n\r\n",
		"HTTP/1.1  200\r\nConnection :close\r\n\r\n",
		"HTTP/1.1 200 OK\nX: y\n\n",
	} {
		f.Add([]byte(s), uint16(7))
	}
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		if len(b) > 8<<10 {
			return
		}
		var whole headScan
		done, ok := whole.feed(b)
		k := int(split) % (len(b) + 1)
		var parts headScan
		d, pok := parts.feed(b[:k])
		if !d && pok {
			d, pok = parts.feed(b)
		}
		if d != done || pok != ok || done && parts.flags != whole.flags {
			t.Fatalf("%q split at %d: %v %v %b; whole: %v %v %b", b, k, d, pok, parts.flags, done, ok, whole.flags)
		}
		br := bufio.NewReaderSize(strings.NewReader(string(b)), 16<<10)
		_, serr := scanHead(br)
		var h fasthttp.ResponseHeader
		perr := h.Read(br)
		code := h.StatusCode()
		if perr == nil && serr != nil && code >= 100 && !zeroStatus(b) {
			t.Fatalf("%q: fasthttp parses status %d, scanHead says %v", b, code, serr)
		}
		if perr == nil && serr == nil && (code < 100 || code > 999) {
			t.Fatalf("%q: accepted with status %d", b, code)
		}
	})
}

// zeroStatus reports a status line (after fasthttp's leading empty lines)
// whose code starts with 0: fasthttp parses it, scanHead refuses it.
func zeroStatus(b []byte) bool {
	s := strings.TrimLeft(string(b), "\r\n")
	_, rest, ok := strings.Cut(s, " ")
	rest = strings.TrimLeft(rest, " ")
	return ok && strings.HasPrefix(rest, "0")
}
