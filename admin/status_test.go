package admin

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/html"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Hostile names, as anyone allowed to send a subscription datagram could
// announce them: keys are printable ASCII without spaces, addresses any
// printable UTF-8.
const (
	hostileKey  = `<script>alert(1)</script>"'&amp;`
	hostileAddr = `/tmp/"><img src=x onerror=alert(2)>.sock`
)

type statusFixture struct {
	h     *Handler
	table *balancer.Table
	reqs  *prometheus.CounterVec
	clock *fakeClock
}

func newStatusFixture(t *testing.T) *statusFixture {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	table, err := balancer.New(balancer.Config{Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ key, addr string }{
		{"app.example.com", "10.0.0.1:3031"},
		{"app.example.com", "10.0.0.2:3031"},
		{hostileKey, hostileAddr},
	} {
		if _, err := table.Announce(&balancer.Announce{Key: []byte(n.key), Address: []byte(n.addr)}); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fastrouter_requests_total", Help: "x"}, []string{"pool", "code"})
	reg.MustRegister(reqs)
	h, err := New(Config{
		Table: table, Gatherer: reg, Version: "fastrouter test", Now: clock.now,
		RateInterval: time.Hour, RateWindow: 2 * time.Hour, // samples are taken by hand
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &statusFixture{h: h, table: table, reqs: reqs, clock: clock}
}

// page fetches the status page and parses it.
func (f *statusFixture) page(t *testing.T, query string) (string, *html.Node, *httptest.ResponseRecorder) {
	t.Helper()
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, httptest.NewRequest("GET", "/"+query, nil))
	body := w.Body.String()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return body, doc, w
}

// walk calls f for every element.
func walk(n *html.Node, f func(*html.Node)) {
	if n.Type == html.ElementNode {
		f(n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func text(n *html.Node) string {
	var b strings.Builder
	var rec func(*html.Node)
	rec = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			rec(c)
		}
	}
	rec(n)
	return b.String()
}

func TestStatusPageEscapesHostileNames(t *testing.T) {
	f := newStatusFixture(t)
	body, doc, w := f.page(t, "")
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	var styles []string
	walk(doc, func(n *html.Node) {
		switch n.Data {
		case "script", "img", "iframe", "object", "embed", "form":
			t.Errorf("page has a <%s> element: injection", n.Data)
		case "style":
			styles = append(styles, text(n))
		}
		for _, a := range n.Attr {
			if strings.HasPrefix(strings.ToLower(a.Key), "on") {
				t.Errorf("<%s %s=%q>: event handler attribute", n.Data, a.Key, a.Val)
			}
			if a.Key == "href" && !strings.HasPrefix(a.Val, "/") && a.Val != "data:," {
				t.Errorf("<%s href=%q>: not a local link", n.Data, a.Val)
			}
		}
	})
	// The names are shown, as text.
	all := text(doc)
	for _, s := range []string{hostileKey, hostileAddr, "app.example.com", "10.0.0.2:3031"} {
		if !strings.Contains(all, s) {
			t.Errorf("page text lacks %q", s)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "<img") {
		t.Errorf("raw markup from a name reached the page:\n%s", body)
	}
	// The one stylesheet is the one the CSP pins.
	csp := w.Header().Get("Content-Security-Policy")
	if len(styles) != 1 {
		t.Fatalf("%d <style> elements; want 1", len(styles))
	}
	sum := sha256.Sum256([]byte(styles[0]))
	if want := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) {
		t.Errorf("CSP %q does not allow the page's stylesheet (%s)", csp, want)
	}
	for _, d := range []string{"default-src 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
}

func TestStatusPageShowsStatesRatesAndDrains(t *testing.T) {
	f := newStatusFixture(t) // New took the first sample: nothing counted yet
	f.clock.add(10 * time.Second)
	f.reqs.WithLabelValues("app.example.com", "200").Add(50)
	f.reqs.WithLabelValues("app.example.com", "502").Add(5)
	f.reqs.WithLabelValues("", "404").Add(5)
	f.h.rates.sample()
	if _, err := f.table.Drain("app.example.com", "10.0.0.2:3031", time.Minute, false); err != nil {
		t.Fatal(err)
	}
	f.clock.add(3 * time.Second)

	_, doc, _ := f.page(t, "")
	all := text(doc)
	for _, want := range []string{
		"fastrouter test",
		"6.00requests/s", // (55 + 5) / 10 s, 404s of unknown hosts included
		"0.505xx/s",
		"Drains in progress",
		"2/3nodes active",          // one of three is draining
		"5.50 req/s", "0.50 5xx/s", // app.example.com
		"draining", "degraded",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("page lacks %q:\n%s", want, all)
		}
	}
	// The drain row: pool, node, age.
	var drainRow string
	walk(doc, func(n *html.Node) {
		if n.Data == "tr" && strings.Contains(text(n), "10.0.0.2:3031") && strings.Contains(text(n), "ago") && drainRow == "" {
			drainRow = text(n)
		}
	})
	if !strings.Contains(drainRow, "app.example.com") || !strings.Contains(drainRow, "3s ago") || !strings.Contains(drainRow, "in 57s") {
		t.Errorf("drain row %q; want the pool, started 3s ago, deadline in 57s", drainRow)
	}
}

func TestStatusPageRefresh(t *testing.T) {
	f := newStatusFixture(t)
	refresh := func(doc *html.Node) string {
		var got string
		walk(doc, func(n *html.Node) {
			if n.Data == "meta" {
				var isRefresh bool
				var content string
				for _, a := range n.Attr {
					isRefresh = isRefresh || (a.Key == "http-equiv" && a.Val == "refresh")
					if a.Key == "content" {
						content = a.Val
					}
				}
				if isRefresh {
					got = content
				}
			}
		})
		return got
	}
	if _, doc, _ := f.page(t, ""); refresh(doc) != "5" {
		t.Errorf("default refresh %q; want 5", refresh(doc))
	}
	if _, doc, _ := f.page(t, "?refresh=30"); refresh(doc) != "30" {
		t.Errorf("?refresh=30 gives %q", refresh(doc))
	}
	if _, doc, _ := f.page(t, "?refresh=0"); refresh(doc) != "" {
		t.Errorf("?refresh=0 still refreshes (%q)", refresh(doc))
	}
	for _, bad := range []string{"?refresh=-1", "?refresh=x", "?refresh=99999"} {
		if _, _, w := f.page(t, bad); w.Code != 400 {
			t.Errorf("%s: %d; want 400", bad, w.Code)
		}
	}
}

func TestStatusPageIsBounded(t *testing.T) {
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxPoolsOnPage + 50 {
		table.AddStatic(fmt.Sprintf("p%04d.test", i), "10.0.0.1:3031", 1)
	}
	for i := range maxNodesPerPool + 7 {
		table.AddStatic("p0000.test", fmt.Sprintf("10.1.%d.%d:3031", i/250, i%250+1), 1)
	}
	h, err := New(Config{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	body := w.Body.String()
	if n := strings.Count(body, `<article class="pool">`); n != maxPoolsOnPage {
		t.Errorf("%d pools on the page; want %d", n, maxPoolsOnPage)
	}
	for _, want := range []string{"50 more pools", "8 more nodes"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "p0249.test") {
		t.Error("a pool beyond the bound is on the page")
	}
}

func TestRatesHandleResets(t *testing.T) {
	if got := increase(10, 4); got != 4 {
		t.Errorf("increase(10, 4) = %v; want 4 (a reset)", got)
	}
	if got := increase(4, 10); got != 6 {
		t.Errorf("increase(4, 10) = %v; want 6", got)
	}
	f := newStatusFixture(t)
	if _, total, _ := f.h.rates.snapshot(); total.OK {
		t.Fatal("rates from a single sample")
	}
	// The window keeps RateWindow/RateInterval+1 samples.
	for range 10 {
		f.clock.add(time.Hour)
		f.h.rates.sample()
	}
	if n := len(f.h.rates.samples); n != 3 {
		t.Fatalf("%d samples kept; want 3", n)
	}
}

func TestPprofIsOptIn(t *testing.T) {
	h, _ := newHandler(t, "")
	if code, _ := do(t, h, "GET", "/debug/pprof/", "", ""); code != 404 {
		t.Errorf("pprof without the flag: %d; want 404", code)
	}
	tb, _ := balancer.New(balancer.Config{})
	h, err := New(Config{Table: tb, Pprof: true})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, h, "GET", "/debug/pprof/", "", ""); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof index: %d", code)
	}
	if code, body := do(t, h, "GET", "/debug/pprof/goroutine?debug=1", "", ""); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %d %.80q", code, body)
	}
}

// With a RateGatherer the rates come from it alone, not from the (large)
// Gatherer behind /metrics.
func TestRatesUseRateGatherer(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	table, err := balancer.New(balancer.Config{Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	newReqs := func(reg *prometheus.Registry) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fastrouter_requests_total", Help: "x"}, []string{"pool", "code"})
		reg.MustRegister(c)
		return c
	}
	all, small := prometheus.NewRegistry(), prometheus.NewRegistry()
	allReqs, smallReqs := newReqs(all), newReqs(small)
	h, err := New(Config{
		Table: table, Gatherer: all, RateGatherer: small, Now: clock.now,
		RateInterval: time.Hour, RateWindow: 2 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	allReqs.WithLabelValues("a.test", "200").Add(7200)   // must not be seen
	smallReqs.WithLabelValues("b.test", "503").Add(3600) // 1/s over an hour
	clock.add(time.Hour)
	h.rates.sample()
	pools, total, _ := h.rates.snapshot()
	if !total.OK || total.Requests != 1 || total.Errors != 1 {
		t.Fatalf("total = %+v; want 1 request/s, 1 error/s from RateGatherer", total)
	}
	if _, ok := pools["a.test"]; ok {
		t.Errorf("rates sampled the /metrics Gatherer: %v", pools)
	}
}

// TestStatusPageCertificates: with automatic HTTPS the page lists the
// managed certificates (expiry, next renewal, last error, escaped);
// without it there is no such section.
func TestStatusPageCertificates(t *testing.T) {
	f := newStatusFixture(t)
	if body, _, _ := f.page(t, ""); strings.Contains(body, "Certificates") {
		t.Fatal("a Certificates section without automatic HTTPS")
	}
	now := f.clock.now()
	f.h.cfg.Certificates = func() []Certificate {
		return []Certificate{
			{Name: "shop.example.com", Issuer: "R11", NotAfter: now.Add(60 * 24 * time.Hour), NextRenewal: now.Add(30 * 24 * time.Hour), Orderer: "router-1"},
			{Name: "new.example.com", OnDemand: true, LastError: `<b>rate limited</b>`, Orderer: "router-1"},
		}
	}
	body, doc, _ := f.page(t, "")
	var rows []string
	walk(doc, func(n *html.Node) {
		if n.Data == "tr" && strings.Contains(text(n), "example.com") {
			var cells []string
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				if c.Data == "td" {
					cells = append(cells, strings.Join(strings.Fields(text(c)), " "))
				}
			}
			rows = append(rows, strings.Join(cells, "|"))
		}
	})
	want := []string{
		"shop.example.com|R11|in 60d00h|in 30d00h|",
		"new.example.com on demand||–|–|<b>rate limited</b>",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%q\nwant\n%q", rows, want)
	}
	if strings.Contains(body, "<b>rate") || !strings.Contains(body, "router-1") || !strings.Contains(body, `href="/api/certificates"`) {
		t.Error("last error not escaped, orderer or link missing")
	}
}
