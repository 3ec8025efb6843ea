package router

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// opaqueListener hides its connections' syscall.Conn: none of them can park
// (newParkConn), so fasthttp's Serve serves every HTTP/1.1 one, as off Linux.
type opaqueListener struct{ net.Listener }

func (l opaqueListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

// Many reloads keep only the generations still serving a connection: the
// current one and the first, which an idle keep-alive connection (served by
// fasthttp when it cannot park), a request in flight and an h2 connection
// still use. Shutdown then stops that first generation too: the request
// finishes, the h2 connection gets GOAWAY and the idle one is closed, all
// before the deadline. Once they are gone, only the current one is left.
func TestReloadsPruneGenerations(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Listener) net.Listener
	}{
		{"parking", func(ln net.Listener) net.Listener { return ln }},
		{"fasthttp-served", func(ln net.Listener) net.Listener { return opaqueListener{ln} }},
	} {
		t.Run(tc.name, func(t *testing.T) { testReloadsPrune(t, tc.wrap) })
	}
}

func testReloadsPrune(t *testing.T, wrap func(net.Listener) net.Listener) {
	held, release := make(chan struct{}, 1), make(chan struct{})
	node := uwsgitest.NewNode(t, uwsgitest.Respond(func(r *uwsgitest.Request) string {
		if r.Vars["PATH_INFO"] == "/hold" {
			held <- struct{}{}
			<-release
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
	}))
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	table.AddStatic("g.test", node.Addr(), 1)
	rt, err := New(Config{Pools: table, ConnectTimeout: time.Second, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = rt.Serve(wrap(ln), "g") }()
	var shutdownDone bool
	t.Cleanup(func() {
		if !shutdownDone {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = rt.Shutdown(ctx)
		}
		<-served
	})
	addr := ln.Addr().String()
	var l *frontListener
	waitFor(t, "the listener", func() bool {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if ls := rt.frontListenersLocked(); len(ls) > 0 {
			l = ls[0]
		}
		return l != nil
	})

	const getG = "GET / HTTP/1.1\r\nHost: g.test\r\n\r\n"
	idle := dialKeepAlive(t, addr)
	idle.get(getG, 1, "hi")
	busy := uwsgitest.Dial(t, addr)
	busy.Send("GET /hold HTTP/1.1\r\nHost: g.test\r\n\r\n")
	<-held
	h2 := dialTestH2C(t, addr)
	h2.headers(1, [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "g.test"}, {":path", "/"}}, true)
	if got := h2.status(1); got != "200" {
		t.Fatalf("h2 request: %s; want 200", got)
	}

	const reloads = 200
	for i := range reloads {
		tm := Timeouts{Connect: time.Second, Timeout: 30*time.Second + time.Duration(i%2)*time.Second, Header: time.Second}
		if err := rt.SetTimeouts(tm); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(l.generations()); n != 2 {
		t.Errorf("generations kept after %d reloads = %d; want 2 (the current one, the first one still in use)", reloads, n)
	}
	if resp, b := raw(t, addr, "GET / HTTP/1.1\r\nHost: g.test\r\nConnection: close\r\n\r\n"); resp.StatusCode != 200 || b != "hi" {
		t.Fatalf("after the reloads: %d %q; want 200 hi", resp.StatusCode, b)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- rt.Shutdown(ctx) }()
	time.Sleep(200 * time.Millisecond)
	close(release)
	resp, b, err := busy.Next("GET")
	if err != nil || resp.StatusCode != 200 || b != "hi" {
		t.Fatalf("request in flight at shutdown: %v %v %q; want 200 hi", resp, err, b)
	}
	if got := h2.status(3); got != "closed" { // GOAWAY, then the close
		t.Errorf("h2 connection after shutdown: %s; want closed", got)
	}
	idle.expectEOF(5 * time.Second)
	// Within the keep-alive grace and GOAWAY's own wait, far from the
	// connections' 30s idle timeout: Shutdown ended them itself.
	if err := <-done; err != nil || time.Since(start) > 5*time.Second {
		t.Errorf("Shutdown = %v after %v; want nil within 5s: every connection of the old generation ended by it", err, time.Since(start))
	}
	shutdownDone = true
	waitFor(t, "the first generation to be let go", func() bool { return len(l.generations()) == 1 })
}
