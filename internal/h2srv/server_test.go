package h2srv

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// serve starts a Server with h on a loopback listener; it is shut down,
// and its connections waited for, when the test ends.
func serve(t *testing.T, cfg Config, h http.HandlerFunc) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, h)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.ServeConn(context.Background(), c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.Shutdown()
		waitFor(t, &wg, 10*time.Second, "the server's connections to end")
	})
	return s, ln.Addr().String()
}

// waitFor waits for wg, at most d: a handler or a connection that does not
// end is a failure of the test, with the goroutines' stacks, not a hang.
func waitFor(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Errorf("waited %v for %s; goroutines:\n%s", d, what, buf[:runtime.Stack(buf, true)])
	}
}

// client is a bare framer on a connection to the server.
type client struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dial(t *testing.T, addr string, settings ...http2.Setting) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	cl := &client{t: t, c: c, fr: http2.NewFramer(c, c)}
	cl.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cl.enc = hpack.NewEncoder(&cl.hb)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := cl.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return cl
}

func (cl *client) headers(id uint32, end bool, fields ...string) {
	cl.t.Helper()
	cl.hb.Reset()
	for i := 0; i < len(fields); i += 2 {
		_ = cl.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		cl.t.Fatal(err)
	}
}

func (cl *client) get(id uint32, path string) {
	cl.headers(id, true, ":method", "GET", ":scheme", "http", ":authority", "a.test", ":path", path)
}

// next reads frames until one of stream id (or a GOAWAY) and returns it.
// Frames of other streams and the server's SETTINGS are skipped.
func (cl *client) next(id uint32) http2.Frame {
	cl.t.Helper()
	for {
		f, err := cl.fr.ReadFrame()
		if err != nil {
			cl.t.Fatalf("reading stream %d: %v", id, err)
		}
		if _, ok := f.(*http2.GoAwayFrame); ok || f.Header().StreamID == id {
			return f
		}
	}
}

// goAway reads frames until a GOAWAY, which it returns (nil if the
// connection ends first).
func (cl *client) goAway() *http2.GoAwayFrame {
	for {
		f, err := cl.fr.ReadFrame()
		if err != nil {
			return nil
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return ga
		}
	}
}

// response reads stream id's response to its end: status, body, and the
// RST_STREAM code if it was reset instead.
func (cl *client) response(id uint32) (status string, body string, rst *http2.ErrCode) {
	cl.t.Helper()
	var b bytes.Buffer
	for {
		switch f := cl.next(id).(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s[0] != '1' {
				status = s
			}
			if f.StreamEnded() {
				return status, b.String(), nil
			}
		case *http2.DataFrame:
			b.Write(f.Data())
			if f.StreamEnded() {
				return status, b.String(), nil
			}
		case *http2.RSTStreamFrame:
			code := f.ErrCode
			return status, b.String(), &code
		case *http2.GoAwayFrame:
			cl.t.Fatalf("GOAWAY %v waiting for stream %d", f.ErrCode, id)
		}
	}
}

