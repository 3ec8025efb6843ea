package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startNginx runs a real nginx (master_process off, as the test user) that
// passes every request to the uwsgi address upstream with the stock
// uwsgi_params; /keyed/ also sets UWSGI_FASTROUTER_KEY. It returns nginx's
// HTTP address.
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatal("nginx not installed (scripts/test.sh installs nginx-light)")
	}
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	params := `
		uwsgi_param QUERY_STRING $query_string;
		uwsgi_param REQUEST_METHOD $request_method;
		uwsgi_param CONTENT_TYPE $content_type;
		uwsgi_param CONTENT_LENGTH $content_length;
		uwsgi_param REQUEST_URI $request_uri;
		uwsgi_param PATH_INFO $document_uri;
		uwsgi_param DOCUMENT_ROOT $document_root;
		uwsgi_param SERVER_PROTOCOL $server_protocol;
		uwsgi_param REQUEST_SCHEME $scheme;
		uwsgi_param HTTPS $https if_not_empty;
		uwsgi_param REMOTE_ADDR $remote_addr;
		uwsgi_param REMOTE_PORT $remote_port;
		uwsgi_param SERVER_PORT $server_port;
		uwsgi_param SERVER_NAME $server_name;`
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	client_max_body_size 10m;
	server {
		listen %[2]s;
		server_name nginx.test;
		location /keyed/ {
			%[3]s
			uwsgi_param UWSGI_FASTROUTER_KEY other;
			uwsgi_pass %[4]s;
		}
		location / {
			%[3]s
			uwsgi_pass %[4]s;
		}
	}
}
`, dir, addr, params, upstream)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "nginx", "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("--- nginx error.log:\n%s", tail(b, 4000))
		}
	})
	eventually(t, 10*time.Second, "nginx listening", func() bool {
		if p.exited() {
			t.Fatal("nginx exited")
		}
		resp, err := client().Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return addr
}

// TestUwsgiFrontBehindNginx: real nginx → uwsgi_pass → fastrouter --uwsgi →
// real uWSGI nodes. The key comes from HTTP_HOST (or UWSGI_FASTROUTER_KEY),
// the vars reach the node verbatim, bodies stream both ways, and errors
// are HTTP responses nginx relays.
func TestUwsgiFrontBehindNginx(t *testing.T) {
	requireUWSGI(t)
	uw := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sock := filepath.Join(t.TempDir(), "fr-uwsgi.sock")
	logPath := filepath.Join(t.TempDir(), "access.log")
	r := startRouter(t, "--uwsgi", uw, "--uwsgi", sock, "--access-log", logPath)
	startNode(t, r, "app.test", nodeOpts{id: "a"})
	startNode(t, r, "other", nodeOpts{id: "o"})
	waitForNodes(t, r, "app.test", 1)
	waitForNodes(t, r, "other", 1)
	c := client()

	// The unix-socket front: made for nginx workers of another user, and
	// serving like the TCP one.
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
		t.Fatalf("--uwsgi %s: %v, mode %v; want a socket with mode 0666", sock, err, fi.Mode())
	}
	ngxUnix := startNginx(t, "unix:"+sock)
	if code, body := get(t, c, ngxUnix, "app.test", "/"); code != 200 || body != "node=a" {
		t.Fatalf("GET app.test/ via the unix --uwsgi: %d %q; want 200 node=a", code, body)
	}
	payload100k := bytes.Repeat([]byte("0123456789abcdef"), 6400)
	sum100k := sha256.Sum256(payload100k)
	req, _ := http.NewRequest("POST", "http://"+ngxUnix+"/upload", bytes.NewReader(payload100k))
	req.Host = "app.test"
	if resp, b := doReqRaw(t, c, req); resp.StatusCode != 200 || b != fmt.Sprintf("%d %s", len(payload100k), hex.EncodeToString(sum100k[:])) {
		t.Errorf("upload via the unix --uwsgi: %d %q", resp.StatusCode, b)
	}

	ngx := startNginx(t, uw)

	if code, body := get(t, c, ngx, "app.test", "/"); code != 200 || body != "node=a" {
		t.Fatalf("GET app.test/: %d %q; want 200 node=a", code, body)
	}
	code, body := get(t, c, ngx, "app.test", "/some/env?x=1")
	if code != 200 {
		t.Fatalf("GET /some/env: %d %q", code, body)
	}
	env := decodeEnv(t, body)
	for k, want := range map[string]string{
		"HTTP_HOST": "app.test", "SERVER_NAME": "nginx.test", "PATH_INFO": "/some/env",
		"QUERY_STRING": "x=1", "REQUEST_URI": "/some/env?x=1", "REMOTE_ADDR": "127.0.0.1",
	} {
		if got, ok := env[k]; !ok || got != want {
			t.Errorf("%s = %q (present %v); want %q", k, got, ok, want)
		}
	}
	if _, ok := env["DOCUMENT_ROOT"]; !ok {
		t.Error("nginx's DOCUMENT_ROOT var did not reach the node: vars are not forwarded verbatim")
	}
	// No X-Request-Id from nginx: the router made one, the app sees it and
	// the access log has it; a well-formed one from the client is kept.
	genID := env["HTTP_X_REQUEST_ID"]
	if len(genID) != 32 {
		t.Errorf("HTTP_X_REQUEST_ID = %q; want a generated 32-character id", genID)
	}
	req, _ = http.NewRequest("GET", "http://"+ngx+"/kept/env", nil)
	req.Host = "app.test"
	req.Header.Set("X-Request-Id", "client-id-42")
	if resp, b := doReqRaw(t, c, req); resp.StatusCode != 200 || decodeEnv(t, b)["HTTP_X_REQUEST_ID"] != "client-id-42" {
		t.Errorf("client X-Request-Id through nginx and --uwsgi: %d, app saw %q", resp.StatusCode, decodeEnv(t, b)["HTTP_X_REQUEST_ID"])
	}
	var logged bool
	for _, e := range waitAccessLog(t, logPath, 3) {
		if e.URI == "/some/env?x=1" {
			logged = true
			if e.ID != genID || e.Method != "GET" || e.Host != "app.test" || e.Status != 200 || e.Pool == nil || *e.Pool != "app.test" ||
				e.Node == nil || e.UpstreamHeader == nil || e.Bytes <= 0 || e.Client != "127.0.0.1" && !strings.HasPrefix(e.Client, "127.0.0.1:") {
				t.Errorf("access-log line of the uwsgi front: %+v", e)
			}
		}
	}
	if !logged {
		t.Error("no access-log line for GET /some/env?x=1 through the uwsgi front")
	}

	// UWSGI_FASTROUTER_KEY wins over the host.
	if code, body := get(t, c, ngx, "app.test", "/keyed/x"); code != 200 || body != "node=o" {
		t.Errorf("GET /keyed/ with UWSGI_FASTROUTER_KEY=other: %d %q; want 200 node=o", code, body)
	}

	// A 100 kB upload, sent chunked to nginx, which buffers it and passes
	// CONTENT_LENGTH: the body streams through the router to the app.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 6400)
	sum := sha256.Sum256(payload)
	want := fmt.Sprintf("%d %s", len(payload), hex.EncodeToString(sum[:]))
	for _, chunked := range []bool{false, true} {
		req, _ := http.NewRequest("POST", "http://"+ngx+"/upload", bytes.NewReader(payload))
		req.Host = "app.test"
		if chunked {
			req.ContentLength = -1
			req.TransferEncoding = []string{"chunked"}
		}
		resp, b := doReqRaw(t, c, req)
		if resp.StatusCode != 200 || b != want {
			t.Errorf("upload (chunked=%v): %d %q; want 200 %q", chunked, resp.StatusCode, b, want)
		}
	}

	// A 3 MB download is relayed as the node sends it.
	if code, body := get(t, c, ngx, "app.test", "/download?size=3000000"); code != 200 || len(body) != 3000000 {
		t.Errorf("download: %d, %d bytes; want 200, 3000000", code, len(body))
	}

	// No pool: the router's 404 reaches the client through nginx.
	if code, body := get(t, c, ngx, "nowhere.test", "/"); code != 404 || !strings.Contains(body, "no pool") {
		t.Errorf("unknown host: %d %q; want 404 from the router", code, body)
	}

	// Counted like any request, and the connections under the listener.
	eventually(t, 10*time.Second, "requests counted", func() bool {
		l := metricLines(t, r, "fastrouter_requests_total", `pool="app.test"`, `code="200"`)
		return len(l) == 1 && sampleValue(t, l[0]) >= 5
	})
	if l := metricLines(t, r, "fastrouter_client_connections", `listener="`+uw+`"`, `proto="uwsgi"`); len(l) != 1 {
		t.Errorf("no fastrouter_client_connections for the uwsgi listener: %v", l)
	}
	promtoolCheck(t, r)
}

func doReqRaw(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatalf("%s %s body: %v", req.Method, req.URL, err)
	}
	return resp, b.String()
}
