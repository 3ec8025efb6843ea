package admin

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// The status page (GET /): one server-rendered HTML page with the pools,
// their nodes and states, traffic, and drains in progress, for a laptop or
// a phone. It refreshes itself with a meta refresh (?refresh=N seconds, 0
// stops it) and carries no script at all.
//
// Pool keys and node addresses come from subscription datagrams, that is
// from anyone allowed to send one: html/template escapes them for the
// context they land in (text, attribute, URL), and the Content-Security-
// Policy allows nothing but the page's own stylesheet (pinned by hash) and
// a data: favicon, so even a missed escape could not run code.

// Bounds of one page: a table with thousands of pools is served in full by
// /api/pools, not as HTML.
const (
	maxPoolsOnPage    = 200
	maxNodesPerPool   = 100
	defaultRefresh    = 5
	maxRefreshSeconds = 3600
)

// statusCSS is the page's only stylesheet; its hash is in the CSP.
const statusCSS = `
:root { color-scheme: light; --fg: #1d232b; --muted: #5d6877; --line: #dde2e8; --bg: #f5f7fa; --card: #fff;
  --ok: #1a7f37; --warn: #9a6700; --bad: #c62828; --info: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
h1 { font-size: 1.4rem; margin: 0; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
h3 { font-size: 1rem; margin: 0 0 .25rem; overflow-wrap: anywhere; }
a { color: var(--info); text-decoration: none; }
a:hover { text-decoration: underline; }
.meta { color: var(--muted); margin: .15rem 0 .5rem; font-size: .9rem; overflow-wrap: anywhere; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(8.5rem, 1fr)); gap: .5rem; margin-top: .75rem; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .6rem .75rem; }
.tile .v { display: block; font-size: 1.35rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .k { color: var(--muted); font-size: .85rem; }
.tile.bad .v, .num.bad { color: var(--bad); }
.pool { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .75rem; margin: .6rem 0; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { color: var(--muted); font-weight: 500; }
td.addr { white-space: normal; overflow-wrap: anywhere; min-width: 9rem; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge, .state { display: inline-block; padding: 0 .45rem; border-radius: 999px; font-size: .8rem; font-weight: 600;
  border: 1px solid currentColor; }
.ok, .active { color: var(--ok); }
.degraded, .draining, .backup { color: var(--warn); }
.down, .failed { color: var(--bad); }
.empty, .drained { color: var(--muted); }
.note { color: var(--muted); font-size: .9rem; }
footer { margin-top: 2rem; color: var(--muted); font-size: .85rem; }
@media (min-width: 601px) { table.nodes { table-layout: fixed; } table.nodes th:first-child { width: 34%; } }
@media (max-width: 600px) { body { padding: .6rem; font-size: 14px; } th, td { padding: .25rem .35rem; }
  .tiles { grid-template-columns: repeat(auto-fill, minmax(6.5rem, 1fr)); } .tile .v { font-size: 1.15rem; }
  .opt { display: none; } .pool { padding: .5rem; } td.addr { min-width: 7rem; } }
`

