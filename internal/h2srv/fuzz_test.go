package h2srv

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// memConn is a connection whose client sends src and then closes; what
// the server writes is dropped.
type memConn struct {
	r io.Reader
}

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzFrames is a client's frames after the preface.
func fuzzFrames(write func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer)) []byte {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	write(fr, hpack.NewEncoder(&hb), &hb)
	return out.Bytes()
}

func fuzzHeaders(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer, id uint32, end bool, fields ...string) {
	hb.Reset()
	for i := 0; i < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: end, EndHeaders: true})
}

// FuzzServeConn: whatever a client sends after the preface, the server
// neither panics nor hangs: ServeConn returns once the input ends, with
// every handler returned.
func FuzzServeConn(f *testing.F) {
	f.Add([]byte{})
	f.Add(fuzzFrames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fuzzHeaders(fr, enc, hb, 1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/")
		_ = fr.WriteWindowUpdate(1, 1000)
		_ = fr.WriteWindowUpdate(0, 1000)
	}))
	f.Add(fuzzFrames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		fuzzHeaders(fr, enc, hb, 1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/", "content-length", "3")
		_ = fr.WriteData(1, false, []byte("ab"))
		_ = fr.WriteDataPadded(1, true, []byte("c"), []byte{0, 0})
		fuzzHeaders(fr, enc, hb, 3, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", "a", ":path", "/ws")
		_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
		_ = fr.WritePriority(5, http2.PriorityParam{StreamDep: 5})
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14})
		fuzzHeaders(fr, enc, hb, 7, false, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/a%20b?", "trailer", "x-trailer")
		fuzzHeaders(fr, enc, hb, 7, true, "x-trailer", "1")
		_ = fr.WriteGoAway(7, http2.ErrCodeNo, nil)
	}))
	s := New(Config{WriteTimeout: 5 * time.Millisecond, IdleTimeout: time.Second}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-A", "b")
		w.WriteHeader(http.StatusEarlyHints)
		_, _ = w.Write(bytes.Repeat([]byte("x"), 5000))
		http.NewResponseController(w).Flush()
		_, _ = w.Write([]byte("end"))
	}))
	defer s.Shutdown()
	f.Fuzz(func(t *testing.T, frames []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ServeConn(context.Background(), &memConn{r: io.MultiReader(bytes.NewReader([]byte(http2.ClientPreface)), bytes.NewReader(frames))})
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not return after the input ended")
		}
	})
}

// chunkReader hands out src in reads of at most n bytes.
type chunkReader struct {
	src []byte
	n   int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.src) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.src)
	r.src = r.src[k:]
	return k, nil
}

// FuzzBlockReader: blockReader passes the bytes through unchanged up to a
// header block over its budget, and where it stops does not depend on how
// the bytes arrive.
func FuzzBlockReader(f *testing.F) {
	f.Add([]byte{}, uint8(1), uint16(100))
	f.Add(fuzzFrames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}})
		for range 20 {
			_ = fr.WriteContinuation(1, false, nil)
		}
		_ = fr.WriteContinuation(1, true, []byte{0x84})
		_ = fr.WriteData(1, true, make([]byte, 3000))
	}), uint8(7), uint16(16))
	f.Add(fuzzFrames(func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: bytes.Repeat([]byte{0x20}, 3000)})
		_ = fr.WriteContinuation(1, false, bytes.Repeat([]byte{0x20}, 3000))
		_ = fr.WriteContinuation(1, true, nil)
	}), uint8(3), uint16(5))
	f.Fuzz(func(t *testing.T, src []byte, chunk uint8, budget uint16) {
		run := func(n int) ([]byte, error) {
			b := &blockReader{r: &chunkReader{src: src, n: n}, budget: int64(budget) << 10}
			var got bytes.Buffer
			_, err := io.Copy(&got, b)
			return got.Bytes(), err
		}
		whole, werr := run(len(src) + 1)
		part, perr := run(1 + int(chunk))
		if (werr == nil) != (perr == nil) {
			t.Fatalf("read whole: %v; in chunks of %d: %v", werr, 1+int(chunk), perr)
		}
		if werr == nil && (!bytes.Equal(whole, src) || !bytes.Equal(part, src)) {
			t.Fatalf("passed %d and %d bytes of %d", len(whole), len(part), len(src))
		}
		if werr != nil && (werr != errBlockTooLong || !bytes.HasPrefix(src, whole) || !bytes.HasPrefix(src, part)) {
			t.Fatalf("stopped with %v after %d and %d bytes that are not the input's", werr, len(whole), len(part))
		}
	})
}