// TestServeGet: a GET gets its status, headers, a Date, and its body in
// one DATA frame with END_STREAM; the handler sees the request as
// net/http's HTTP/2 server would make it.
func TestServeGet(t *testing.T) {
	_, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen", r.Method+" "+r.RequestURI+" "+r.Host+" "+r.Proto+" "+r.Header.Get("Cookie")+" "+strconv.FormatInt(r.ContentLength, 10))
		_, _ = io.WriteString(w, "hello")
	})
	cl := dial(t, addr)
	cl.headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a.test", ":path", "/p?q=1", "cookie", "a=1", "cookie", "b=2")
	var seen string
	for {
		switch f := cl.next(1).(type) {
		case *http2.MetaHeadersFrame:
			for _, hf := range f.RegularFields() {
				if hf.Name == "x-seen" {
					seen = hf.Value
				}
				if hf.Name == "date" && hf.Value == "" {
					t.Error("empty Date")
				}
			}
			if f.PseudoValue("status") != "200" {
				t.Errorf("status %q", f.PseudoValue("status"))
			}
		case *http2.DataFrame:
			if string(f.Data()) != "hello" || !f.StreamEnded() {
				t.Errorf("DATA %q end %v; want one frame, hello, END_STREAM", f.Data(), f.StreamEnded())
			}
			if want := "GET /p?q=1 a.test HTTP/2.0 a=1; b=2 0"; seen != want {
				t.Errorf("handler saw %q; want %q", seen, want)
			}
			return
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
}

// TestServeUploadFlowControl: a body larger than the stream's and the
// connection's windows gets through as the handler reads it: the server
// gives the window back as it is consumed.
func TestServeUploadFlowControl(t *testing.T) {
	_, addr := serve(t, Config{StreamWindow: 64 << 10, ConnWindow: 128 << 10}, func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, strconv.FormatInt(n, 10)+" "+strconv.FormatBool(err == nil))
	})
	cl := dial(t, addr)
	const size = 1 << 20
	cl.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a.test", ":path", "/", "content-length", strconv.Itoa(size))
	// The server's windows as the client sees them: the initial 65535
	// until its SETTINGS and WINDOW_UPDATE are read.
	stream, conn := int64(65535), int64(65535)
	chunk := make([]byte, 16<<10)
	for sent := 0; sent < size; {
		n := min(int64(len(chunk)), stream, conn, int64(size-sent))
		if n <= 0 {
			f, err := cl.fr.ReadFrame()
			if err != nil {
				t.Fatalf("after %d bytes: %v", sent, err)
			}
			switch f := f.(type) {
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					conn += int64(f.Increment)
				} else {
					stream += int64(f.Increment)
				}
			case *http2.SettingsFrame:
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					stream += int64(v) - 65535
				}
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				t.Fatalf("after %d bytes: %v", sent, f)
			}
			continue
		}
		if err := cl.fr.WriteData(1, sent+int(n) == size, chunk[:n]); err != nil {
			t.Fatal(err)
		}
		sent += int(n)
		stream -= n
		conn -= n
	}
	if _, body, rst := cl.response(1); rst != nil || body != "1048576 true" {
		t.Errorf("body %q reset %v; want 1048576 true", body, rst)
	}
}

// TestServeContentLengthMismatch: a body shorter than its content-length
// is a malformed request (RFC 9113 §8.1.1): RST_STREAM PROTOCOL_ERROR,
// and the handler's read fails rather than ending cleanly.
func TestServeContentLengthMismatch(t *testing.T) {
	got := make(chan error, 1)
	_, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- err
	})
	cl := dial(t, addr)
	cl.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a.test", ":path", "/", "content-length", "5")
	if err := cl.fr.WriteData(1, true, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, _, rst := cl.response(1); rst == nil || *rst != http2.ErrCodeProtocol {
		t.Errorf("reset %v; want PROTOCOL_ERROR", rst)
	}
	if err := <-got; err == nil {
		t.Error("the handler read a short body to a clean end")
	}
}

// TestServeMalformed: requests that break RFC 9113 §8 are reset with
// PROTOCOL_ERROR before any handler runs.
func TestServeMalformed(t *testing.T) {
	_, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler called for %s %s %v", r.Method, r.RequestURI, r.Header)
	})
	cl := dial(t, addr)
	base := []string{":method", "GET", ":scheme", "http", ":authority", "a.test", ":path", "/"}
	for i, extra := range [][]string{
		{"connection", "close"},
		{"te", "gzip"},
		{"transfer-encoding", "chunked"},
		{"host", "b.test"},
	} {
		id := uint32(2*i + 1)
		cl.headers(id, true, append(append([]string{}, base...), extra...)...)
		if _, _, rst := cl.response(id); rst == nil || *rst != http2.ErrCodeProtocol {
			t.Errorf("%v: reset %v; want PROTOCOL_ERROR", extra, rst)
		}
	}
	cl.headers(9, true, ":method", "GET", ":scheme", "http", ":authority", "a.test")
	if _, _, rst := cl.response(9); rst == nil || *rst != http2.ErrCodeProtocol {
		t.Errorf("no :path: reset %v; want PROTOCOL_ERROR", rst)
	}
}

// TestServeAbortHandler: a handler that panics with http.ErrAbortHandler
// after sending part of its response has its stream reset
// (INTERNAL_ERROR), so the client cannot take the part for the whole; so
// does one that panics with anything else, which OnPanic reports. The
// connection serves on.
func TestServeAbortHandler(t *testing.T) {
	panics := make(chan any, 2)
	_, addr := serve(t, Config{OnPanic: func(v any, _ []byte) { panics <- v }}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bug" {
			panic("bug")
		}
		if r.URL.Path == "/abort" {
			_, _ = io.WriteString(w, "part")
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
		_, _ = io.WriteString(w, "ok")
	})
	cl := dial(t, addr)
	cl.get(1, "/abort")
	if _, body, rst := cl.response(1); rst == nil || *rst != http2.ErrCodeInternal {
		t.Errorf("body %q reset %v; want INTERNAL_ERROR", body, rst)
	}
	cl.get(3, "/bug")
	if _, _, rst := cl.response(3); rst == nil || *rst != http2.ErrCodeInternal {
		t.Errorf("panic: reset %v; want INTERNAL_ERROR", rst)
	}
	cl.get(5, "/")
	if _, body, rst := cl.response(5); rst != nil || body != "ok" {
		t.Errorf("next stream: %q reset %v", body, rst)
	}
	if v := <-panics; v != "bug" || len(panics) > 0 {
		t.Errorf("OnPanic got %v (and %d more); want bug only, not ErrAbortHandler", v, len(panics))
	}
}

