// Package lifecycle runs the routing table's background duties that are not
// tied to a socket: finishing drains (and telling nodes they are drained),
// exporting node states as metrics, and persisting the table to a state file
// so a restarted router routes at once instead of answering 404 until every
// node re-announces. The file also keeps the signed-subscription replay
// memory, and what it restores passes the admission rules of the day.
package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/balancer"
)

// Table is what lifecycle needs from the routing table.
type Table interface {
	Tick() []balancer.DrainEvent
	Pools() []*balancer.Pool
	Announce(*balancer.Announce) (balancer.Result, error)
	Drain(key, address string, timeout time.Duration, force bool) (*balancer.Node, error)
}

// Config configures a Manager.
type Config struct {
	// Interval between drain checks. Default 100ms.
	Interval time.Duration
	// StateFile, when set, is loaded by Load and written on changes (at most
	// every SaveEvery) and by Close.
	StateFile string
	// SaveEvery bounds how often the state file is rewritten. Default 1s.
	SaveEvery time.Duration
	// Logger, default slog.Default(). Registerer, default a private registry.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// ShouldNotify, if set, decides whether this router sends the drain
	// notice of a finished drain. A cluster sets it so that exactly one
	// router notifies the node. Nil: always.
	ShouldNotify func(balancer.DrainEvent) bool
	// Admission, if set, decides whether a node of a state file or a
	// binary upgrade's snapshot may come back: the file may predate the
	// current rules (a --node-allow added since, a key file removed).
	// Refused nodes are skipped with a warning. Nil: all come back.
	Admission Admission
	// Signed, if set, is the replay memory saved with the table and
	// restored from it, so that a signed datagram captured before a
	// restart or an upgrade cannot be replayed after it. Its changes
	// should call Changed, so that the file keeps up.
	Signed SignedTimes
}

// Admission is the rule check for nodes that come back from a saved table.
// *subauth.Guard implements it.
type Admission interface {
	// AdmitNode returns nil when the node may enter, else an error that
	// says which rule refuses it.
	AdmitNode(key, address []byte) error
}

// SignedTimes is a replay memory that is saved and restored with the
// table. *subauth.Guard implements it.
type SignedTimes interface {
	// SignedTimes calls fn for each time worth keeping, with an opaque
	// id of its datagram; fn must not call back.
	SignedTimes(fn func(key, address string, unix int64, sig uint64))
	// RememberSigned restores one.
	RememberSigned(key, address []byte, unix int64, sig uint64)
}

// Manager owns the lifecycle goroutine. Start once, Close once.
type Manager struct {
	cfg   Config
	table Table
	log   *slog.Logger

	drains *prometheus.CounterVec

	dirty    chan struct{} // a change to persist; buffered 1, never closed
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New validates cfg and registers the metrics.
func New(cfg Config, table Table) (*Manager, error) {
	if table == nil {
		return nil, errors.New("lifecycle: nil table")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.SaveEvery <= 0 {
		cfg.SaveEvery = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	m := &Manager{
		cfg: cfg, table: table, log: cfg.Logger,
		drains: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastrouter_drains_total",
			Help: "Node drains that ended, by result: completed (nothing left in flight) or forced (deadline reached, connections closed).",
		}, []string{"result"}),
		dirty: make(chan struct{}, 1),
		stop:  make(chan struct{}),
	}
	m.drains.WithLabelValues("completed")
	m.drains.WithLabelValues("forced")
	for _, c := range []prometheus.Collector{m.drains, &poolCollector{table: table}} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("lifecycle: metrics: %w", err)
		}
	}
	return m, nil
}

// Changed marks the table as changed; the state file is rewritten soon.
// Safe to call from any goroutine, including balancer.Config.OnChange.
func (m *Manager) Changed() {
	select {
	case m.dirty <- struct{}{}:
	default:
	}
}

// Start launches the lifecycle goroutine.
func (m *Manager) Start() {
	m.wg.Add(1)
	go m.loop()
}

