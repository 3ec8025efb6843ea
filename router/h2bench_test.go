package router

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// BenchmarkH2Stream: whole HTTP/2 request streams through the h2c front
// (internal/h2srv and streamFront.ServeHTTP) to an in-process uwsgi node over
// a unix socket, one stream per iteration on one connection, each read to
// its END_STREAM. The client is a bare framer, so the figures are mostly
// the router's: compare with BenchmarkProxy (HTTP/1.1).
//
// Run: go test -run '^$' -bench H2Stream -count 6 ./router/
func BenchmarkH2Stream(b *testing.B) {
	node := benchNode(b)
	rt := benchRouter(b, node)
	h2BenchStreams(b, serveUntilCleanup(b, rt, rt.Serve, "tcp", "bench"))
}

// h2BenchStreams times one request stream per iteration on one h2c
// connection to addr, each read to its END_STREAM.
func h2BenchStreams(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		b.Fatal(err)
	}
	// A window large enough that the router never waits for a
	// WINDOW_UPDATE within the run (the connection's is raised below).
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30}); err != nil {
		b.Fatal(err)
	}
	if err := fr.WriteWindowUpdate(0, 1<<30); err != nil {
		b.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "bench.test"},
		{":path", "/items?id=42"}, {"user-agent", "bench"}, {"accept", "*/*"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	// After the first request every field is in the router's dynamic
	// table: the block the client sends from then on is the indexed one.
	first := append([]byte(nil), hb.Bytes()...)
	hb.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "bench.test"},
		{":path", "/items?id=42"}, {"user-agent", "bench"}, {"accept", "*/*"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	again := hb.Bytes()
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	id := uint32(1)
	stream := func(block []byte) {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
			b.Fatal(err)
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				if f.StreamID == id && f.PseudoValue("status") != "200" {
					b.Fatalf("status %q", f.PseudoValue("status"))
				}
				if f.StreamID == id && f.StreamEnded() {
					b.Fatal("response without a body")
				}
			case *http2.DataFrame:
				if f.StreamID == id && f.StreamEnded() {
					id += 2
					return
				}
			case *http2.RSTStreamFrame:
				b.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
			case *http2.GoAwayFrame:
				b.Fatalf("GOAWAY %v", f.ErrCode)
			}
		}
	}
	stream(first)
	b.ReportAllocs()
	for b.Loop() {
		stream(again)
	}
}
