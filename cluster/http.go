package cluster

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// StatusJSON is the JSON of GET /api/cluster: membership and the progress
// of every coordinated drain, as this router sees them.
type StatusJSON struct {
	Name    string       `json:"name"`
	Label   string       `json:"label,omitempty"`
	Address string       `json:"address"`
	Members []MemberJSON `json:"members"`
	Entries int          `json:"entries"`
	// Blobs and BlobBytes: the shared values (ACME certificates, keys,
	// challenges; blobs.go), tombstones included.
	Blobs     int         `json:"blobs"`
	BlobBytes int         `json:"blob_bytes"`
	Queue     int         `json:"broadcast_queue"`
	Drains    []DrainJSON `json:"drains"`
}

// MemberJSON is one live member.
type MemberJSON struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

// DrainJSON is one coordinated drain. Inflight has an entry per live
// router: its last reported count, or -1 before it reported. Waiting lists
// the routers that still have requests in flight (or have not reported).
type DrainJSON struct {
	Key      string           `json:"key"`
	Address  string           `json:"address"`
	State    string           `json:"state"` // draining or unsubscribed
	Origin   string           `json:"origin"`
	Notifier string           `json:"notifier"`
	Started  time.Time        `json:"started"`
	Deadline time.Time        `json:"deadline"`
	Inflight map[string]int64 `json:"inflight"`
	Waiting  []string         `json:"waiting"`
}

// Status returns the cluster as this router sees it.
func (c *Cluster) Status() StatusJSON {
	st := StatusJSON{Name: c.cfg.Name, Label: c.cfg.Label, Address: c.Addr(), Queue: c.queue.NumQueued(),
		Members: []MemberJSON{}, Drains: []DrainJSON{}}
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Entries = c.entries
	st.Blobs, st.BlobBytes = len(c.blobs), c.blobBytes
	for _, m := range c.members {
		st.Members = append(st.Members, MemberJSON{Name: m.name, Address: m.addr})
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].Name < st.Members[j].Name })
	name := func(id uint64) string {
		if m, ok := c.members[id]; ok {
			return m.name
		}
		return "gone:" + strconv.FormatUint(id, 16)
	}
	for e := range c.draining {
		d := DrainJSON{Key: e.key, Address: e.addr, State: e.life.String(), Origin: name(e.lifeAt.origin),
			Notifier: name(c.notifierLocked(e)), Started: time.Unix(0, e.drainStart).UTC(),
			Deadline: time.Unix(0, e.drainDeadline).UTC(), Inflight: map[string]int64{}, Waiting: []string{}}
		for id, m := range c.members {
			v := int64(-1)
			if id == c.id {
				v = 0
				if n := c.node(e.key, e.addr); n != nil {
					v = n.Inflight()
				}
			} else if r, ok := e.reports[id]; ok && r.epoch == e.lifeAt {
				v = int64(r.inflight)
			}
			d.Inflight[m.name] = v
			if v != 0 {
				d.Waiting = append(d.Waiting, m.name)
			}
		}
		sort.Strings(d.Waiting)
		st.Drains = append(st.Drains, d)
	}
	sort.Slice(st.Drains, func(i, j int) bool {
		if st.Drains[i].Key != st.Drains[j].Key {
			return st.Drains[i].Key < st.Drains[j].Key
		}
		return st.Drains[i].Address < st.Drains[j].Address
	})
	return st
}

// ServeHTTP serves GET /api/cluster (Status as JSON).
func (c *Cluster) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, `{"error":"method not allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(c.Status())
}