// Close stops the goroutine and writes the state file a last time.
func (m *Manager) Close() error {
	m.Stop()
	return m.Save()
}

// Stop stops the goroutine without writing the state file: after a binary
// upgrade the new process owns the file, and this one's view is stale.
// Safe to call more than once.
func (m *Manager) Stop() {
	m.stopOnce.Do(func() { close(m.stop) })
	m.wg.Wait()
}

func (m *Manager) loop() {
	defer m.wg.Done()
	tick := time.NewTicker(m.cfg.Interval)
	defer tick.Stop()
	var lastSave time.Time
	pending := false
	for {
		select {
		case <-m.stop:
			return
		case <-m.dirty:
			pending = true
		case <-tick.C:
			for _, e := range m.table.Tick() {
				m.finished(e)
			}
		}
		if pending && m.cfg.StateFile != "" && time.Since(lastSave) >= m.cfg.SaveEvery {
			if err := m.Save(); err != nil {
				m.log.Warn("state file", "err", err)
			}
			lastSave, pending = time.Now(), false
		}
	}
}

func (m *Manager) finished(e balancer.DrainEvent) {
	result := "completed"
	if e.Forced {
		result = "forced"
	}
	m.drains.WithLabelValues(result).Inc()
	m.log.Info("node drained", "pool", e.Key, "node", e.Node.Address, "result", result,
		"served", e.Info.Served, "forced", e.Info.Forced, "took", time.Since(e.Info.Started).Round(time.Millisecond))
	if addr := e.Node.Notify(); addr != "" && (m.cfg.ShouldNotify == nil || m.cfg.ShouldNotify(e)) {
		if err := Notify(addr, e); err != nil {
			m.log.Warn("drain notify failed", "pool", e.Key, "node", e.Node.Address, "notify", addr, "err", err)
		}
	}
}

// Notify sends the drain-complete datagram to a node's notify address: a
// unix datagram socket path (as uWSGI's --subscription-notify-socket) or
// udp://host:port. The payload is one line of JSON:
//
//	{"event":"drained","key":…,"address":…,"served":N,"forced":N,"result":"completed"|"forced"}
func Notify(addr string, e balancer.DrainEvent) error {
	result := "completed"
	if e.Forced {
		result = "forced"
	}
	msg, _ := json.Marshal(map[string]any{
		"event": "drained", "key": e.Key, "address": e.Node.Address,
		"served": e.Info.Served, "forced": e.Info.Forced, "result": result,
	})
	network, target := "unixgram", addr
	if rest, ok := strings.CutPrefix(addr, "udp://"); ok {
		network, target = "udp", rest
		if err := notifyAllowed(rest, e.Node.Endpoint); err != nil {
			return err
		}
	}
	c, err := net.DialTimeout(network, target, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = c.Write(append(msg, '\n'))
	return err
}

// errNotifyTarget refuses a udp:// notify address that points away from the
// node: otherwise anyone able to send a datagram (subscribe with drain=1 and
// notify=udp://victim) could make the router send UDP to any host.
var errNotifyTarget = errors.New("lifecycle: udp notify target must be the node's own IP (loopback for unix-socket nodes)")

func notifyAllowed(target string, ep balancer.Endpoint) error {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return errNotifyTarget
	}
	ip := ap.Addr().Unmap()
	switch ep.Network {
	case balancer.NetTCP, balancer.NetHTTP:
		if ip == ep.AddrPort.Addr().Unmap() {
			return nil
		}
	case balancer.NetUnix:
		if ip.IsLoopback() {
			return nil
		}
	}
	return errNotifyTarget
}

// poolCollector exports fastrouter_pool_nodes{pool,state} computed at
// scrape time from the table, so no gauge has to be kept in step by hand.
//
// Like the router's per-pool series, it is bounded: the first maxPoolSeries
// pools in key order get their own series, the nodes of the rest are summed
// under pool="(overflow)". Unbounded, 100k pools made 500k series and a
// two-second scrape.
type poolCollector struct{ table Table }

