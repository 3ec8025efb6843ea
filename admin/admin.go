// Package admin serves fastrouter's operator API on the admin listener:
// health, the pool table as JSON, Prometheus metrics, the HTML status page
// (status.go) and, when enabled, pprof.
//
// It is plain net/http: the admin port carries a handful of requests, so
// clarity beats the request path's zero-allocation rules here.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Table is what the admin API reads and changes in the routing table.
type Table interface {
	Pools() []*balancer.Pool
	Pool(key string) *balancer.Pool
	Drain(key, address string, timeout time.Duration, force bool) (*balancer.Node, error)
	Undrain(key, address string) (*balancer.Node, error)
	RemoveNode(key, address string) bool
	AddStatic(key, address string, weight uint64) error
}

// Admission decides whether a node added through the API may enter: the
// rules a subscription datagram meets that need no datagram (--node-allow,
// a public key for the pool under --subscriptions-sign-check).
// *subauth.Guard implements it.
type Admission interface {
	// AdmitNode returns nil, or an error that says which rule refuses the
	// node (shown to the caller as is).
	AdmitNode(key, address []byte) error
}

// Config configures the admin handler.
type Config struct {
	Table Table // required
	// Admission, if set, is asked before POST /api/pools/{key}/nodes adds
	// a node: a refusal answers 403 with the rule named. Nil: none.
	Admission Admission
	Gatherer  prometheus.Gatherer // metrics source; nil disables /metrics
	Logger    *slog.Logger        // default slog.Default()
	// Token, when non-empty, must be presented as "Authorization: Bearer
	// <token>" on every mutating call (POST, DELETE).
	Token string
	// DrainTimeout is the deadline of a drain that names none. Default 30s.
	DrainTimeout time.Duration
	// Version is shown on the status page.
	Version string
	// Started is when the process started, for the status page's uptime.
	// Default: when New ran.
	Started time.Time
	// Pprof mounts net/http/pprof under /debug/pprof/. Profiles expose the
	// process's internals and cost CPU while they run: enable it only on a
	// trusted admin listener.
	Pprof bool
	// RateInterval is how often the status page's request and error rates
	// are sampled from RateGatherer; RateWindow is the span they average
	// over. Defaults 5s and 30s.
	RateInterval, RateWindow time.Duration
	// RateGatherer is what the rates are sampled from: it needs only
	// fastrouter_requests_total and fastrouter_client_connections, and a
	// Gatherer of just those keeps the sampling cheap when /metrics is large
	// (100k pools, many nodes). Default Gatherer.
	RateGatherer prometheus.Gatherer
	// Certificates, if set, lists the certificates automatic HTTPS manages
	// (package acme) for the status page. Nil: the section is left out.
	Certificates func() []Certificate
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Certificate is one certificate automatic HTTPS manages, as the status
// page shows it (GET /api/certificates has the full record).
type Certificate struct {
	Name, Issuer          string
	NotAfter, NextRenewal time.Time // zero: no certificate yet
	OnDemand              bool
	Orderer               string // the router that orders it; "" alone
	LastError             string
}

// Handler is the admin API's http.Handler. With a Gatherer it runs a
// goroutine that samples request rates for the status page: Close stops it.
type Handler struct {
	cfg   Config
	mux   *http.ServeMux
	rates *rates // nil without a Gatherer
	// stopping is set by ShuttingDown: /healthz answers 503 from then on.
	stopping atomic.Bool
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Table == nil {
		return nil, errors.New("admin: Config.Table is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Started.IsZero() {
		cfg.Started = cfg.Now()
	}
	if cfg.RateInterval <= 0 {
		cfg.RateInterval = 5 * time.Second
	}
	if cfg.RateWindow < cfg.RateInterval {
		cfg.RateWindow = max(30*time.Second, cfg.RateInterval)
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", h.statusPage)
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /api/pools", h.listPools)
	h.mux.HandleFunc("GET /api/pools/{key}", h.getPool)
	h.mux.HandleFunc("GET /api/pools/{key}/nodes/{address}", h.getNode)
	h.mux.HandleFunc("POST /api/pools/{key}/nodes/{address}/drain", h.auth(h.drain))
	h.mux.HandleFunc("POST /api/pools/{key}/nodes/{address}/undrain", h.auth(h.undrain))
	h.mux.HandleFunc("DELETE /api/pools/{key}/nodes/{address}", h.auth(h.deleteNode))
	h.mux.HandleFunc("POST /api/pools/{key}/nodes", h.auth(h.addNode))
	if cfg.Pprof {
		// The handlers of net/http/pprof, on this mux only. (Importing the
		// package also registers them on http.DefaultServeMux, which
		// fastrouter never serves.)
		h.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		h.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		h.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		h.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		h.mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		h.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	if cfg.Gatherer != nil {
		h.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogAdapter{cfg.Logger}}))
		rg := cfg.RateGatherer
		if rg == nil {
			rg = cfg.Gatherer
		}
		h.rates = newRates(rg, cfg.RateInterval, cfg.RateWindow, cfg.Now)
		h.rates.start()
	}
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Close stops the rate sampler. The handler keeps serving (the status page
// shows the last rates). Call it once.
func (h *Handler) Close() {
	if h.rates != nil {
		h.rates.close()
	}
}

// ShuttingDown makes /healthz answer 503 "shutting down" from now on, so
// that a load balancer in front of the router moves traffic away while it
// still serves (Traefik's terminatingStatusCode). Safe to call from any
// goroutine, more than once.
func (h *Handler) ShuttingDown() { h.stopping.Store(true) }

// healthz answers 200 "ok" while the router serves, 503 "shutting down"
// once its shutdown began.
func (h *Handler) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if h.stopping.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("shutting down"))
		return
	}
	_, _ = w.Write([]byte("ok"))
}

