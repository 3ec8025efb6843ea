package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// Every family README's "Metrics" lists (but the cluster's), the Go and process collectors,
// per-node series, promtool-clean output, and no label value taken from a
// request's Host.
func TestMetricsFamiliesAndCardinality(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens there
	r := startRouter(t, "--metrics-per-node", "--to", "dead.test="+dead, "--access-log", filepath.Join(t.TempDir(), "a.log"))
	n := startNode(t, r, "app.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "app.test", 1)
	c := client()
	for range 10 {
		if code, _ := get(t, c, r.http, "app.test", "/"); code != 200 {
			t.Fatalf("app.test: %d", code)
		}
	}
	if code, _ := get(t, c, r.http, "app.test", "/status?code=503"); code != 503 {
		t.Fatalf("node's own 503: %d", code)
	}
	if code, _ := get(t, c, r.http, "dead.test", "/"); code != 502 {
		t.Fatalf("dead node: %d; want 502", code)
	}
	var hosts []string
	for i := range 30 {
		h := fmt.Sprintf("unknown-%d-%d.example", i, time.Now().UnixNano())
		hosts = append(hosts, h)
		if code, _ := get(t, c, r.http, h, "/"); code != 404 {
			t.Fatalf("unknown host: %d; want 404", code)
		}
	}
	_, body := get(t, c, r.admin, r.admin, "/metrics")
	promtoolCheck(t, r)

	for _, fam := range []string{
		"fastrouter_requests_total", "fastrouter_request_duration_seconds", "fastrouter_backend_errors_total",
		"fastrouter_inflight_requests", "fastrouter_pool_nodes", "fastrouter_subscription_packets_total",
		"fastrouter_client_connections", "fastrouter_drains_total", "fastrouter_access_log_dropped_lines_total",
		"go_goroutines", "go_memstats_heap_inuse_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes",
		"fastrouter_node_requests_total", "fastrouter_node_state", "fastrouter_node_sent_bytes_total",
	} {
		if !strings.Contains(body, "\n# TYPE "+fam+" ") {
			t.Errorf("/metrics lacks the family %s", fam)
		}
	}
	for _, series := range []string{
		`fastrouter_requests_total{code="200",pool="app.test"} 10`,
		`fastrouter_requests_total{code="503",pool="app.test"} 1`,
		`fastrouter_requests_total{code="502",pool="dead.test"} 1`,
		`fastrouter_requests_total{code="404",pool=""} 30`,
		`fastrouter_backend_errors_total{pool="dead.test",reason="connect"} 1`,
		`fastrouter_request_duration_seconds_count{pool="app.test"} 11`,
		`fastrouter_node_requests_total{node="` + n.addr + `",pool="app.test"} 11`,
		`fastrouter_node_state{node="` + n.addr + `",pool="app.test",state="active"} 1`,
		`fastrouter_node_state{node="` + dead + `",pool="dead.test",state="failed"} 1`,
		`fastrouter_pool_nodes{pool="app.test",state="active"} 1`,
	} {
		if !strings.Contains(body, "\n"+series+"\n") {
			t.Errorf("/metrics lacks %s\n%s", series, grep(body, strings.SplitN(series, "{", 2)[0]))
		}
	}
	// Unknown hosts never become label values.
	for _, h := range hosts {
		if strings.Contains(body, h) {
			t.Fatalf("/metrics carries the request host %q", h)
		}
	}
	// Every pool label value is a key of the table (or "" for no pool).
	for _, m := range regexp.MustCompile(`pool="([^"]*)"`).FindAllStringSubmatch(body, -1) {
		if !slices.Contains([]string{"", "app.test", "dead.test"}, m[1]) {
			t.Errorf("pool label %q is not a pool", m[1])
		}
	}
	// Node traffic reached the per-node byte counters.
	if v := metricValue(t, r, `fastrouter_node_received_bytes_total{node="`+n.addr+`",pool="app.test"}`); v < float64(10*len("node=a")) {
		t.Errorf("bytes received from the node: %v", v)
	}
}

// Without --metrics-per-node there are no per-node series; without --pprof
// no profiles.
func TestPerNodeMetricsAndPprofAreOptIn(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	r := startRouter(t, "--to", "x.test=127.0.0.1:9")
	_, body := get(t, client(), r.admin, r.admin, "/metrics")
	if strings.Contains(body, "fastrouter_node_") {
		t.Errorf("per-node series without --metrics-per-node:\n%s", grep(body, "fastrouter_node_"))
	}
	if code, _ := get(t, client(), r.admin, r.admin, "/debug/pprof/"); code != 404 {
		t.Errorf("/debug/pprof/ without --pprof: %d; want 404", code)
	}
	p := startRouter(t, "--pprof")
	if code, body := get(t, client(), p.admin, p.admin, "/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(body, "heap profile") {
		t.Errorf("/debug/pprof/heap with --pprof: %d %.60q", code, body)
	}
	if code, body := get(t, client(), p.admin, p.admin, "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("/debug/pprof/goroutine with --pprof: %d %.60q", code, body)
	}
}

// accessEntry is one access-log line; pointers tell null from zero.
type accessEntry struct {
	Time            time.Time `json:"time"`
	ID              string    `json:"id"`
	Client          string    `json:"client"`
	Method          string    `json:"method"`
	Host            string    `json:"host"`
	URI             string    `json:"uri"`
	Proto           string    `json:"proto"`
	Scheme          string    `json:"scheme"`
	UserAgent       *string   `json:"user_agent"`
	Referer         *string   `json:"referer"`
	Status          int       `json:"status"`
	Pool            *string   `json:"pool"`
	Node            *string   `json:"node"`
	UpstreamConnect *float64  `json:"upstream_connect"`
	UpstreamHeader  *float64  `json:"upstream_header"`
	Bytes           int64     `json:"bytes"`
	Duration        float64   `json:"duration"`
}

// readAccessLog decodes every line of path strictly (unknown fields fail).
func readAccessLog(t *testing.T, path string) []accessEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	defer f.Close()
	var out []accessEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		var e accessEntry
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// waitAccessLog waits until path holds at least n lines (the writer
// flushes every second).
func waitAccessLog(t *testing.T, path string, n int) []accessEntry {
	t.Helper()
	var got []accessEntry
	eventually(t, 15*time.Second, fmt.Sprintf("%d access-log lines in %s", n, path), func() bool {
		got = readAccessLog(t, path)
		return len(got) >= n
	})
	return got
}

// The access log records every request with the id the node received;
// SIGHUP reopens the file after logrotate moved it.
func TestAccessLogAndRequestID(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	logPath := filepath.Join(t.TempDir(), "access.log")
	r := startRouter(t, "--access-log", logPath)
	n := startNode(t, r, "app.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "app.test", 1)
	c := client()

	envOf := func(hdr map[string]string) map[string]string {
		t.Helper()
		code, body, err := send(c, r.http, "app.test", "/env?q=1", hdr)
		if err != nil || code != 200 {
			t.Fatalf("GET /env: %d %v", code, err)
		}
		var env map[string]string
		if err := json.Unmarshal([]byte(body), &env); err != nil {
			t.Fatal(err)
		}
		return env
	}
	gen := envOf(nil)["HTTP_X_REQUEST_ID"]
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(gen) {
		t.Fatalf("node got HTTP_X_REQUEST_ID %q; want a generated 32-hex-digit id", gen)
	}
	if got := envOf(map[string]string{"X-Request-Id": "client-chosen-42"})["HTTP_X_REQUEST_ID"]; got != "client-chosen-42" {
		t.Fatalf("client id: node got %q", got)
	}
	if got := envOf(map[string]string{"X-Request-Id": "no spaces allowed"})["HTTP_X_REQUEST_ID"]; got == "no spaces allowed" || len(got) != 32 {
		t.Fatalf("invalid client id: node got %q; want a generated one", got)
	}
	if code, body := get(t, c, r.http, "app.test", "/download?size=1000000"); code != 200 || len(body) != 1_000_000 {
		t.Fatalf("download: %d, %d bytes", code, len(body))
	}
	if code, _ := get(t, c, r.http, "nowhere.test", "/x"); code != 404 {
		t.Fatalf("no pool: %d", code)
	}
	// HTTP/2 with prior knowledge logs the same way.
	// net/http's HTTP/2 client, with prior knowledge over clear text.
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	h2c := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	req, _ := http.NewRequest("GET", "http://"+r.http+"/h2path", nil)
	req.Host = "app.test"
	resp, err := h2c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	lines := waitAccessLog(t, logPath, 6)
	by := map[string]accessEntry{}
	for _, l := range lines {
		by[l.URI+" "+l.Proto] = l
		if l.Time.IsZero() || !strings.HasPrefix(l.Client, "127.0.0.1:") || l.Method != "GET" || l.Duration <= 0 || l.ID == "" {
			t.Errorf("line %+v", l)
		}
	}
	first := by["/env?q=1 HTTP/1.1"] // the first of three: map keeps the last
	for _, l := range lines {
		if l.URI == "/env?q=1" && l.ID == gen {
			first = l
		}
	}
	if first.ID != gen || first.Status != 200 || first.Pool == nil || *first.Pool != "app.test" || first.Node == nil ||
		*first.Node != n.addr || first.UpstreamHeader == nil || first.Host != "app.test" || first.Scheme != "http" {
		t.Errorf("first /env line %+v; want id %s, 200, pool app.test, node %s", first, gen, n.addr)
	}
	if dl := by["/download?size=1000000 HTTP/1.1"]; dl.Bytes != 1_000_000 || dl.Status != 200 {
		t.Errorf("download line %+v; want 1000000 bytes", dl)
	}
	if nf := by["/x HTTP/1.1"]; nf.Status != 404 || nf.Pool != nil || nf.Node != nil {
		t.Errorf("404 line %+v; want pool and node null", nf)
	}
	if h2 := by["/h2path HTTP/2.0"]; h2.Status != 200 || h2.Node == nil {
		t.Errorf("h2 line %+v", h2)
	}
	ids := map[string]bool{}
	for _, l := range lines {
		if ids[l.ID] && l.ID != "client-chosen-42" {
			t.Errorf("id %s logged twice", l.ID)
		}
		ids[l.ID] = true
	}

	// logrotate: rename, SIGHUP, and the next line lands in a new file.
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(r.pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a new access-log file after SIGHUP", func() bool {
		get(t, c, r.http, "app.test", "/after-rotate")
		for _, l := range readAccessLog(t, logPath) {
			if l.URI == "/after-rotate" {
				return true
			}
		}
		return false
	})
	var old []string
	for _, l := range readAccessLog(t, rotated) {
		old = append(old, l.ID)
	}
	if !slices.Contains(old, gen) {
		t.Errorf("the rotated file lost the lines written before the rotation: %v", old)
	}
}

// fetchStats reads one document from a stats socket.
func fetchStats(t *testing.T, network, addr string) map[string]any {
	t.Helper()
	var doc map[string]any
	eventually(t, 10*time.Second, "a stats document from "+addr, func() bool {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return false
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("stats document is not JSON: %v\n%s", err, b)
		}
		return true
	})
	return doc
}

