package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// report writes results.md (the table, method and machine) and rps.png
// (requests/s relative to fastrouter per scenario) to h.out.
func (h *harness) report() error {
	if err := os.MkdirAll(h.out, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# fastrouter benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s. Medians of %d alternating rounds; wrk -t2 -c%d for %s per run; h2load -c10 -m10 (h3: a Go HTTP/3 client, the same -c10 -m10).\n",
		runtime.NumCPU(), cpuModel(), memTotal(), h.rounds, h.conns, h.dur)
	if len(h.rows) > 0 {
		h.writeMain(&b)
	}
	h.writePinned(&b)
	if err := h.writeFleet(&b, func(name string) string { return filepath.Join(h.out, name) }); err != nil {
		return err
	}
	h.writeTargets(&b)
	md := filepath.Join(h.out, "results.md")
	if err := os.WriteFile(md, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	if err := h.chart(filepath.Join(h.out, "rps.png"), h.baseRPS()); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s and %s\n", md, filepath.Join(h.out, "rps.png"))
	return nil
}

// chart draws grouped bars: per scenario, each router's req/s relative to
// fastrouter (1.0 = same speed; above 1 the peer is faster).
func (h *harness) chart(path string, base map[string]float64) error {
	var scenarios []string
	routers := []string{"fastrouter", "nginx", "uwsgi-http"}
	vals := map[string]map[string]float64{}
	for _, r := range h.rows {
		if r.rps == 0 || base[r.scenario] == 0 {
			continue
		}
		name := r.router
		if strings.HasPrefix(name, "fastrouter") {
			name = "fastrouter"
		}
		if vals[r.scenario] == nil {
			vals[r.scenario] = map[string]float64{}
			scenarios = append(scenarios, r.scenario)
		}
		if _, seen := vals[r.scenario][name]; !seen {
			vals[r.scenario][name] = r.rps / base[r.scenario]
		}
	}
	// Only scenarios that compare routers; pools/datagrams/idle are
	// fastrouter-only or not a rate.
	kept := scenarios[:0]
	for _, s := range scenarios {
		if len(vals[s]) > 1 {
			kept = append(kept, s)
		}
	}
	scenarios = kept
	if len(scenarios) == 0 {
		return nil
	}
	top := 1.0
	for _, m := range vals {
		for _, v := range m {
			top = max(top, v)
		}
	}
	p := plot.New()
	p.Title.Text = "Requests/s relative to fastrouter (same run, medians)"
	p.Y.Label.Text = "× fastrouter"
	w := vg.Points(14)
	colors := []color.Color{color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}}
	for i, rt := range routers {
		v := make(plotter.Values, len(scenarios))
		any := false
		for j, s := range scenarios {
			v[j] = vals[s][rt]
			any = any || v[j] > 0
		}
		if !any {
			continue
		}
		bars, err := plotter.NewBarChart(v, w)
		if err != nil {
			return err
		}
		bars.Color = colors[i]
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(i-1)
		p.Add(bars)
		p.Legend.Add(rt, bars)
	}
	p.Legend.Top = true
	p.Y.Min, p.Y.Max = 0, top*1.15
	p.NominalX(scenarios...)
	p.Add(plotter.NewGrid())
	return p.Save(vg.Length(120+90*len(scenarios))*vg.Points(1), 300, path)
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return "unknown RAM"
}

// baseRPS is each scenario's first fastrouter req/s, what the others are
// compared with.
func (h *harness) baseRPS() map[string]float64 {
	base := map[string]float64{}
	for _, r := range h.rows {
		if strings.HasPrefix(r.router, "fastrouter") && base[r.scenario] == 0 {
			base[r.scenario] = r.rps
		}
	}
	return base
}

// writeMain appends the throughput table and the CPU breakdown.
func (h *harness) writeMain(b *strings.Builder) {
	b.WriteString("One Go uwsgi backend (one request per connection, as uWSGI workers) behind every router; CPU is the router's\n")
	b.WriteString("process tree (nginx workers, uWSGI master + http router) in CPU-seconds per 10k requests; RSS after the run.\n\n")
	b.WriteString("| scenario | router | req/s | vs fastrouter | p50 ms | p99 ms | CPU s/10k req | RSS MiB | notes |\n|---|---|---|---|---|---|---|---|---|\n")
	base := h.baseRPS()
	for _, r := range h.rows {
		ratio := "—"
		if base[r.scenario] > 0 && r.rps > 0 {
			ratio = fmt.Sprintf("%.2f", r.rps/base[r.scenario])
		}
		num := func(v float64, f string) string {
			if v == 0 {
				return "—"
			}
			return fmt.Sprintf(f, v)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.scenario, r.router, num(r.rps, "%.0f"), ratio,
			num(r.p50, "%.2f"), num(r.p99, "%.2f"), num(r.cpuPer10k, "%.2f"), num(r.rssMiB, "%.1f"), r.extra)
	}
	b.WriteString("\n## Where the CPU went, per request\n\n")
	b.WriteString("Router, backend and load tool share the machine's cores, so a router's req/s follows the sum of all three;\n")
	b.WriteString("CPU time in µs per request (medians; clock ticks of 10 ms, so short runs are coarse). The router's kernel\n")
	b.WriteString("time is mostly the socket work every router here must do per request (connect, write, read, close).\n\n")
	b.WriteString("| scenario | router | router user | router kernel | backend | load tool | total |\n|---|---|---|---|---|---|---|\n")
	for _, r := range h.rows {
		if r.usUser+r.usSys == 0 {
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", r.scenario, r.router, r.usUser, r.usSys,
			r.usBackend, r.usLoad, r.usUser+r.usSys+r.usBackend+r.usLoad)
	}
}
