package router

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Chunked requests de-chunked by the router (takeChunked) leave a
// kept-alive connection where the next request starts: three chunked
// requests, with extensions and trailers, pipelined on one connection,
// are each served with their own body, and a GET after them too.
func TestChunkedKeepAlive(t *testing.T) {
	n := startFakeNode(t, func(vars map[string]string, body []byte) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body)+len(vars["PATH_INFO"]), vars["PATH_INFO"]+string(body))
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("k.test", n.addr(), 1)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := func(path, body string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: k.test\r\nTransfer-Encoding: chunked\r\n\r\n" + body
	}
	io.WriteString(c, req("/a", "3;x=1\r\nabc\r\n0\r\n\r\n")+
		req("/b", "1\r\nd\r\n2\r\nef\r\n0\r\nX-T: 1\r\n\r\n")+
		req("/c", "0\r\n\r\n")+
		"GET /d HTTP/1.1\r\nHost: k.test\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"/aabc", "/bdef", "/c", "/d"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("before %s: %v", want, err)
		}
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(got) != want {
			t.Errorf("%d %q; want 200 %q", resp.StatusCode, got, want)
		}
	}
}
