package router

import (
	"strconv"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// poolLabels returns the distinct pool label values in reg's families.
func poolLabels(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "pool" {
					out[l.GetValue()] = true
				}
			}
		}
	}
	return out
}

func TestPruneMetricsForgetsRemovedPools(t *testing.T) {
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	table.AddStatic("keep.test", "10.0.0.1:3031", 1)
	table.AddStatic("gone.test", "10.0.0.2:3031", 1)
	reg := prometheus.NewRegistry()
	rt, err := New(Config{Pools: table, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"keep.test", "gone.test"} {
		pm := rt.metrics.forPool(table.Pool(k))
		pm.count(200)
		pm.duration.Observe(0.01)
		pm.backendError(errAllFailed)
	}
	if got := poolLabels(t, reg); !got["keep.test"] || !got["gone.test"] {
		t.Fatalf("pool labels before pruning: %v", got)
	}

	old := table.Pool("gone.test")
	table.DeletePool("gone.test")
	exists := func(k string) bool { return table.Pool(k) != nil }
	if n := rt.PruneMetrics(exists); n != 1 {
		t.Fatalf("PruneMetrics pruned %d pools; want 1", n)
	}
	if got := poolLabels(t, reg); !got["keep.test"] || got["gone.test"] {
		t.Fatalf("pool labels after pruning: %v; want keep.test without gone.test", got)
	}
	if n := rt.PruneMetrics(exists); n != 0 {
		t.Fatalf("second PruneMetrics pruned %d; want 0", n)
	}

	// The same key announced again gets fresh, exported series; so does a
	// request that still holds the old pool object (cached dead children).
	table.AddStatic("gone.test", "10.0.0.2:3031", 1)
	rt.metrics.forPool(table.Pool("gone.test")).count(503)
	rt.metrics.forPool(old).count(503)
	if got := testutil.ToFloat64(rt.metrics.requests.WithLabelValues("gone.test", "503")); got != 2 {
		t.Fatalf("requests_total{pool=gone.test,code=503} = %v after re-creation; want 2", got)
	}
}

func TestPoolSeriesAreBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxPoolSeries {
		if _, ok := m.forKey("k" + strconv.Itoa(i)); !ok {
			t.Fatalf("pool %d refused below the cap", i)
		}
	}
	pm, ok := m.forKey("one.too.many")
	if ok || pm.key != overflowKey {
		t.Fatalf("pool beyond the cap: key %q ok %v; want %q, false", pm.key, ok, overflowKey)
	}
	pm.count(200)
	if got := testutil.ToFloat64(m.requests.WithLabelValues(overflowKey, "200")); got != 1 {
		t.Fatalf("overflow requests = %v; want 1", got)
	}
	// Pruning makes room again.
	m.prune(func(k string) bool { return k != "k0" })
	if pm, ok := m.forKey("one.too.many"); !ok || pm.key != "one.too.many" {
		t.Fatalf("after pruning one pool: key %q ok %v; want its own series", pm.key, ok)
	}
}

func TestBackendErrorReasons(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	pm, _ := m.forKey("p")
	for _, e := range []error{errAllFailed, errAllFailed, errConnectTimeout, errBackendTimeout, errBadResponse, errBackendWrite, errNodeClosedEarly, errNoNode} {
		pm.backendError(e)
	}
	for reason, want := range map[string]float64{"connect": 2, "connect_timeout": 1, "timeout": 1, "bad_response": 1, "write": 1, "closed": 1, "other": 1} {
		if got := testutil.ToFloat64(m.backendErrs.WithLabelValues("p", reason)); got != want {
			t.Errorf("backend_errors_total{reason=%s} = %v; want %v", reason, got, want)
		}
	}
}

// A request still holding a pruned pool's children never re-creates a
// series for it: that series would never be pruned.
func TestPrunedPoolGrowsNoSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	pm, _ := m.forKey("gone.test")
	pm.count(200)
	m.prune(func(string) bool { return false })
	pm.count(502) // a code not seen before
	pm.backendError(errBadResponse)
	if got := poolLabels(t, reg); got["gone.test"] {
		t.Fatalf("pruned pool has series again: %v", got)
	}
}
