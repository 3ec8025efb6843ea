package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The pinned scenario measures the router rather than the box: each router
// alone on routerCPU, the backend and wrk on loadCPU, so what a router
// spends per request is not mixed with what it makes the others spend.
const (
	routerCPU = "0"
	loadCPU   = "1"
)

// pinnedRow is one router's medians in the h1-512-pinned scenario.
type pinnedRow struct {
	router   string
	rps, p99 float64
	// CPU µs per request of the router's process tree, user and kernel
	// (/proc/PID/stat of every process, over the whole wrk run).
	usUser, usSys float64
	// Context switches per request (voluntary + involuntary, summed over
	// /proc/PID/task/*/status of the tree, same run).
	ctxsw float64
	// System calls per request, counted in a separate, shorter window by
	// syscallTool ("perf" or "strace"), so tracing does not slow the run
	// above.
	syscalls    float64
	syscallTool string
	errors      string
}

// pinned is the h1-512-pinned scenario: HTTP/1.1 keep-alive, 512 B, wrk -t1
// -c64, with fastrouter (GOMAXPROCS=1), nginx (worker_processes 1) and
// uWSGI's http router (one http process) each on CPU 0, the Go uwsgi
// backend and wrk on CPU 1.
func (h *harness) pinned(ctx context.Context) error {
	if runtime.NumCPU() < 2 {
		return errors.New("needs 2 CPUs (router on one, backend and wrk on the other)")
	}
	node := h.port()
	p, err := h.startOn("backend", loadCPU, nil, h.bin.backend, "-listen", node, "-size", "512")
	if err != nil {
		return err
	}
	h.backendPID = p.cmd.Process.Pid
	if err := waitListen(node, 10*time.Second); err != nil {
		return err
	}
	fr, err := h.pinnedRouter(node, variantBin{path: h.bin.router})
	if err != nil {
		return err
	}
	targets := []target{fr}
	for _, v := range h.variants {
		for _, b := range h.variantBins() {
			t, err := h.pinnedRouter(node, b, v)
			if err != nil {
				return err
			}
			targets = append(targets, t)
		}
	}
	if t, ok, err := h.nginxOn(node, false, "1", routerCPU); err != nil {
		return err
	} else if ok {
		targets = append(targets, t)
	}
	if t, ok, err := h.uwsgiHTTPOn(node, routerCPU); err != nil {
		return err
	} else if ok {
		targets = append(targets, t)
	}
	counter := syscallCounter()
	if counter == nil {
		log.Printf("  neither perf nor strace works here: no system call counts")
	}
	per := map[string][]pinnedSample{}
	for r := 1; r <= h.rounds; r++ {
		for _, t := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s, err := h.pinnedRun(ctx, t, counter)
			if err != nil {
				return err
			}
			per[t.name] = append(per[t.name], s)
			log.Printf("  round %d %-10s %9.0f req/s  p99 %6.2f ms  CPU %.1f µs/req (user %.1f, kernel %.1f)  %.2f syscalls/req (%s)  %.3f ctx switches/req  %s",
				r, t.name, s.res.rps, s.res.p99, s.usUser+s.usSys, s.usUser, s.usSys, s.syscalls, s.tool, s.ctxsw, s.res.errors)
		}
	}
	for _, t := range targets {
		h.pinnedRows = append(h.pinnedRows, summarizePinned(t.name, per[t.name]))
	}
	return nil
}

// pinnedRouter starts fastrouter on routerCPU with GOMAXPROCS=1, and with
// a -variants setting when variant is not "".
func (h *harness) pinnedRouter(node string, bin variantBin, variant ...string) (target, error) {
	http, admin := h.port(), h.port()
	env := []string{"GOMAXPROCS=1"}
	var flags []string
	name := "fastrouter"
	if len(variant) > 0 {
		e, f, err := variantArgs(variant[0])
		if err != nil {
			return target{}, err
		}
		env, flags = append(env, e), f
		name += " " + variantName(e, f) + bin.suffix
	}
	args := append([]string{"--http", http, "--admin", admin,
		"--subscription-server", h.port(), "--to", "bench.test=" + node, "--log-level", "warn"}, flags...)
	p, err := h.startOn(strings.NewReplacer(" ", "_", "/", "_").Replace(name), routerCPU, env, bin.path, args...)
	if err != nil {
		return target{}, err
	}
	if err := waitListen(admin, 10*time.Second); err != nil {
		return target{}, err
	}
	return target{name: name, url: "http://" + http + "/", pid: p.cmd.Process.Pid}, nil
}

// pinnedSample is one run against one router.
type pinnedSample struct {
	res                  result
	usUser, usSys, ctxsw float64
	syscalls             float64
	tool                 string
}

// pinnedRun measures one router: a wrk run of h.dur (req/s, p99, CPU and
// context switches per request from /proc), then a window of half that
// with the system call counter attached.
func (h *harness) pinnedRun(ctx context.Context, t target, counter syscallCountFunc) (pinnedSample, error) {
	pids := tree(t.pid)
	u0, s0 := cpuSplit(t.pid)
	c0 := ctxSwitches(pids)
	res, err := runWrkOn(ctx, loadCPU, 1, t.url, "bench.test", h.conns, h.dur)
	if err != nil {
		return pinnedSample{}, err
	}
	u1, s1 := cpuSplit(t.pid)
	c1 := ctxSwitches(pids)
	s := pinnedSample{res: res}
	if res.requests > 0 {
		us := 1e6 / res.requests
		s.usUser, s.usSys = (u1-u0)*us, (s1-s0)*us
		s.ctxsw = float64(c1-c0) / res.requests
	}
	if counter == nil {
		return s, nil
	}
	window := max(3*time.Second, h.dur/2)
	calls, tool, wres, err := counter(ctx, tree(t.pid), func() (result, error) {
		return runWrkOn(ctx, loadCPU, 1, t.url, "bench.test", h.conns, window)
	})
	if err != nil {
		log.Printf("  %s: counting system calls: %v", t.name, err)
		return s, nil
	}
	if wres.requests > 0 {
		s.syscalls, s.tool = calls/wres.requests, tool
	}
	return s, nil
}