// statusCSP allows the page's stylesheet (by hash) and a data: favicon,
// nothing else: no script, no frame, no form.
var statusCSP = func() string {
	sum := sha256.Sum256([]byte(statusCSS))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

var statusTmpl = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<title>fastrouter status</title>
<link rel="icon" href="data:,">
<style>{{.CSS}}</style>
</head>
<body>
<header>
<h1>fastrouter</h1>
<p class="meta">{{.Version}} · up {{.Uptime}} · {{.Now}}{{if .Refresh}} · refreshes every {{.Refresh}} s{{end}}</p>
</header>
<section class="tiles" aria-label="summary">
<div class="tile"><span class="v">{{.Pools}}</span><span class="k">pools</span></div>
<div class="tile"><span class="v">{{.NodesActive}}/{{.Nodes}}</span><span class="k">nodes active</span></div>
<div class="tile"><span class="v">{{.Inflight}}</span><span class="k">in flight</span></div>
<div class="tile"><span class="v">{{.Rate}}</span><span class="k">requests/s</span></div>
<div class="tile{{if .ErrHigh}} bad{{end}}"><span class="v">{{.ErrRate}}</span><span class="k">5xx/s</span></div>
<div class="tile"><span class="v">{{.Conns}}</span><span class="k">client connections</span></div>
<div class="tile"><span class="v">{{len .Drains}}</span><span class="k">drains in progress</span></div>
</section>
{{if .Drains}}<section>
<h2>Drains in progress</h2>
<div class="scroll"><table>
<thead><tr><th>pool</th><th>node</th><th class="num">in flight</th><th class="num opt">served</th><th class="num opt">forced</th><th class="opt">started</th><th>deadline</th></tr></thead>
<tbody>{{range .Drains}}
<tr><td class="addr">{{.Pool}}</td><td class="addr">{{.Node}}</td><td class="num">{{.Inflight}}</td><td class="num opt">{{.Served}}</td><td class="num opt">{{.Forced}}</td><td class="opt">{{.Started}} ago</td><td>{{.Deadline}}</td></tr>{{end}}
</tbody></table></div>
</section>{{end}}
{{if .Certs}}<section>
<h2>Certificates</h2>
<div class="scroll"><table>
<thead><tr><th>name</th><th class="opt">issuer</th><th>expires</th><th>next renewal</th><th>last error</th></tr></thead>
<tbody>{{range .Certs}}
<tr><td class="addr">{{.Name}}{{if .OnDemand}} <span class="badge empty">on demand</span>{{end}}</td><td class="opt">{{.Issuer}}</td><td>{{.NotAfter}}</td><td>{{.NextRenewal}}</td><td class="addr{{if .LastError}} num bad{{end}}">{{.LastError}}</td></tr>{{end}}
</tbody></table></div>
{{if .CertOrderer}}<p class="note">Ordered and renewed by {{.CertOrderer}} for the cluster.</p>{{end}}
{{if .MoreCerts}}<p class="note">{{.MoreCerts}} more: see <a href="/api/certificates">/api/certificates</a>.</p>{{end}}
</section>{{end}}
<section>
<h2>Pools</h2>
{{range .PoolRows}}<article class="pool">
<h3><a href="{{.Link}}">{{.Key}}</a> <span class="badge {{.Health}}">{{.Health}}</span></h3>
<p class="meta">{{.Algo}} · {{.Rate}} req/s · <span class="{{if .ErrHigh}}num bad{{end}}">{{.ErrRate}} 5xx/s</span> · {{.Inflight}} in flight · {{.NodeCount}}</p>
{{if .Nodes}}<div class="scroll"><table class="nodes">
<thead><tr><th>node</th><th>state</th><th class="num opt">weight</th><th class="num">in flight</th><th class="num opt">requests</th><th class="num">failures</th><th class="opt">last seen</th></tr></thead>
<tbody>{{range .Nodes}}
<tr><td class="addr"><a href="{{.Link}}">{{.Address}}</a></td><td><span class="state {{.State}}">{{.State}}</span></td><td class="num opt">{{.Weight}}</td><td class="num">{{.Inflight}}</td><td class="num opt">{{.Requests}}</td><td class="num">{{.Failures}}</td><td class="opt">{{.LastSeen}}</td></tr>{{end}}
</tbody></table></div>{{end}}
{{if .MoreNodes}}<p class="note">{{.MoreNodes}} more nodes: see <a href="{{.Link}}">the pool's JSON</a>.</p>{{end}}
</article>
{{else}}<p class="note">No pools yet. Nodes join with uWSGI's <code>--subscribe-to</code>, or add static ones with <code>--to KEY=ADDR</code>.</p>
{{end}}{{if .MorePools}}<p class="note">{{.MorePools}} more pools: see <a href="/api/pools">/api/pools</a>.</p>{{end}}
</section>
<footer>JSON: <a href="/api/pools">/api/pools</a>{{if .Certs}} · <a href="/api/certificates">/api/certificates</a>{{end}} · metrics: <a href="/metrics">/metrics</a></footer>
</body>
</html>
`))

// The page's view model: every string is plain text; the template escapes.
type (
	statusView struct {
		CSS                  template.CSS
		Version, Uptime, Now string
		Refresh              int
		Pools, Nodes         int
		NodesActive          int
		Inflight             int64
		Rate, ErrRate, Conns string
		ErrHigh              bool
		Drains               []drainView
		PoolRows             []poolView
		MorePools            int
		Certs                []certView
		CertOrderer          string
		MoreCerts            int
	}
	certView struct {
		Name, Issuer, NotAfter, NextRenewal, LastError string
		OnDemand                                       bool
	}
	poolView struct {
		Key, Link, Algo, Health string
		Rate, ErrRate           string
		NodeCount               string // "1 node", "3 nodes"
		ErrHigh                 bool
		Inflight                int64
		Nodes                   []nodeView
		MoreNodes               int
	}
	nodeView struct {
		Address, Link, State, LastSeen string
		Weight, Inflight               int64
		Requests, Failures             uint64
	}
	drainView struct {
		Pool, Node, Started, Deadline string
		Inflight                      int64
		Served, Forced                uint64
	}
)

func (h *Handler) statusPage(w http.ResponseWriter, r *http.Request) {
	refresh := defaultRefresh
	if v := r.URL.Query().Get("refresh"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxRefreshSeconds {
			h.writeError(w, http.StatusBadRequest, "refresh: want seconds between 0 (off) and 3600")
			return
		}
		refresh = n
	}
	v := h.statusView(refresh)
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", statusCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	if err := statusTmpl.Execute(w, v); err != nil {
		h.cfg.Logger.Debug("admin: status page", "err", err)
	}
}

// statusView builds the page's model from the table and the rates.
func (h *Handler) statusView(refresh int) *statusView {
	now := h.cfg.Now()
	v := &statusView{
		CSS:     template.CSS(statusCSS),
		Version: h.cfg.Version, Refresh: refresh,
		Uptime: age(now.Sub(h.cfg.Started)), Now: now.UTC().Format("2006-01-02 15:04:05 UTC"),
		Rate: "–", ErrRate: "–", Conns: "–",
	}
	var poolRates map[string]rate
	var total rate
	if h.rates != nil {
		var conns float64
		poolRates, total, conns = h.rates.snapshot()
		v.Conns = strconv.FormatFloat(conns, 'f', 0, 64)
		if total.OK {
			v.Rate, v.ErrRate, v.ErrHigh = perSecond(total.Requests), perSecond(total.Errors), total.Errors > 0
		}
	}
	h.certView(v, now)
	pools := h.cfg.Table.Pools()
	slices.SortFunc(pools, func(a, b *balancer.Pool) int { return strings.Compare(a.Key, b.Key) })
	v.Pools = len(pools)
	for i, p := range pools {
		pv := poolView{Key: p.Key, Link: "/api/pools/" + url.PathEscape(p.Key), Algo: string(p.Algo()), Rate: "–", ErrRate: "–"}
		if pr, ok := poolRates[p.Key]; ok && pr.OK {
			pv.Rate, pv.ErrRate, pv.ErrHigh = perSecond(pr.Requests), perSecond(pr.Errors), pr.Errors > 0
		} else if total.OK {
			pv.Rate, pv.ErrRate = "0", "0" // no request counted for it yet
		}
		h.addNodes(v, &pv, p, i < maxPoolsOnPage, now)
		if i < maxPoolsOnPage {
			v.PoolRows = append(v.PoolRows, pv)
		} else {
			v.MorePools++
		}
	}
	return v
}

// addNodes counts p's nodes in the page's totals and drains, and, when the
// pool is shown, lists them (at most maxNodesPerPool) in pv with its
// health.
func (h *Handler) addNodes(v *statusView, pv *poolView, p *balancer.Pool, shown bool, now time.Time) {
	nodes := p.Nodes()
	active, unusable := 0, 0
	for j, n := range nodes {
		info := n.Info()
		v.Nodes++
		v.Inflight += info.Inflight
		pv.Inflight += info.Inflight
		switch info.State {
		case balancer.StateActive:
			active++
			v.NodesActive++
		case balancer.StateDraining, balancer.StateFailed:
			unusable++
		}
		if d := n.Drain(); !d.Started.IsZero() && info.State == balancer.StateDraining {
			deadline := "in " + age(d.Deadline.Sub(now))
			if now.After(d.Deadline) {
				deadline = "passed"
			}
			v.Drains = append(v.Drains, drainView{
				Pool: p.Key, Node: info.Address, Started: age(now.Sub(d.Started)), Deadline: deadline,
				Inflight: info.Inflight, Served: d.Served, Forced: d.Forced,
			})
		}
		if !shown {
			continue // counted in the totals, not shown
		}
		if j >= maxNodesPerPool {
			pv.MoreNodes++
			continue
		}
		lastSeen := age(now.Sub(info.LastSeen)) + " ago"
		if info.Static {
			lastSeen = "static"
		}
		pv.Nodes = append(pv.Nodes, nodeView{
			Address: info.Address, Link: pv.Link + "/nodes/" + url.PathEscape(info.Address),
			State: info.State.String(), LastSeen: lastSeen, Weight: info.Weight,
			Inflight: info.Inflight, Requests: info.Requests, Failures: info.Failures,
		})
	}
	switch {
	case len(nodes) == 0:
		pv.Health = "empty"
	case active == 0:
		pv.Health = "down"
	case unusable > 0:
		pv.Health = "degraded"
	default:
		pv.Health = "ok"
	}
	pv.NodeCount = strconv.Itoa(len(nodes)) + " nodes"
	if len(nodes) == 1 {
		pv.NodeCount = "1 node"
	}
}

// maxCertsOnPage bounds the certificates listed; /api/certificates has all.
const maxCertsOnPage = 200

// certView fills the certificates section from Config.Certificates.
func (h *Handler) certView(v *statusView, now time.Time) {
	if h.cfg.Certificates == nil {
		return
	}
	for i, c := range h.cfg.Certificates() {
		if i >= maxCertsOnPage {
			v.MoreCerts++
			continue
		}
		cv := certView{Name: c.Name, Issuer: c.Issuer, OnDemand: c.OnDemand, LastError: c.LastError, NotAfter: "–", NextRenewal: "–"}
		if !c.NotAfter.IsZero() {
			cv.NotAfter = "in " + age(c.NotAfter.Sub(now))
			if now.After(c.NotAfter) {
				cv.NotAfter = "expired " + age(now.Sub(c.NotAfter)) + " ago"
			}
		}
		if !c.NextRenewal.IsZero() {
			cv.NextRenewal = "in " + age(c.NextRenewal.Sub(now))
			if now.After(c.NextRenewal) {
				cv.NextRenewal = "due"
			}
		}
		v.CertOrderer = c.Orderer
		v.Certs = append(v.Certs, cv)
	}
	if len(v.Certs) == 0 && v.MoreCerts == 0 {
		// ACME is on but nothing is managed yet: say so rather than hide it.
		v.Certs = append(v.Certs, certView{Name: "(none yet)", NotAfter: "–", NextRenewal: "–"})
	}
}

// perSecond formats a rate for the page.
func perSecond(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 10:
		return strconv.FormatFloat(r, 'f', 2, 64)
	default:
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
}

// age formats a duration the way people read one at a glance: 42s, 3m10s,
// 5h02m, 12d03h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
	}
}
