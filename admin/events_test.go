package admin

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// /healthz answers 200 "ok" until the shutdown begins, then 503
// "shutting down", so that a load balancer moves away first.
func TestHealthzShuttingDown(t *testing.T) {
	h, _ := newHandler(t, "")
	if code, body := do(t, h, "GET", "/healthz", "", ""); code != 200 || body != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	h.ShuttingDown()
	if code, body := do(t, h, "GET", "/healthz", "", ""); code != 503 || body != "shutting down" {
		t.Fatalf("/healthz while shutting down: %d %q; want 503 \"shutting down\"", code, body)
	}
	if code, _ := do(t, h, "GET", "/api/pools", "", ""); code != 200 {
		t.Fatalf("/api/pools while shutting down: %d; want it still served", code)
	}
}

// A node that failed a connect shows "failed" and not healthy; it used
// to show "state":"failed" with "healthy":true.
func TestHealthyMatchesState(t *testing.T) {
	h, tb := newHandler(t, "")
	tb.Pool("app.test").Node("10.0.0.1:3031").ReportFailure(time.Now())
	_, body := do(t, h, "GET", nodePath("10.0.0.1:3031"), "", "")
	var n NodeJSON
	if err := json.Unmarshal([]byte(body), &n); err != nil {
		t.Fatal(err)
	}
	if n.State != "failed" || n.Healthy {
		t.Fatalf("node after a connect failure: state %q healthy %v; want failed and not healthy", n.State, n.Healthy)
	}
}

// Every change made through the API is logged once, with the caller's
// address; a drain of a draining node or an undrain of an active one
// changes nothing and logs nothing; a refused token is a warning.
func TestAdminChangesLogged(t *testing.T) {
	tb, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	h, err := New(Config{Table: tb, Token: "s3cret", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body, token string) int {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.RemoteAddr = "192.0.2.7:4321"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	node := nodePath("10.0.0.1:3031")
	for _, c := range []struct {
		method, path, body, token string
		code                      int
	}{
		{"POST", "/api/pools/app.test/nodes", `{"address":"10.0.0.1:3031","weight":2}`, "s3cret", 201},
		{"POST", "/api/pools/app.test/nodes", `{"address":"10.0.0.2:3031"}`, "s3cret", 201},
		{"POST", "/api/pools/app.test/nodes", `{"address":"10.0.0.2:3031","weight":5}`, "s3cret", 201},
		{"POST", node + "/drain", "", "s3cret", 202},
		{"POST", node + "/drain", "", "s3cret", 202}, // already draining
		{"POST", node + "/undrain", "", "s3cret", 200},
		{"POST", node + "/undrain", "", "s3cret", 200}, // already active
		{"DELETE", node, "", "s3cret", 200},
		{"DELETE", node, "", "wrong", 401},
	} {
		if code := call(c.method, c.path, c.body, c.token); code != c.code {
			t.Fatalf("%s %s: %d; want %d", c.method, c.path, code, c.code)
		}
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.Contains(l, "remote=192.0.2.7:4321") {
			t.Errorf("line without the caller's address: %s", l)
		}
		_, msg, _ := strings.Cut(l, "msg=")
		got = append(got, msg)
	}
	want := []string{
		`"node joined" pool=app.test node=10.0.0.1:3031 source=admin weight=2`,
		`"node joined" pool=app.test node=10.0.0.2:3031 source=admin weight=1`,
		`"node updated" pool=app.test node=10.0.0.2:3031 source=admin weight=5`,
		`"drain started" pool=app.test node=10.0.0.1:3031 source=admin timeout=30s force=false`,
		`"node undrained" pool=app.test node=10.0.0.1:3031 source=admin was=draining`,
		`"node left" pool=app.test node=10.0.0.1:3031 source=admin reason=deleted`,
		`"admin: call refused: missing or wrong bearer token" method=DELETE`,
	}
	if len(got) != len(want) {
		t.Fatalf("logged %d lines; want %d:\n%s", len(got), len(want), logs)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("line %d: %s\nwant prefix %s", i, got[i], want[i])
		}
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"admin: call refused") {
		t.Errorf("a refused token is not a warning:\n%s", logs)
	}
}