func summarizePinned(name string, samples []pinnedSample) pinnedRow {
	pick := func(f func(pinnedSample) float64) float64 {
		v := make([]float64, 0, len(samples))
		for _, s := range samples {
			v = append(v, f(s))
		}
		return median(v)
	}
	row := pinnedRow{router: name,
		rps:      pick(func(s pinnedSample) float64 { return s.res.rps }),
		p99:      pick(func(s pinnedSample) float64 { return s.res.p99 }),
		usUser:   pick(func(s pinnedSample) float64 { return s.usUser }),
		usSys:    pick(func(s pinnedSample) float64 { return s.usSys }),
		ctxsw:    pick(func(s pinnedSample) float64 { return s.ctxsw }),
		syscalls: pick(func(s pinnedSample) float64 { return s.syscalls }),
	}
	var errs []string
	for _, s := range samples {
		if s.tool != "" {
			row.syscallTool = s.tool
		}
		if s.res.errors != "" {
			errs = append(errs, s.res.errors)
		}
	}
	row.errors = strings.Join(errs, "; ")
	return row
}

// ctxSwitches is the sum of voluntary and involuntary context switches of
// every thread of pids.
func ctxSwitches(pids []int) uint64 {
	var n uint64
	for _, pid := range pids {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, e := range ents {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				k, v, ok := strings.Cut(line, ":")
				if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
					c, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
					n += c
				}
			}
		}
	}
	return n
}

// syscallCountFunc counts the system calls pids make while load runs, and
// returns them with the tool's name and load's result.
type syscallCountFunc func(ctx context.Context, pids []int, load func() (result, error)) (calls float64, tool string, res result, err error)

// syscallCounter picks perf (the raw_syscalls:sys_enter tracepoint, cheap)
// when it works here, else strace -c (which slows the process down a lot,
// so only the ratio of calls to requests in its window means anything),
// else nil.
func syscallCounter() syscallCountFunc {
	if path, err := exec.LookPath("perf"); err == nil {
		if exec.Command(path, "stat", "-e", "raw_syscalls:sys_enter", "true").Run() == nil {
			return perfCount(path)
		}
	}
	if path, err := exec.LookPath("strace"); err == nil {
		if exec.Command(path, "-c", "-o", "/dev/null", "true").Run() == nil {
			return straceCount(path)
		}
	}
	return nil
}

// perfCount attaches perf stat (on loadCPU) to every thread of pids.
func perfCount(path string) syscallCountFunc {
	return func(ctx context.Context, pids []int, load func() (result, error)) (float64, string, result, error) {
		out, res, err := traced(ctx, exec.Command("taskset", "-c", loadCPU, path, "stat", "-x,", "-e", "raw_syscalls:sys_enter",
			"-p", joinPIDs(pids)), load)
		if err != nil {
			return 0, "", res, err
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Split(line, ",")
			if len(f) >= 3 && f[2] == "raw_syscalls:sys_enter" {
				n, err := strconv.ParseFloat(f[0], 64)
				if err != nil {
					return 0, "", res, fmt.Errorf("perf: %q", line)
				}
				return n, "perf", res, nil
			}
		}
		return 0, "", res, fmt.Errorf("perf printed no count: %q", out)
	}
}

// straceCount attaches strace -c -f to pids.
func straceCount(path string) syscallCountFunc {
	return func(ctx context.Context, pids []int, load func() (result, error)) (float64, string, result, error) {
		args := []string{"-c", "-f"}
		for _, p := range pids {
			args = append(args, "-p", strconv.Itoa(p))
		}
		out, res, err := traced(ctx, exec.Command("taskset", append([]string{"-c", loadCPU, path}, args...)...), load)
		if err != nil {
			return 0, "", res, err
		}
		// The summary's last line: "100.00 secs usecs/call calls [errors] total".
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 5 && f[len(f)-1] == "total" {
				n, err := strconv.ParseFloat(f[3], 64)
				if err == nil {
					return n, "strace", res, nil
				}
			}
		}
		return 0, "", res, fmt.Errorf("strace printed no total: %q", out)
	}
}

// traced runs tracer (which prints its counts on SIGINT) around load: it
// starts it, gives it time to attach, runs load, interrupts it and returns
// what it printed. The tracer is killed if it has not exited 10 s later.
func traced(ctx context.Context, tracer *exec.Cmd, load func() (result, error)) (string, result, error) {
	var buf bytes.Buffer
	tracer.Stdout, tracer.Stderr = &buf, &buf
	if err := tracer.Start(); err != nil {
		return "", result{}, err
	}
	done := make(chan error, 1)
	go func() { done <- tracer.Wait() }()
	time.Sleep(500 * time.Millisecond) // attach to every thread
	res, lerr := load()
	_ = tracer.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = tracer.Process.Kill()
		<-done
		return "", res, errors.New("tracer did not stop")
	case <-ctx.Done():
		_ = tracer.Process.Kill()
		<-done
		return "", res, ctx.Err()
	}
	return buf.String(), res, lerr
}

func joinPIDs(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}
