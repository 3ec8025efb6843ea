package admin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/subauth"
)

func newHandler(t *testing.T, token string) (*Handler, *balancer.Table) {
	t.Helper()
	tb, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.0.0.1:3031", "/run/app.sock"} {
		if err := tb.AddStatic("app.test", a, 1); err != nil {
			t.Fatal(err)
		}
	}
	h, err := New(Config{Table: tb, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return h, tb
}

func do(t *testing.T, h http.Handler, method, path, body, token string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func nodePath(addr string) string {
	return "/api/pools/app.test/nodes/" + url.PathEscape(addr)
}

func TestReadEndpoints(t *testing.T) {
	h, _ := newHandler(t, "")
	if code, body := do(t, h, "GET", "/healthz", "", ""); code != 200 || body != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	code, body := do(t, h, "GET", "/api/pools", "", "")
	var pools []PoolJSON
	if code != 200 || json.Unmarshal([]byte(body), &pools) != nil || len(pools) != 1 || len(pools[0].Nodes) != 2 {
		t.Fatalf("/api/pools: %d %s", code, body)
	}
	if n := pools[0].Nodes[0]; n.State != "active" || n.Weight != 1 || n.LastSeen.IsZero() {
		t.Errorf("node JSON %+v", n)
	}
	if code, _ := do(t, h, "GET", "/api/pools/nope", "", ""); code != 404 {
		t.Errorf("unknown pool: %d; want 404", code)
	}
	if code, body := do(t, h, "GET", nodePath("/run/app.sock"), "", ""); code != 200 || !strings.Contains(body, `"address": "/run/app.sock"`) {
		t.Errorf("node with an escaped unix path: %d %s", code, body)
	}
	if code, _ := do(t, h, "GET", nodePath("10.9.9.9:1"), "", ""); code != 404 {
		t.Errorf("unknown node: %d; want 404", code)
	}
}

func TestDrainLifecycle(t *testing.T) {
	h, tb := newHandler(t, "")
	code, body := do(t, h, "POST", nodePath("10.0.0.1:3031")+"/drain", `{"timeout":"5s"}`, "")
	if code != 202 || !strings.Contains(body, `"state": "draining"`) {
		t.Fatalf("drain: %d %s", code, body)
	}
	// The other node is the last active one: refusing keeps the pool serving.
	if code, body := do(t, h, "POST", nodePath("/run/app.sock")+"/drain", "", ""); code != 409 {
		t.Fatalf("draining the last active node: %d %s; want 409", code, body)
	}
	if code, _ := do(t, h, "POST", nodePath("/run/app.sock")+"/drain?force=1", "", ""); code != 202 {
		t.Fatalf("forced drain: %d; want 202", code)
	}
	tb.Tick() // nothing in flight: both drained
	if code, body := do(t, h, "GET", nodePath("10.0.0.1:3031"), "", ""); code != 200 || !strings.Contains(body, `"state": "drained"`) {
		t.Fatalf("after tick: %d %s", code, body)
	}
	if code, body := do(t, h, "POST", nodePath("10.0.0.1:3031")+"/undrain", "", ""); code != 200 || !strings.Contains(body, `"state": "active"`) {
		t.Fatalf("undrain: %d %s", code, body)
	}
	for _, bad := range []string{`{"timeout":"soon"}`, `{"timeout":"-1s"}`, `not json`} {
		if code, _ := do(t, h, "POST", nodePath("10.0.0.1:3031")+"/drain", bad, ""); code != 400 {
			t.Errorf("drain body %s: %d; want 400", bad, code)
		}
	}
	if code, _ := do(t, h, "POST", "/api/pools/app.test/nodes/10.9.9.9:1/drain", "", ""); code != 404 {
		t.Errorf("drain of an unknown node: %d; want 404", code)
	}
}

func TestAddAndDeleteNode(t *testing.T) {
	h, tb := newHandler(t, "")
	if code, body := do(t, h, "POST", "/api/pools/new.test/nodes", `{"address":"10.0.0.7:3031","weight":3}`, ""); code != 201 {
		t.Fatalf("add: %d %s", code, body)
	}
	if n := tb.Pool("new.test").Node("10.0.0.7:3031"); n == nil || n.Weight() != 3 || !n.Info().Static {
		t.Fatal("added node missing or wrong")
	}
	for _, bad := range []string{`{"address":"localhost:1"}`, `{}`, `[`} {
		if code, _ := do(t, h, "POST", "/api/pools/new.test/nodes", bad, ""); code != 400 {
			t.Errorf("add %s: %d; want 400", bad, code)
		}
	}
	if code, _ := do(t, h, "DELETE", "/api/pools/new.test/nodes/10.0.0.7:3031", "", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := do(t, h, "DELETE", "/api/pools/new.test/nodes/10.0.0.7:3031", "", ""); code != 404 {
		t.Fatalf("second delete: %d; want 404", code)
	}
}

func TestTokenGuardsMutations(t *testing.T) {
	h, _ := newHandler(t, "s3cret")
	if code, _ := do(t, h, "GET", "/api/pools", "", ""); code != 200 {
		t.Errorf("reads need no token: %d", code)
	}
	for _, tok := range []string{"", "wrong"} {
		if code, _ := do(t, h, "POST", nodePath("10.0.0.1:3031")+"/drain", "", tok); code != 401 {
			t.Errorf("drain with token %q: %d; want 401", tok, code)
		}
		if code, _ := do(t, h, "DELETE", nodePath("10.0.0.1:3031"), "", tok); code != 401 {
			t.Errorf("delete with token %q: %d; want 401", tok, code)
		}
	}
	if code, _ := do(t, h, "POST", nodePath("10.0.0.1:3031")+"/drain", "", "s3cret"); code != 202 {
		t.Errorf("drain with the token: %d; want 202", code)
	}
}

// POST …/nodes meets the admission rules a datagram meets: an address
// outside --node-allow is refused with 403, naming the rule, and the node
// is not added.
func TestAddNodeMeetsAdmission(t *testing.T) {
	tb, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	guard, err := subauth.New(subauth.Config{Nodes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Table: tb, Admission: guard, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"169.254.169.254:80", "/run/app.sock", "http://127.0.0.1:9191"} {
		code, body := do(t, h, "POST", "/api/pools/meta.test/nodes", `{"address":"`+addr+`"}`, "")
		var e struct{ Error string }
		if json.Unmarshal([]byte(body), &e); code != 403 || !strings.Contains(e.Error, "--node-allow 10.0.0.0/8") {
			t.Errorf("add %s: %d %s; want 403 naming --node-allow", addr, code, body)
		}
	}
	if tb.Pool("meta.test") != nil {
		t.Fatal("a refused node created its pool")
	}
	if code, body := do(t, h, "POST", "/api/pools/meta.test/nodes", `{"address":"10.1.2.3:3031"}`, ""); code != 201 {
		t.Fatalf("allowed address: %d %s", code, body)
	}
	// A malformed address is the caller's mistake (400), not a refusal.
	if code, _ := do(t, h, "POST", "/api/pools/meta.test/nodes", `{"address":"localhost:1"}`, ""); code != 400 {
		t.Errorf("host name: %d; want 400", code)
	}
}

// A node removed (by a drain's end, an expiry or another admin call) while
// its POST is being answered gets a clear answer, never a panic and an
// empty reply.
func TestAddNodeRacingRemoval(t *testing.T) {
	h, tb := newHandler(t, "")
	const addr = "10.0.0.7:3031"
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				tb.RemoveNode("race.test", addr)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for i := 0; i < 5000; i++ {
		code, body := do(t, h, "POST", "/api/pools/race.test/nodes", `{"address":"`+addr+`","weight":1}`, "")
		if code != http.StatusCreated && code != http.StatusConflict {
			t.Fatalf("POST while the node is removed: %d %s", code, body)
		}
	}
}
