// Package admin serves fastrouter's operator API on the admin listener:
// health, the pool table as JSON, and Prometheus metrics.
//
// It is plain net/http: the admin port carries a handful of requests, so
// clarity beats the request path's zero-allocation rules here.
package admin

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Table is what the admin API reads from the routing table.
type Table interface {
	Pools() []*balancer.Pool
	Pool(key string) *balancer.Pool
}

// Config configures the admin handler.
type Config struct {
	Table    Table               // required
	Gatherer prometheus.Gatherer // metrics source; nil disables /metrics
	Logger   *slog.Logger        // default slog.Default()
}

// Handler is the admin API's http.Handler.
type Handler struct {
	cfg Config
	mux *http.ServeMux
}

// New validates cfg and builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Table == nil {
		return nil, errors.New("admin: Config.Table is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	h.mux.HandleFunc("GET /api/pools", h.listPools)
	h.mux.HandleFunc("GET /api/pools/{key}", h.getPool)
	h.mux.HandleFunc("GET /api/pools/{key}/nodes/{address}", h.getNode)
	if cfg.Gatherer != nil {
		h.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogAdapter{cfg.Logger}}))
	}
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// PoolJSON is the stable JSON shape of a pool (SPEC §6).
type PoolJSON struct {
	Key   string     `json:"key"`
	Algo  string     `json:"algo"`
	Nodes []NodeJSON `json:"nodes"`
}

// NodeJSON is the stable JSON shape of a node (SPEC §6).
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
}

func poolJSON(p *balancer.Pool) PoolJSON {
	out := PoolJSON{Key: p.Key, Algo: string(p.Algo()), Nodes: []NodeJSON{}}
	for _, n := range p.Nodes() {
		out.Nodes = append(out.Nodes, nodeJSON(n))
	}
	return out
}

func nodeJSON(n *balancer.Node) NodeJSON {
	i := n.Info()
	return NodeJSON{
		Address: i.Address, Weight: i.Weight, State: i.State.String(), Inflight: i.Inflight,
		Requests: i.Requests, Failures: i.Failures, LastSeen: i.LastSeen.UTC(), Static: i.Static,
		Cores: i.Cores, Load: i.Load, Modifier1: i.Modifier1, Modifier2: i.Modifier2,
	}
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