// PoolJSON is the stable JSON shape of a pool (README, "Admin API"):
// deploy scripts read it, so fields are added, never renamed.
type PoolJSON struct {
	Key  string `json:"key"`
	Algo string `json:"algo"`
	// MaxInflight is the per-node in-flight cap ("auto" = the node's
	// cores), absent when uncapped; Queued the requests waiting for a node
	// under it.
	MaxInflight string     `json:"max_inflight,omitempty"`
	Queued      int        `json:"queued"`
	Nodes       []NodeJSON `json:"nodes"`
}

// NodeJSON is the stable JSON shape of a node (README, "Admin API").
type NodeJSON struct {
	Address   string    `json:"address"`
	Weight    int64     `json:"weight"`
	State     string    `json:"state"`
	Inflight  int64     `json:"inflight"`
	Requests  uint64    `json:"requests"`
	Failures  uint64    `json:"failures"`
	LastSeen  time.Time `json:"last_seen"`
	Static    bool      `json:"static"`
	Cores     uint64    `json:"cores"`
	Load      uint64    `json:"load"`
	Modifier1 uint8     `json:"modifier1"`
	Modifier2 uint8     `json:"modifier2"`
	// Healthy is false while the node is failing: its last connect failed
	// or an active health check marks it down. It never contradicts State:
	// a node that is not healthy shows "failed" (or "draining"/"drained"
	// when a drain holds it), a "failed" one is never healthy.
	Healthy bool       `json:"healthy"`
	Drain   *DrainJSON `json:"drain,omitempty"`
}

// DrainJSON is a node's drain progress.
type DrainJSON struct {
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"`
	Served   uint64    `json:"served"`
	Forced   uint64    `json:"forced"`
	Inflight int64     `json:"inflight"`
}

func poolJSON(p *balancer.Pool) PoolJSON {
	out := PoolJSON{Key: p.Key, Algo: string(p.Algo()), Queued: p.Waiting(), Nodes: []NodeJSON{}}
	if c := p.Policy().MaxInflight; c != 0 {
		out.MaxInflight = balancer.FormatLimit(c)
	}
	for _, n := range p.Nodes() {
		out.Nodes = append(out.Nodes, nodeJSON(n))
	}
	return out
}

func nodeJSON(n *balancer.Node) NodeJSON {
	i := n.Info()
	out := NodeJSON{
		Address: i.Address, Weight: i.Weight, State: i.State.String(), Inflight: i.Inflight,
		Requests: i.Requests, Failures: i.Failures, LastSeen: i.LastSeen.UTC(), Static: i.Static,
		Cores: i.Cores, Load: i.Load, Modifier1: i.Modifier1, Modifier2: i.Modifier2, Healthy: i.Healthy,
	}
	if d := n.Drain(); !d.Started.IsZero() {
		out.Drain = &DrainJSON{Started: d.Started.UTC(), Deadline: d.Deadline.UTC(), Served: d.Served, Forced: d.Forced, Inflight: i.Inflight}
	}
	return out
}

func (h *Handler) listPools(w http.ResponseWriter, _ *http.Request) {
	pools := h.cfg.Table.Pools()
	out := make([]PoolJSON, 0, len(pools))
	for _, p := range pools {
		out = append(out, poolJSON(p))
	}
	h.writeJSON(w, http.StatusOK, out)
}

func (h *Handler) getPool(w http.ResponseWriter, r *http.Request) {
	p := h.cfg.Table.Pool(r.PathValue("key"))
	if p == nil {
		h.writeError(w, http.StatusNotFound, "no such pool")
		return
	}
	h.writeJSON(w, http.StatusOK, poolJSON(p))
}

func (h *Handler) getNode(w http.ResponseWriter, r *http.Request) {
	p := h.cfg.Table.Pool(r.PathValue("key"))
	if p == nil {
		h.writeError(w, http.StatusNotFound, "no such pool")
		return
	}
	n := p.Node(r.PathValue("address"))
	if n == nil {
		h.writeError(w, http.StatusNotFound, "no such node")
		return
	}
	h.writeJSON(w, http.StatusOK, nodeJSON(n))
}

// auth guards a mutating handler with the bearer token, when one is set.
func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	if h.cfg.Token == "" {
		return next
	}
	want := []byte("Bearer " + h.cfg.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			h.cfg.Logger.Warn("admin: call refused: missing or wrong bearer token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="fastrouter"`)
			h.writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next(w, r)
	}
}