// jsonShape maps every JSON path (arrays as []) to its JSON type.
func jsonShape(v any, path string, out map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		out[path] = "object"
		for k, e := range x {
			jsonShape(e, path+"."+k, out)
		}
	case []any:
		out[path] = "array"
		for _, e := range x {
			jsonShape(e, path+"[]", out)
		}
	case string:
		out[path] = "string"
	case float64:
		out[path] = "number"
	default:
		out[path] = fmt.Sprintf("%T", v)
	}
}

// uwsgiRequest sends one request over the uwsgi protocol (as nginx's
// uwsgi_pass does) and returns the raw response.
func uwsgiRequest(t *testing.T, addr, host string) string {
	t.Helper()
	pkt := uwsgitest.Packet("REQUEST_METHOD", "GET", "REQUEST_URI", "/", "PATH_INFO", "/",
		"QUERY_STRING", "", "SERVER_PROTOCOL", "HTTP/1.1", "SERVER_NAME", host, "SERVER_PORT", "80",
		"REMOTE_ADDR", "127.0.0.1", "HTTP_HOST", host)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// --stats speaks uWSGI's router stats: the same fields with the same JSON
// types as a real uWSGI 2.0 fastrouter's --fastrouter-stats, for the same
// node subscribed to both, over TCP and over a unix socket.
func TestStatsServerMatchesUWSGI(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	if _, err := os.Stat("/usr/lib/uwsgi/plugins/fastrouter_plugin.so"); err != nil {
		t.Fatal("uWSGI's fastrouter plugin missing (uwsgi-core ships it)")
	}
	statsTCP := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRouter(t, "--stats", statsTCP)
	// uWSGI's own router, with its stats server.
	ufr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	usub := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	ustats := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startProc(t, "uwsgi", "--plugin", "fastrouter", "--master", "--fastrouter", ufr,
		"--fastrouter-subscription-server", usub, "--fastrouter-stats", ustats, "--die-on-term")
	// One node announcing to both routers.
	sock := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startProc(t, "uwsgi", "--plugin", "python3", "--master", "--socket", sock, "--wsgi-file", appPath,
		"--subscribe-to", r.sub+":stats.test", "--subscribe-to", usub+":stats.test", "--subscribe-freq", "1",
		"--processes", "1", "--die-on-term", "--env", "NODE_ID=s", "--disable-logging")
	waitForNodes(t, r, "stats.test", 1)
	c := client()
	for range 3 {
		if code, _ := get(t, c, r.http, "stats.test", "/"); code != 200 {
			t.Fatalf("fastrouter: %d", code)
		}
	}
	eventually(t, 15*time.Second, "uWSGI's fastrouter to route stats.test", func() bool {
		return strings.Contains(uwsgiRequest(t, ufr, "stats.test"), "node=s")
	})

	theirs := fetchStats(t, "tcp", ustats)
	ours := fetchStats(t, "tcp", statsTCP)
	want, got := map[string]string{}, map[string]string{}
	jsonShape(theirs, "", want)
	jsonShape(ours, "", got)
	for path, typ := range want {
		if strings.HasPrefix(path, ".static_nodes") {
			continue // uWSGI's unkeyed --fastrouter-to nodes; fastrouter's --to nodes are keyed pools
		}
		path = strings.Replace(path, ".fastrouter", ".http", 1) // the router's short name
		if got[path] != typ {
			t.Errorf("%s: fastrouter has %q, uWSGI %q", path, got[path], typ)
		}
	}

	// The values mean what uWSGI's mean.
	sub := ours["subscriptions"].([]any)[0].(map[string]any)
	node := sub["nodes"].([]any)[0].(map[string]any)
	usubs := theirs["subscriptions"].([]any)[0].(map[string]any)
	if sub["key"] != "stats.test" || sub["hash"] != usubs["hash"] {
		t.Errorf("pool %v hash %v; uWSGI has hash %v", sub["key"], sub["hash"], usubs["hash"])
	}
	if node["name"] != sock || node["requests"].(float64) != 3 || sub["hits"].(float64) != 3 ||
		node["tx"].(float64) < 3*float64(len("node=s")) || node["rx"].(float64) < 300 ||
		node["death_mark"].(float64) != 0 || node["ref"].(float64) != 0 || node["weight"].(float64) != 1 {
		t.Errorf("node %v", node)
	}
	if s, _ := ours["http"].([]any); len(s) < 2 || s[0] != r.http {
		t.Errorf("socket list %v; want the HTTP listener and the subscription socket", ours["http"])
	}

	// A unix-socket stats server, replacing a stale socket file.
	path := filepath.Join(t.TempDir(), "stats.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // stale, as after a crash
	u := startRouter(t, "--stats", path)
	if doc := fetchStats(t, "unix", path); doc["version"] == nil || doc["subscriptions"] == nil {
		t.Errorf("unix stats document %v", doc)
	}
	// Shutting down removes the socket.
	syscall.Kill(u.pid(), syscall.SIGTERM)
	if code := u.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("stats socket %s left behind: %v", path, err)
	}
}

// The Grafana dashboard only queries metrics the router exports, in valid
// PromQL.
func TestGrafanaDashboard(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	raw, err := os.ReadFile("../../configs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	if dash.UID == "" || len(exprs) < 20 {
		t.Fatalf("dashboard uid %q with %d queries", dash.UID, len(exprs))
	}

	// A router with everything a dashboard panel can show: a backend
	// error too (backend_errors_total has no series before the first).
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRouter(t, "--metrics-per-node", "--access-log", filepath.Join(t.TempDir(), "a.log"), "--to", "dead.test="+dead)
	startNode(t, r, "app.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "app.test", 1)
	get(t, client(), r.http, "app.test", "/")
	get(t, client(), r.http, "dead.test", "/")
	_, body := get(t, client(), r.admin, r.admin, "/metrics")
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z_:][a-z0-9_:]*)[{ ]`).FindAllStringSubmatch(body, -1) {
		exported[m[1]] = true
	}
	var rules strings.Builder
	rules.WriteString("groups:\n- name: dashboard\n  rules:\n")
	metricName := regexp.MustCompile(`\b((?:fastrouter|go|process)_[a-z0-9_]+)\b`)
	for i, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			if !exported[m] {
				t.Errorf("dashboard queries %s, which /metrics does not export (in %q)", m, e)
			}
		}
		// Grafana's variables, as Grafana would expand them.
		e = strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*", "$pool", ".*", "$job", ".*").Replace(e)
		q, _ := json.Marshal(e)
		fmt.Fprintf(&rules, "  - record: dashboard:q%d\n    expr: %s\n", i, q)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runTool(t, 30*time.Second, "", "promtool", "check", "rules", file); err != nil {
		t.Fatalf("the dashboard's PromQL does not parse: %v\n%s", err, out)
	}
}

// --access-log - writes the lines to stdout.
func TestAccessLogToStdout(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	r := startRouter(t, "--access-log", "-")
	if code, _ := get(t, client(), r.http, "nowhere.test", "/stdout-check"); code != 404 {
		t.Fatalf("no pool: %d", code)
	}
	eventually(t, 15*time.Second, "the access-log line on stdout", func() bool {
		b, err := os.ReadFile(r.log) // stdout and stderr share the log file
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			var e accessEntry
			if json.Unmarshal([]byte(l), &e) == nil && e.URI == "/stdout-check" && e.Status == 404 {
				return true
			}
		}
		return false
	})
}
