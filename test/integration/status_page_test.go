package integration

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// screenshotDir is where the status page's screenshots go: a stable path
// in the tree (ignored by git) that the test log names.
const screenshotDir = "../../bench/results"

// The detector of page problems must be able to fail: a page with a
// console error and an uncaught exception is caught.
func TestBrowserDetectsPageErrors(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><title>bad</title><link rel="icon" href="data:,">`+
			`<script>console.error("planted error")</script><script>noSuchFunction()</script>`)
	}))
	defer bad.Close()
	b := startBrowser(t)
	since := b.mark()
	b.navigate(t, bad.URL)
	time.Sleep(500 * time.Millisecond)
	p := strings.Join(b.problems(since), "\n")
	if !strings.Contains(p, "planted error") || !strings.Contains(p, "noSuchFunction") {
		t.Fatalf("the detector missed planted errors; it saw:\n%s", p)
	}
}

// The status page in a real browser (headless Chromium): it loads without
// a console error, shows pools, nodes, states, rates and a drain in
// progress, renders hostile names as text, fits a phone's width, refreshes
// itself, and is captured as screenshots.
func TestStatusPageInBrowser(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRouter(t, "--to", "static.example="+dead)
	startNode(t, r, "shop.example.com", nodeOpts{id: "a", processes: 1, threads: 4})
	slow := startNode(t, r, "shop.example.com", nodeOpts{id: "b", processes: 1, threads: 4})
	startNode(t, r, "api.example.org", nodeOpts{id: "c"})
	// What anyone allowed to send a datagram could announce.
	const hostileKey = `<script>alert(1)</script>`
	const hostileAddr = `/tmp/"><img src=x onerror=alert(2)>.sock`
	announce(t, r, uwsgi.Subscription{Key: []byte(hostileKey), Address: []byte(hostileAddr)})
	waitForNodes(t, r, "shop.example.com", 2)
	waitForNodes(t, r, "api.example.org", 1)
	waitForNodes(t, r, hostileKey, 1)

	// Traffic, a 502 from the dead static node, and a drain with a request
	// still in flight.
	c := client()
	for range 40 {
		get(t, c, r.http, "shop.example.com", "/")
	}
	for range 5 {
		get(t, c, r.http, "api.example.org", "/")
	}
	if code, _ := get(t, c, r.http, "static.example", "/"); code != 502 {
		t.Fatalf("dead static node: %d; want 502", code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range 2 { // wrr: one slow request on each node
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+r.http+"/slow?ms=60000", nil)
			req.Host = "shop.example.com"
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	eventually(t, 15*time.Second, "two slow requests in flight", func() bool {
		p := r.pool(t, "shop.example.com")
		return p != nil && p.node(slow.addr) != nil && p.node(slow.addr).Inflight == 1 && p.Nodes[0].Inflight+p.Nodes[1].Inflight == 2
	})
	if code, body := adminPost(t, r, "/api/pools/shop.example.com/nodes/"+slow.addr+"/drain", `{"timeout":"120s"}`); code != 202 {
		t.Fatalf("drain: %d %s", code, body)
	}
	// The rates need two samples (every 5 s).
	eventually(t, 30*time.Second, "request rates on the status page", func() bool {
		_, body := get(t, client(), r.admin, r.admin, "/")
		return !regexp.MustCompile(`<span class="v">–</span><span class="k">requests/s`).MatchString(body)
	})

	b := startBrowser(t)
	since := b.mark()
	b.navigate(t, "http://"+r.admin+"/?refresh=0")
	time.Sleep(time.Second) // late console messages
	var page struct {
		Scripts, Images, Embeds, Pools int
		Text                           string
		ScrollWidth, InnerWidth        int
	}
	const probe = `({Scripts: document.scripts.length, Images: document.images.length,
		Embeds: document.querySelectorAll("iframe,object,embed,form").length,
		Pools: document.querySelectorAll("article.pool").length, Text: document.body.innerText,
		ScrollWidth: document.documentElement.scrollWidth, InnerWidth: window.innerWidth})`
	b.eval(t, probe, &page)
	if p := b.problems(since); len(p) > 0 {
		t.Errorf("the status page reported problems:\n%s", strings.Join(p, "\n"))
	}
	if page.Scripts != 0 || page.Images != 0 || page.Embeds != 0 {
		t.Errorf("page has %d scripts, %d images, %d embeds; want none (hostile names must stay text)", page.Scripts, page.Images, page.Embeds)
	}
	if page.Pools != 4 {
		t.Errorf("%d pools on the page; want 4", page.Pools)
	}
	for _, want := range []string{
		hostileKey, hostileAddr, "shop.example.com", "api.example.org", slow.addr, dead,
		"Drains in progress", "draining", "failed", "down", "degraded", "5xx/s",
	} {
		if !strings.Contains(page.Text, want) {
			t.Errorf("the page does not show %q:\n%s", want, page.Text)
		}
	}

	desktop := b.screenshot(t, 1280, 900, 1, false)
	phone := b.screenshot(t, 390, 844, 2, true)
	b.eval(t, probe, &page)
	if page.InnerWidth != 390 || page.ScrollWidth > page.InnerWidth {
		t.Errorf("on a 390 px phone the page is %d px wide (viewport %d): it must not scroll sideways", page.ScrollWidth, page.InnerWidth)
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, shot := range map[string][]byte{"status-page.png": desktop, "status-page-phone.png": phone} {
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			t.Fatalf("%s: not a PNG: %v", name, err)
		}
		if w := img.Bounds().Dx(); w != 1280 && w != 780 {
			t.Errorf("%s is %d px wide", name, w)
		}
		path, _ := filepath.Abs(filepath.Join(screenshotDir, name))
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%dx%d)", path, img.Bounds().Dx(), img.Bounds().Dy())
	}
	if p := b.problems(since); len(p) > 0 {
		t.Errorf("problems while resizing:\n%s", strings.Join(p, "\n"))
	}

	// The page refreshes itself: with ?refresh=1 it loads again and again.
	since = b.mark()
	b.navigate(t, "http://"+r.admin+"/?refresh=1")
	b.waitEvents(t, "Page.loadEventFired", since, 3, 30*time.Second)
	if p := b.problems(since); len(p) > 0 {
		t.Errorf("problems across refreshes:\n%s", strings.Join(p, "\n"))
	}
}
