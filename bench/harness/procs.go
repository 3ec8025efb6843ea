package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process the harness started and stops: the backend, a router,
// nginx (master + workers) or uWSGI (master + http router).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
}

// start runs name's binary with args in its own process group, logging to
// dir/name.log.
func (h *harness) start(name string, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(filepath.Join(h.tmp, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: lf}
	h.procs = append(h.procs, p)
	return p, nil
}

// startOn is start with environment settings (NAME=VALUE, through env(1))
// and, when cpus is set, pinned to those CPUs with taskset(1). Both exec
// the binary, so the process's PID is the one measured.
func (h *harness) startOn(name, cpus string, env []string, bin string, args ...string) (*proc, error) {
	var pre []string
	if len(env) > 0 {
		pre = append([]string{"/usr/bin/env"}, env...)
	}
	if cpus != "" {
		ts, err := exec.LookPath("taskset")
		if err != nil {
			return nil, errors.New("taskset (util-linux) is required to pin a process")
		}
		pre = append(pre, ts, "-c", cpus)
	}
	if len(pre) == 0 {
		return h.start(name, bin, args...)
	}
	return h.start(name, pre[0], append(append(pre[1:], bin), args...)...)
}

// stop kills the process group and reaps the leader.
func (p *proc) stop() {
	if p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.log.Close()
}

// stopAll stops every process started since mark (a scenario's own).
func (h *harness) stopFrom(mark int) {
	for i := len(h.procs) - 1; i >= mark; i-- {
		h.procs[i].stop()
	}
	h.procs = h.procs[:mark]
}

// waitListen waits until addr ("ip:port" or a unix path) accepts.
func waitListen(addr string, d time.Duration) error {
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tree returns pid and all its descendants.
func tree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, _, _, ok := stat(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// stat reads a process's parent and CPU ticks (user, system).
func stat(pid int) (ppid int, utime, stime uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	utime, _ = strconv.ParseUint(f[11], 10, 64)
	stime, _ = strconv.ParseUint(f[12], 10, 64)
	return ppid, utime, stime, true
}

// cpuSeconds is the CPU time used so far by the process tree of pid
// (clock ticks of 1/100 s, the Linux USER_HZ).
func cpuSeconds(pid int) float64 {
	u, s := cpuSplit(pid)
	return u + s
}

// cpuSplit is cpuSeconds split into user and system (kernel) time.
func cpuSplit(pid int) (user, sys float64) {
	var ut, st uint64
	for _, p := range tree(pid) {
		if _, u, s, ok := stat(p); ok {
			ut += u
			st += s
		}
	}
	return float64(ut) / 100, float64(st) / 100
}

// cpuNanos is the CPU time of every thread of pid, in nanoseconds
// (schedstat: finer than stat's clock ticks, for short measurements).
func cpuNanos(pid int) uint64 {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var t uint64
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, e.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseUint(f[0], 10, 64)
			t += n
		}
	}
	return t
}

// rssBytes is the resident memory of the process tree of pid.
func rssBytes(pid int) int64 {
	var total int64
	for _, p := range tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// raiseNoFile lifts the open-files limit (inherited by the routers) so the
// idle-connections scenario can hold thousands of sockets.
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = min(l.Max, 65536)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