// TestServeZeroWindow: a client that grants no window cannot hold a
// handler: its write fails after WriteTimeout and the stream is reset;
// with a write deadline of the handler's own, after that.
func TestServeZeroWindow(t *testing.T) {
	done := make(chan error, 2)
	_, addr := serve(t, Config{WriteTimeout: 300 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.URL.Path == "/dl" {
			_ = rc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		}
		_, _ = w.Write(make([]byte, 8<<10))
		done <- rc.Flush()
	})
	cl := dial(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	for i, path := range []string{"/", "/dl"} {
		id := uint32(2*i + 1)
		start := time.Now()
		cl.get(id, path)
		if _, _, rst := cl.response(id); rst == nil || *rst != http2.ErrCodeInternal {
			t.Errorf("%s: reset %v; want INTERNAL_ERROR", path, rst)
		}
		if err := <-done; err == nil {
			t.Errorf("%s: the handler's write succeeded with no window", path)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: reset after %v", path, d)
		}
	}
}

// TestServeInterim: a 1xx goes out at once with the header map as it is,
// before the final response.
func TestServeInterim(t *testing.T) {
	_, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</s.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		clear(w.Header())
		w.WriteHeader(http.StatusNoContent)
	})
	cl := dial(t, addr)
	cl.get(1, "/")
	f1, ok1 := cl.next(1).(*http2.MetaHeadersFrame)
	f2, ok2 := cl.next(1).(*http2.MetaHeadersFrame)
	if !ok1 || !ok2 || f1.PseudoValue("status") != "103" || f2.PseudoValue("status") != "204" || !f2.StreamEnded() {
		t.Fatalf("frames %v %v; want HEADERS 103 then HEADERS 204 END_STREAM", f1, f2)
	}
	for _, hf := range f2.RegularFields() {
		if hf.Name == "link" {
			t.Error("the 1xx's Link went out with the final response too")
		}
	}
}

// TestServeShutdown: Shutdown sends GOAWAY NO_ERROR naming the last stream
// taken; that stream still completes, then the connection closes.
func TestServeShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "late")
	})
	cl := dial(t, addr)
	cl.get(1, "/")
	<-started
	s.Shutdown()
	ga := cl.goAway()
	if ga == nil || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Fatalf("%v; want GOAWAY NO_ERROR last stream 1", ga)
	}
	close(release)
	if _, body, rst := cl.response(1); rst != nil || body != "late" {
		t.Errorf("stream in flight: %q reset %v", body, rst)
	}
	for {
		if _, err := cl.fr.ReadFrame(); err != nil {
			return // closed
		}
	}
}

// TestServeIdleTimeout: a connection without streams for IdleTimeout is
// sent GOAWAY and closed.
func TestServeIdleTimeout(t *testing.T) {
	_, addr := serve(t, Config{IdleTimeout: 200 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {})
	cl := dial(t, addr)
	start := time.Now()
	if ga := cl.goAway(); ga == nil || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("%v; want GOAWAY NO_ERROR", ga)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("GOAWAY after %v; want the idle timeout first", d)
	}
}

// TestServeConcurrencyLimit: a stream beyond MaxConcurrentStreams is
// refused (REFUSED_STREAM: safe to retry); the open ones are served.
func TestServeConcurrencyLimit(t *testing.T) {
	release := make(chan struct{})
	_, addr := serve(t, Config{MaxConcurrentStreams: 2}, func(w http.ResponseWriter, r *http.Request) {
		<-release
	})
	cl := dial(t, addr)
	cl.get(1, "/")
	cl.get(3, "/")
	cl.get(5, "/")
	if _, _, rst := cl.response(5); rst == nil || *rst != http2.ErrCodeRefusedStream {
		t.Errorf("third stream: reset %v; want REFUSED_STREAM", rst)
	}
	close(release)
	// Streams 1 and 3 end in either order.
	for open := 2; open > 0; {
		f, err := cl.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.PseudoValue("status") != "200" || !f.StreamEnded() {
				t.Errorf("stream %d: %v", f.StreamID, f)
			}
			open--
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v", f)
		}
	}
}