// maxPoolSeries and overflowKey match the router's bound on pool labels
// (router/metrics.go), so every per-pool family has the same pools.
const (
	maxPoolSeries = 10000
	overflowKey   = "(overflow)"
)

var poolNodesDesc = prometheus.NewDesc("fastrouter_pool_nodes",
	"Nodes per pool and state (active, draining, drained, failed, backup).", []string{"pool", "state"}, nil)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- poolNodesDesc }

var poolStates = []balancer.State{balancer.StateActive, balancer.StateDraining, balancer.StateDrained, balancer.StateFailed, balancer.StateBackup}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	var rest [8]int
	pools := c.table.Pools()
	for i, p := range pools {
		var counts [8]int
		if i >= maxPoolSeries {
			countStates(&rest, p)
			continue
		}
		countStates(&counts, p)
		emitStates(ch, p.Key, &counts)
	}
	if len(pools) > maxPoolSeries {
		emitStates(ch, overflowKey, &rest)
	}
}

func countStates(counts *[8]int, p *balancer.Pool) {
	for _, n := range p.Nodes() {
		if s := n.State(); int(s) < len(counts) {
			counts[s]++
		}
	}
}

func emitStates(ch chan<- prometheus.Metric, key string, counts *[8]int) {
	for _, s := range poolStates {
		ch <- prometheus.MustNewConstMetric(poolNodesDesc, prometheus.GaugeValue, float64(counts[s]), key, s.String())
	}
}

// stateFile is the persisted table. Version 1. Signed was added later;
// readers that do not know it ignore it (encoding/json), so files stay
// readable both ways.
type stateFile struct {
	Version int           `json:"version"`
	Saved   time.Time     `json:"saved"`
	Pools   []statePool   `json:"pools"`
	Signed  []stateSigned `json:"signed,omitempty"`
}

// stateSigned is one replay-memory time: the newest signed datagram the
// router accepted for a key and announced address (unix seconds), and
// Sig, an id of that datagram when it was a subscribe.
type stateSigned struct {
	Key     string `json:"key"`
	Address string `json:"address"`
	Unix    int64  `json:"unix"`
	Sig     uint64 `json:"sig,omitempty"`
}

type statePool struct {
	Key   string      `json:"key"`
	Algo  string      `json:"algo"`
	Nodes []stateNode `json:"nodes"`
}

type stateNode struct {
	Address   string `json:"address"`
	Weight    int64  `json:"weight"`
	Cores     uint64 `json:"cores"`
	Load      uint64 `json:"load"`
	Modifier1 uint8  `json:"modifier1"`
	Modifier2 uint8  `json:"modifier2"`
	Static    bool   `json:"static"`
	Backup    uint64 `json:"backup,omitempty"`
	Notify    string `json:"notify,omitempty"`
	State     string `json:"state"`
}

// Snapshot encodes the pool table in the state file's format. A binary
// upgrade hands it to the new process, which Restores it.
func (m *Manager) Snapshot() ([]byte, error) {
	st := stateFile{Version: 1, Saved: time.Now().UTC()}
	for _, p := range m.table.Pools() {
		sp := statePool{Key: p.Key, Algo: string(p.Algo())}
		for _, n := range p.Nodes() {
			i := n.Info()
			sp.Nodes = append(sp.Nodes, stateNode{
				Address: i.Address, Weight: i.Weight, Cores: i.Cores, Load: i.Load,
				Modifier1: i.Modifier1, Modifier2: i.Modifier2, Static: i.Static,
				Backup: i.Backup, Notify: n.Notify(), State: i.State.String(),
			})
		}
		if len(sp.Nodes) > 0 {
			st.Pools = append(st.Pools, sp)
		}
	}
	if m.cfg.Signed != nil {
		m.cfg.Signed.SignedTimes(func(key, address string, unix int64, sig uint64) {
			st.Signed = append(st.Signed, stateSigned{Key: key, Address: address, Unix: unix, Sig: sig})
		})
	}
	return json.MarshalIndent(st, "", " ")
}

