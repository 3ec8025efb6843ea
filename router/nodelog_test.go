package router

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// A node whose connects fail is logged once as failed, with the error,
// however many requests find it down, and once as recovered when a
// connect succeeds again; both at WARN, so that a log read at warn level
// pairs them. Before, a connect failure was a debug line per attempt.
func TestNodeFailureAndRecoveryLoggedOnce(t *testing.T) {
	addr := uwsgitest.Refused(t)
	logs := &lockedBuffer{}
	r := startRouter(t, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	r.table.AddStatic("down.test", addr, 1)
	for range 5 {
		raw(t, r.addr, "GET / HTTP/1.1\r\nHost: down.test\r\n\r\n")
	}
	out := logs.String()
	if n := strings.Count(out, `msg="node failed"`); n != 1 ||
		!strings.Contains(out, `level=WARN msg="node failed" pool=down.test node=`+addr+` reason=connect err=`) ||
		!strings.Contains(out, "connection refused") {
		t.Fatalf("%d failure lines; want one WARN naming the node and the error:\n%s", n, out)
	}
	// The node comes back on the same address; after its back-off one
	// request probes it.
	uwsgitest.NewNode(t, uwsgitest.Reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), uwsgitest.ListenOn("tcp", addr))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), `msg="node recovered"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery logged:\n%s", logs)
		}
		raw(t, r.addr, "GET / HTTP/1.1\r\nHost: down.test\r\n\r\n")
		time.Sleep(50 * time.Millisecond)
	}
	for range 3 {
		raw(t, r.addr, "GET / HTTP/1.1\r\nHost: down.test\r\n\r\n")
	}
	out = logs.String()
	if n := strings.Count(out, `msg="node recovered"`); n != 1 ||
		!strings.Contains(out, `level=WARN msg="node recovered" pool=down.test node=`+addr+` reason=connect`) {
		t.Fatalf("%d recovery lines; want one WARN:\n%s", n, out)
	}
}