// TestServeTrailers: request trailers the Trailer field declared are in
// req.Trailer once the body has been read to its end, as net/http puts
// them; undeclared ones are dropped; a declared one that may not be a
// trailer (httpguts.ValidTrailerHeader) resets the stream.
func TestServeTrailers(t *testing.T) {
	_, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		before := len(r.Trailer)
		body, err := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, strconv.Itoa(before)+" "+string(body)+" "+strconv.FormatBool(err == nil)+
			" x-a="+strings.Join(r.Trailer["X-A"], ",")+" x-b="+strings.Join(r.Trailer["X-B"], ",")+" n="+strconv.Itoa(len(r.Trailer)))
	})
	cl := dial(t, addr)
	post := []string{":method", "POST", ":scheme", "http", ":authority", "a.test", ":path", "/"}
	cl.headers(1, false, append(post, "trailer", "X-A, x-b")...)
	_ = cl.fr.WriteData(1, false, []byte("body"))
	cl.headers(1, true, "x-a", "1", "x-a", "2", "x-c", "3")
	if _, body, rst := cl.response(1); rst != nil || body != "2 body true x-a=1,2 x-b= n=2" {
		t.Errorf("declared trailers: %q reset %v; want %q", body, rst, "2 body true x-a=1,2 x-b= n=2")
	}
	cl.headers(3, false, post...)
	cl.headers(3, true, "x-a", "1")
	if _, body, rst := cl.response(3); rst != nil || body != "0  true x-a= x-b= n=0" {
		t.Errorf("undeclared trailers: %q reset %v", body, rst)
	}
	cl.headers(5, false, append(post, "trailer", "content-length")...)
	cl.headers(5, true, "content-length", "0")
	if _, body, rst := cl.response(5); rst != nil || body != "0  true x-a= x-b= n=0" {
		t.Errorf("a declared content-length trailer: %q reset %v; want it ignored", body, rst)
	}
	cl.headers(7, false, append(post, "trailer", "x-a")...)
	cl.headers(7, true, "x-a", "1", "host", "b.test")
	if _, _, rst := cl.response(7); rst == nil || *rst != http2.ErrCodeProtocol {
		t.Errorf("a Host trailer: reset %v; want PROTOCOL_ERROR", rst)
	}
}

// TestServeURL: req.URL is :path as net/http's url.ParseRequestURI makes
// it (Path unescaped, RawPath when the escaping is not the default one,
// RawQuery, ForceQuery); a :path it refuses keeps Path as sent.
func TestServeURL(t *testing.T) {
	_, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path+"|"+r.URL.RawPath+"|"+r.URL.RawQuery+"|"+strconv.FormatBool(r.URL.ForceQuery)+"|"+r.RequestURI)
	})
	cl := dial(t, addr)
	for i, path := range []string{"/a/b;c=d,e:f@g$h&i+j=k", "/a%20b/c%2Fd?x=%20", "/a(b)", "/q?", "*", "/%zz", "/a%41"} {
		id := uint32(2*i + 1)
		cl.get(id, path)
		_, body, rst := cl.response(id)
		want := "?"
		if u, err := url.ParseRequestURI(path); err == nil {
			want = u.Path + "|" + u.RawPath + "|" + u.RawQuery + "|" + strconv.FormatBool(u.ForceQuery) + "|" + path
		} else {
			p, q, _ := strings.Cut(path, "?")
			want = p + "||" + q + "|false|" + path
		}
		if rst != nil || body != want {
			t.Errorf("%s: %q reset %v; want %q", path, body, rst, want)
		}
	}
}

// TestSetURL: every byte, alone in a path and escaped, gives the URL
// url.ParseRequestURI gives.
func TestSetURL(t *testing.T) {
	for c := range 256 {
		for _, path := range []string{"/a" + string(rune(c)) + "b?q", "/%" + strconv.FormatInt(int64(c), 16)} {
			if c >= 0x80 {
				path = "/a" + string([]byte{byte(c)})
			}
			var u url.URL
			setURL(&u, path)
			want, err := url.ParseRequestURI(path)
			if err != nil {
				p, q, _ := strings.Cut(path, "?")
				want = &url.URL{Path: p, RawQuery: q}
			}
			if u != *want {
				t.Errorf("%q: %#v; want %#v", path, u, *want)
			}
		}
	}
}
