package main

import (
	"fmt"
	"image/color"
	"math"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// writePinned appends the h1-512-pinned table.
func (h *harness) writePinned(b *strings.Builder) {
	if len(h.pinnedRows) == 0 {
		return
	}
	nginxCPU := 0.0
	for _, r := range h.pinnedRows {
		if r.router == "nginx" {
			nginxCPU = r.usUser + r.usSys
		}
	}
	tool := ""
	for _, r := range h.pinnedRows {
		if r.syscallTool != "" {
			tool = r.syscallTool
		}
	}
	b.WriteString("\n## The router alone on one core (h1-512-pinned)\n\n")
	fmt.Fprintf(b, "Each router alone on CPU %s (fastrouter `GOMAXPROCS=1`, nginx `worker_processes 1`, uWSGI one http process),\n", routerCPU)
	fmt.Fprintf(b, "the Go uwsgi backend and `wrk -t1 -c%d` on CPU %s (taskset); HTTP/1.1 keep-alive, 512 B. Medians of %d alternating rounds.\n", h.conns, loadCPU, h.rounds)
	b.WriteString("CPU is the router's process tree, user + kernel, from /proc/PID/stat over a whole wrk run; context switches\n")
	b.WriteString("(voluntary + involuntary) from /proc/PID/task/*/status over the same run; system calls per request from a second,\n")
	switch tool {
	case "perf":
		b.WriteString("half-length run with `perf stat -e raw_syscalls:sys_enter -p PIDS` attached (tracing costs the router CPU, so that\nrun is not used for the other columns).\n\n")
	case "strace":
		b.WriteString("half-length run under `strace -c -f` (perf does not work here; strace slows the router down, so only the ratio\nof calls to requests in that run is used).\n\n")
	default:
		b.WriteString("half-length run — neither perf nor strace worked here, so that column is empty.\n\n")
	}
	b.WriteString("| router | req/s | p99 ms | CPU µs/req | user | kernel | CPU vs nginx | syscalls/req | context switches/req |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range h.pinnedRows {
		cpu := r.usUser + r.usSys
		vs := "—"
		if nginxCPU > 0 {
			vs = fmt.Sprintf("%.2f", cpu/nginxCPU)
		}
		sc := "—"
		if r.syscalls > 0 {
			sc = fmt.Sprintf("%.2f", r.syscalls)
		}
		name := r.router
		if r.errors != "" {
			name += " (" + r.errors + ")"
		}
		fmt.Fprintf(b, "| %s | %.0f | %.2f | %.1f | %.1f | %.1f | %s | %s | %.3f |\n", name, r.rps, r.p99, cpu, r.usUser, r.usSys, vs, sc, r.ctxsw)
	}
}

// fleetSummary is one peer's runs of one kind (steady or kill).
type fleetSummary struct {
	peer, proto           string
	p50, p99, p999, max   float64 // medians over rounds, ms
	failed, inflight      []int   // per round
	codes                 map[int]int
	slowShare             float64     // median share of answered requests the slow node served
	lats                  [][]float64 // each round's sorted latencies, ms
	lagP99                float64
	requests, rate, capac float64
	cpuUS                 float64 // median router CPU per request, µs
	reruns                int
	reasons               map[string]int // fastrouter's failure counters, summed over rounds
}

// fleetSummaries groups h.fleetRuns by peer, in the order peers ran.
func (h *harness) fleetSummaries(kill bool) []*fleetSummary {
	var out []*fleetSummary
	by := map[string]*fleetSummary{}
	samples := map[string][][4]float64{}
	shares := map[string][]float64{}
	cpus := map[string][]float64{}
	for _, r := range h.fleetRuns {
		if r.kill != kill {
			continue
		}
		s := by[r.peer]
		if s == nil {
			s = &fleetSummary{peer: r.peer, proto: r.proto, codes: map[int]int{}, rate: r.rate, capac: r.capacity, reasons: map[string]int{}}
			by[r.peer] = s
			out = append(out, s)
		}
		st := r.stats
		samples[r.peer] = append(samples[r.peer], [4]float64{st.p50, st.p99, st.p999, st.max})
		s.failed = append(s.failed, st.failed())
		s.inflight = append(s.inflight, r.inflight)
		for c, n := range r.codes {
			s.codes[c] += n
		}
		answered := 0
		for _, n := range st.perNode {
			answered += n
		}
		if answered > 0 {
			shares[r.peer] = append(shares[r.peer], float64(st.perNode[h.fleet.nodes-1])/float64(answered))
		}
		s.lats = append(s.lats, r.lat)
		cpus[r.peer] = append(cpus[r.peer], r.cpuUS)
		for k, v := range r.reasons {
			s.reasons[k] += v
		}
		s.reruns += r.reruns
		s.lagP99 = max(s.lagP99, st.lagP99)
		s.requests += float64(len(r.lat) + st.failed())
	}
	for _, s := range out {
		col := func(i int) float64 {
			v := make([]float64, 0, len(samples[s.peer]))
			for _, x := range samples[s.peer] {
				v = append(v, x[i])
			}
			return median(v)
		}
		s.p50, s.p99, s.p999, s.max = col(0), col(1), col(2), col(3)
		s.slowShare = median(shares[s.peer])
		s.cpuUS = median(cpus[s.peer])
	}
	return out
}

// writeFleet appends the fleet tables and draws the latency charts.
func (h *harness) writeFleet(b *strings.Builder, chartPath func(string) string) error {
	steady, kill := h.fleetSummaries(false), h.fleetSummaries(true)
	if len(steady) == 0 && len(kill) == 0 {
		return nil
	}
	first := steady
	if len(first) == 0 {
		first = kill
	}
	f := h.fleet
	b.WriteString("\n## Tail latency in front of a fleet (fleet)\n\n")
	fmt.Fprintf(b, "%d uWSGI 2.0 nodes (`bench/fleet/app.py`, %d worker processes each); a request asks for %.0f–%.0f ms of work (uniform), one in %.0f\n",
		f.nodes, f.workers, f.mix.minMS, f.mix.maxMS, 1/f.mix.slowFrac)
	fmt.Fprintf(b, "for %.0f ms; the app sleeps that long (×%.0f on node %d, the slow one). Capacity measured straight on the nodes (closed loop,\n",
		f.mix.slowMS, f.slowFactor, f.nodes-1)
	fmt.Fprintf(b, "2 requests per worker): **%.0f req/s**. Open-loop load at **%.0f req/s** (%.0f%%), requests due at fixed intervals and timed\n",
		first[0].capac, first[0].rate, 100*first[0].rate/first[0].capac)
	fmt.Fprintf(b, "from their due time (no coordinated omission), keep-alive client connections, %s measured after a %s warm-up, %d rounds,\n", f.dur, f.warmup, h.rounds)
	b.WriteString("peers alternated; a fresh fleet and router for every run. Percentiles are medians over rounds; failures are per round.\n")
	b.WriteString("Each peer balances as it does best: fastrouter `--max-inflight auto` (a node's cap = the workers it announced plus one; the rest\n")
	b.WriteString("wait in the router's queue), nginx `least_conn` with a shared `zone`, uWSGI's http router over subscriptions with\n")
	fmt.Fprintf(b, "`--subscription-algo lrc`, HAProxy `leastconn` with `maxconn %d` per server, `retries 3`, `option redispatch 1`, TCP checks\n", f.workers)
	b.WriteString("every second and a node marked down at its first failed connect (`observe layer4`, `error-limit 1`, `on-error mark-down`).\n")
	b.WriteString("HAProxy speaks only HTTP to nodes, so it uses their `--http-socket`; the others their uwsgi socket (same workers).\n\n")
	if len(steady) > 0 {
		b.WriteString("| router | to nodes | p50 ms | p99 ms | p99.9 ms | max ms | failed per round | slow node's share | router CPU µs/req |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range steady {
			fmt.Fprintf(b, "| %s | %s | %.2f | %.2f | %.2f | %.0f | %s | %.1f%% | %.0f |\n", s.peer, s.proto, s.p50, s.p99, s.p999, s.max,
				failCell(s.failed, s.codes), 100*s.slowShare, s.cpuUS)
		}
		if err := h.latencyChart(chartPath("fleet-latency.png"), steady, fmt.Sprintf("Fleet, open loop at %.0f req/s: latency by percentile", steady[0].rate)); err != nil {
			return err
		}
		b.WriteString("\n![fleet latency by percentile](fleet-latency.png)\n")
	}
	if len(kill) > 0 {
		fmt.Fprintf(b, "\nThe same with node %d (the slow one) killed (`kill -9` of its process group) %s into the measured window. *In flight* counts\n", f.nodes-1, f.dur/2)
		b.WriteString("the TCP connections open on the node's two sockets just before the kill (being served or in its listen queue):\n")
		b.WriteString("one request each. A router can retry those only if it resends a request whose node reset the connection.\n\n")
		b.WriteString("| router | p50 ms | p99 ms | p99.9 ms | failed per round | in flight on the killed node | failed beyond those |\n|---|---|---|---|---|---|---|\n")
		for _, s := range kill {
			beyond := 0
			for i := range s.failed {
				beyond += max(0, s.failed[i]-s.inflight[i])
			}
			fmt.Fprintf(b, "| %s | %.2f | %.2f | %.2f | %s | %s | %d |\n", s.peer, s.p50, s.p99, s.p999, failCell(s.failed, s.codes), ints(s.inflight), beyond)
		}
		if err := h.latencyChart(chartPath("fleet-kill-latency.png"), kill, "Fleet with a node killed mid-run: latency by percentile"); err != nil {
			return err
		}
		b.WriteString("\n![fleet with a node killed, latency by percentile](fleet-kill-latency.png)\n")
	}
	lag := 0.0
	for _, s := range append(steady, kill...) {
		lag = max(lag, s.lagP99)
	}
	var why []string
	for _, set := range []struct {
		name string
		sums []*fleetSummary
	}{{"steady", steady}, {"node killed", kill}} {
		for _, s := range set.sums {
			if len(s.reasons) > 0 {
				why = append(why, fmt.Sprintf("- %s, %s: %s", s.peer, set.name, reasonText(s.reasons)))
			}
		}
	}
	if len(why) > 0 {
		b.WriteString("\nfastrouter's own count of its failures, all rounds (`fastrouter_backend_errors_total` and\n")
		b.WriteString("`fastrouter_overload_rejections_total` by reason; `queue_full` is a 503 from a full `--queue-size`, 1024 by default):\n\n")
		b.WriteString(strings.Join(why, "\n") + "\n")
	}
	reruns := 0
	for _, s := range append(steady, kill...) {
		reruns += s.reruns
	}
	fmt.Fprintf(b, "\nThe generator's own delay (due time to first write), p99 of the worst run kept: %.2f ms. A run in which it exceeded %d ms\n", lag, maxGeneratorLag)
	fmt.Fprintf(b, "(the shared machine stalled the generator itself) was run again, at most twice: %d runs were. Router CPU is its process\n", reruns)
	b.WriteString("tree's user + kernel time over the run (warm-up included) per request sent, on cores it shares with the fleet and the generator.\n")
	return nil
}

func failCell(failed []int, codes map[int]int) string {
	s := ints(failed)
	if len(codes) > 0 {
		var cs []int
		for c := range codes {
			cs = append(cs, c)
		}
		sort.Ints(cs)
		var parts []string
		for _, c := range cs {
			parts = append(parts, fmt.Sprintf("%d× %d", codes[c], c))
		}
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

func ints(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}

// latencyChart draws latency (log scale) against percentile, the x axis
// stretched as -log10(1-p) so that 90, 99, 99.9 and 99.99 are equally
// spaced: the tail a reader cares about gets most of the width.
func (h *harness) latencyChart(path string, sums []*fleetSummary, title string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile (median of the rounds at each point)"
	p.Y.Label.Text = "latency, ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.TickerFunc(logTicks125)
	top := 0.0
	colors := []color.Color{
		color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0x17, 0xbe, 0xcf, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff},
		color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff},
	}
	for i, s := range sums {
		xys := medianCurve(s.lats)
		if len(xys) == 0 {
			continue
		}
		top = max(top, xys[len(xys)-1].X)
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color = colors[i%len(colors)]
		l.Width = vg.Points(2)
		if strings.HasPrefix(s.peer, "fastrouter p2c") {
			l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(s.peer, l)
	}
	var ticks plot.ConstantTicks
	for _, t := range []struct {
		p     float64
		label string
	}{{0, "0"}, {0.5, "50"}, {0.9, "90"}, {0.99, "99"}, {0.999, "99.9"}, {0.9999, "99.99"}, {0.99999, "99.999"}} {
		if x := -math.Log10(1 - t.p); x <= top+0.01 {
			ticks = append(ticks, plot.Tick{Value: x, Label: t.label})
		}
	}
	p.X.Tick.Marker = ticks
	p.X.Min, p.X.Max = 0, top
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	p.Add(plotter.NewGrid())
	return p.Save(22*vg.Centimeter, 13*vg.Centimeter, path)
}

// medianCurve samples each round's sorted latencies at ~400 points evenly
// spaced on the -log10(1-p) axis, up to the last percentile the smallest
// round can tell, and keeps the median over rounds at each point: one round
// the shared machine stalled does not draw the line, as a pooled sample
// would let it.
func medianCurve(rounds [][]float64) plotter.XYs {
	n := 0
	for _, r := range rounds {
		if n == 0 || len(r) < n {
			n = len(r)
		}
	}
	if n < 10 {
		return nil
	}
	top := -math.Log10(1.0 / float64(n)) // p = 1 - 1/n
	var xys plotter.XYs
	at := make([]float64, len(rounds))
	for k := 0; k <= 400; k++ {
		x := top * float64(k) / 400
		p := 1 - math.Pow(10, -x)
		for i, r := range rounds {
			at[i] = r[min(len(r)-1, int(p*float64(len(r))))]
		}
		xys = append(xys, plotter.XY{X: x, Y: max(median(at), 0.01)})
	}
	return xys
}

// writeTargets states, for each of issue 21's targets this run measured,
// whether it is met. They are reported here, never asserted in tests: a
// shared machine's noise must not fail a build.
func (h *harness) writeTargets(b *strings.Builder) {
	var lines []string
	add := func(ok bool, format string, args ...any) {
		verdict := "**not met**"
		if ok {
			verdict = "met"
		}
		lines = append(lines, "- "+verdict+": "+fmt.Sprintf(format, args...))
	}
	find := func(scenario, router string) *row {
		for i := range h.rows {
			if h.rows[i].scenario == scenario && h.rows[i].router == router {
				return &h.rows[i]
			}
		}
		return nil
	}
	if fr, ng := find("h1-512", "fastrouter"), find("h1-512", "nginx"); fr != nil && ng != nil && ng.rps > 0 {
		add(fr.rps >= 1.10*ng.rps, "h1-512 req/s ≥ 1.10× nginx's: %.2f× (%.0f vs %.0f)", fr.rps/ng.rps, fr.rps, ng.rps)
		add(fr.p99 <= ng.p99, "h1-512 p99 ≤ nginx's: %.2f vs %.2f ms", fr.p99, ng.p99)
		if uw := find("h1-512", "uwsgi-http"); uw != nil && uw.rps > 0 {
			add(fr.rps >= 1.30*uw.rps, "h1-512 req/s ≥ 1.30× uWSGI's: %.2f× (%.0f vs %.0f)", fr.rps/uw.rps, fr.rps, uw.rps)
		}
	}
	for _, sc := range []string{"https", "h2"} {
		if fr, ng := find(sc, "fastrouter"), find(sc, "nginx"); fr != nil && ng != nil && ng.rps > 0 {
			add(fr.rps >= ng.rps, "%s req/s ≥ nginx's: %.2f× (%.0f vs %.0f)", sc, fr.rps/ng.rps, fr.rps, ng.rps)
		}
	}
	var fr, ng *pinnedRow
	for i := range h.pinnedRows {
		switch h.pinnedRows[i].router {
		case "fastrouter":
			fr = &h.pinnedRows[i]
		case "nginx":
			ng = &h.pinnedRows[i]
		}
	}
	if fr != nil {
		if ng != nil && ng.usUser+ng.usSys > 0 {
			a, n := fr.usUser+fr.usSys, ng.usUser+ng.usSys
			add(a <= 0.95*n, "h1-512-pinned router CPU per request ≤ 0.95× nginx's: %.2f× (%.1f vs %.1f µs)", a/n, a, n)
		}
		if fr.syscalls > 0 {
			add(fr.syscalls <= 9, "h1-512-pinned ≤ 9 system calls per request: %.2f (%s)", fr.syscalls, fr.syscallTool)
		}
		add(fr.ctxsw <= 0.3, "h1-512-pinned ≤ 0.3 context switches per request: %.3f", fr.ctxsw)
	}
	steady, kill := h.fleetSummaries(false), h.fleetSummaries(true)
	peer := func(sums []*fleetSummary, prefix string) *fleetSummary {
		for _, s := range sums {
			if strings.HasPrefix(s.peer, prefix) {
				return s
			}
		}
		return nil
	}
	for _, algo := range []string{"lrc", "p2c", "sed"} {
		f := peer(steady, "fastrouter "+algo)
		if f == nil {
			continue
		}
		if n := peer(steady, "nginx"); n != nil {
			add(f.p99 <= 0.5*n.p99, "fleet: fastrouter %s p99 ≤ 0.5× nginx's: %.2f× (%.2f vs %.2f ms)", algo, f.p99/n.p99, f.p99, n.p99)
		}
		if hp := peer(steady, "haproxy"); hp != nil {
			add(f.p99 <= hp.p99, "fleet: fastrouter %s p99 ≤ HAProxy's: %.2f vs %.2f ms", algo, f.p99, hp.p99)
		}
		total := 0
		for _, n := range f.failed {
			total += n
		}
		add(total == 0, "fleet: fastrouter %s 0 failed requests: %d in %d rounds", algo, total, len(f.failed))
		if k := peer(kill, "fastrouter "+algo); k != nil {
			beyond := 0
			for i := range k.failed {
				beyond += max(0, k.failed[i]-k.inflight[i])
			}
			add(beyond == 0, "fleet, node killed: fastrouter %s fails none beyond those in flight on it: failed %s, in flight %s", algo, ints(k.failed), ints(k.inflight))
		}
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("\n## Targets (issue 21)\n\nMedians of this run's alternated rounds; reported, not asserted.\n\n")
	b.WriteString(strings.Join(lines, "\n") + "\n")
}

// logTicks125 labels 1, 2, 5, 10, 20, 50… between min and max (a log axis
// with only powers of ten labelled is hard to read across two decades).
func logTicks125(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for d := math.Pow(10, math.Floor(math.Log10(min))); d <= max; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := d * m; v >= min && v <= max {
				ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
			}
		}
	}
	return ticks
}