// tableError maps balancer errors to statuses, in one place.
func (h *Handler) tableError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, balancer.ErrNoPool), errors.Is(err, balancer.ErrNoNode):
		h.writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, balancer.ErrLastActive):
		h.writeError(w, http.StatusConflict, err.Error()+" (add ?force=1 to drain anyway)")
	default:
		h.writeError(w, http.StatusBadRequest, err.Error())
	}
}

func (h *Handler) drain(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Timeout string `json:"timeout"`
	}
	timeout := h.cfg.DrainTimeout
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			h.writeError(w, http.StatusBadRequest, "body: "+err.Error())
			return
		}
		if body.Timeout != "" {
			d, err := time.ParseDuration(body.Timeout)
			if err != nil || d <= 0 {
				h.writeError(w, http.StatusBadRequest, "timeout: want a positive Go duration such as \"30s\"")
				return
			}
			timeout = d
		}
	}
	force := r.URL.Query().Get("force") == "1"
	key, addr := r.PathValue("key"), r.PathValue("address")
	was := h.nodeState(key, addr)
	n, err := h.cfg.Table.Drain(key, addr, timeout, force)
	if err != nil {
		h.tableError(w, err)
		return
	}
	if was != balancer.StateDraining && was != balancer.StateDrained {
		h.cfg.Logger.Info("drain started", "pool", key, "node", n.Address, "source", "admin", "timeout", timeout,
			"force", force, "remote", r.RemoteAddr)
	}
	h.writeJSON(w, http.StatusAccepted, nodeJSON(n))
}

func (h *Handler) undrain(w http.ResponseWriter, r *http.Request) {
	key, addr := r.PathValue("key"), r.PathValue("address")
	was := h.nodeState(key, addr)
	n, err := h.cfg.Table.Undrain(key, addr)
	if err != nil {
		h.tableError(w, err)
		return
	}
	if was == balancer.StateDraining || was == balancer.StateDrained {
		h.cfg.Logger.Info("node undrained", "pool", key, "node", n.Address, "source", "admin", "was", was.String(), "remote", r.RemoteAddr)
	}
	h.writeJSON(w, http.StatusOK, nodeJSON(n))
}

// nodeState is the state of a node before a call changes it (the zero
// State when there is no such node), so that the log says what the call
// did rather than what it asked.
func (h *Handler) nodeState(key, addr string) balancer.State {
	if p := h.cfg.Table.Pool(key); p != nil {
		if n := p.Node(addr); n != nil {
			return n.State()
		}
	}
	return balancer.StateActive
}

func (h *Handler) deleteNode(w http.ResponseWriter, r *http.Request) {
	key, addr := r.PathValue("key"), r.PathValue("address")
	if !h.cfg.Table.RemoveNode(key, addr) {
		h.writeError(w, http.StatusNotFound, "no such node")
		return
	}
	h.cfg.Logger.Info("node left", "pool", key, "node", addr, "source", "admin", "reason", "deleted", "remote", r.RemoteAddr)
	h.writeJSON(w, http.StatusOK, map[string]string{"removed": addr})
}

func (h *Handler) addNode(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Address string `json:"address"`
		Weight  uint64 `json:"weight"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil || body.Address == "" {
		h.writeError(w, http.StatusBadRequest, `body: want {"address":"ip:port","weight":N}`)
		return
	}
	key := r.PathValue("key")
	if _, err := balancer.ParseEndpoint(body.Address); err != nil {
		h.writeError(w, http.StatusBadRequest, "address: "+err.Error())
		return
	}
	if h.cfg.Admission != nil {
		if err := h.cfg.Admission.AdmitNode([]byte(key), []byte(body.Address)); err != nil {
			h.cfg.Logger.Warn("admin: node refused by the admission rules", "pool", key, "node", body.Address,
				"err", err, "remote", r.RemoteAddr)
			h.writeError(w, http.StatusForbidden, "node refused: "+err.Error())
			return
		}
	}
	existed := false
	if p := h.cfg.Table.Pool(key); p != nil {
		existed = p.Node(body.Address) != nil
	}
	if err := h.cfg.Table.AddStatic(key, body.Address, body.Weight); err != nil {
		h.tableError(w, err)
		return
	}
	// The table's lock is not held between the add and this lookup: a
	// removal (another admin call, a drain's end) may come in between.
	var n *balancer.Node
	if p := h.cfg.Table.Pool(key); p != nil {
		n = p.Node(body.Address)
	}
	if n == nil {
		h.writeError(w, http.StatusConflict, "node was removed while it was being added")
		return
	}
	msg := "node joined"
	if existed {
		msg = "node updated"
	}
	h.cfg.Logger.Info(msg, "pool", key, "node", n.Address, "source", "admin", "weight", n.Weight(), "remote", r.RemoteAddr)
	h.writeJSON(w, http.StatusCreated, nodeJSON(n))
}

func (h *Handler) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		h.cfg.Logger.Debug("admin: write response", "err", err)
	}
}

func (h *Handler) writeError(w http.ResponseWriter, code int, msg string) {
	h.writeJSON(w, code, map[string]string{"error": msg})
}

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Println(v ...any) { a.l.Error("metrics", "err", v) }