// Save writes the state file atomically (write to a temp file, rename).
func (m *Manager) Save() error {
	if m.cfg.StateFile == "" {
		return nil
	}
	data, err := m.Snapshot()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(m.cfg.StateFile), ".fastrouter-state-*")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return os.Rename(tmp.Name(), m.cfg.StateFile)
}

// Load restores the table from the state file. Nodes come back with their
// last-seen time set to now, so each has a full tolerance to re-announce
// before it expires; draining or drained nodes stay drained. A missing file
// is not an error.
func (m *Manager) Load() (int, error) {
	if m.cfg.StateFile == "" {
		return 0, nil
	}
	data, err := os.ReadFile(m.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("state file: %w", err)
	}
	n, err := m.restore(data, "state")
	if err != nil {
		return 0, fmt.Errorf("state file %s: %w", m.cfg.StateFile, err)
	}
	return n, nil
}

// Resume fills the table at start. handoff, when not nil, is a binary
// upgrade's Snapshot of the previous process's table, current to the
// moment it handed over and so fresher than any state file; without it the
// state file is loaded. Neither is fatal: a failure is logged and the
// router starts with what it has, the nodes re-announcing.
func (m *Manager) Resume(handoff io.Reader) {
	if handoff != nil {
		data, err := io.ReadAll(handoff)
		if err == nil {
			var n int
			n, err = m.Restore(data)
			m.log.Info("restored nodes from the previous process", "nodes", n)
		}
		if err != nil {
			m.log.Warn("upgrade state not restored; nodes re-announce", "err", err)
		}
		return
	}
	if n, err := m.Load(); err != nil {
		m.log.Warn("state file not loaded; starting empty", "err", err)
	} else if n > 0 {
		m.log.Info("restored nodes from the state file", "nodes", n, "file", m.cfg.StateFile)
	}
}

// Restore loads an encoded table (a state file's content or a Snapshot)
// into the table and returns how many nodes it restored. The nodes are
// not logged one by one: a binary upgrade hands over the same table.
func (m *Manager) Restore(data []byte) (int, error) { return m.restore(data, "") }

// restore is Restore; with source set, each node that enters is logged
// as joining from there.
func (m *Manager) restore(data []byte, source string) (int, error) {
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return 0, err
	}
	if st.Version != 1 {
		return 0, fmt.Errorf("unknown version %d", st.Version)
	}
	if m.cfg.Signed != nil {
		// Before the nodes, and before anything reads the subscription
		// sockets: no replay slips in between.
		for _, s := range st.Signed {
			m.cfg.Signed.RememberSigned([]byte(s.Key), []byte(s.Address), s.Unix, s.Sig)
		}
	}
	n := 0
	for _, p := range st.Pools {
		for _, sn := range p.Nodes {
			if sn.Static {
				continue // static nodes come from the configuration, not the file
			}
			if m.cfg.Admission != nil {
				if err := m.cfg.Admission.AdmitNode([]byte(p.Key), []byte(sn.Address)); err != nil {
					m.log.Warn("saved node refused by the admission rules; it must announce again", "pool", p.Key, "node", sn.Address, "err", err)
					continue
				}
			}
			res, err := m.table.Announce(&balancer.Announce{
				Key: []byte(p.Key), Address: []byte(sn.Address), Algo: []byte(p.Algo),
				Modifier1: sn.Modifier1, Modifier2: sn.Modifier2, Weight: uint64(max(sn.Weight, 1)),
				Cores: sn.Cores, Load: sn.Load, Notify: []byte(sn.Notify), Backup: sn.Backup,
			})
			if err != nil {
				m.log.Warn("state file: node skipped", "pool", p.Key, "node", sn.Address, "err", err)
				continue
			}
			if source != "" && res != balancer.Refreshed {
				m.log.Info("node joined", "pool", p.Key, "node", sn.Address, "source", source, "saved_state", sn.State)
			}
			if sn.State == "draining" || sn.State == "drained" {
				_, _ = m.table.Drain(p.Key, sn.Address, 0, true)
			}
			n++
		}
	}
	return n, nil
}
