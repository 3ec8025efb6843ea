package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/fastrouter/fastrouter/internal/upgrade"
)

// runCheck is `fastrouter check [flags]`, as nginx -t or haproxy -c: it
// validates what the router would run with (the flags, the --config file,
// every address and CIDR, certificates and keys, key directories, the
// state file, the files the router writes) without binding a socket or
// starting anything, and exits 0 with "configuration OK" and a one-line
// summary on stdout, or 2 with every problem found on stderr, one per
// line. What the router would warn about at start is printed as warnings
// (they do not fail the check).
func runCheck(args []string, stdout, stderr io.Writer) int {
	const cmd = "fastrouter check"
	o, _, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: %s [flags]\n\n"+
			"Validates the flags and the --config file as the router would read them (addresses, CIDRs,\n"+
			"certificates and keys, key directories, the state file, the files it writes), binding and\n"+
			"starting nothing. Exit 0: \"configuration OK\" and a summary; exit 2: every problem, one per line.\n\n"+
			"Flags: those of fastrouter (see fastrouter --help).\n", cmd)
		return 0
	}
	var p problems
	if err != nil {
		p = append(p, err)
	}
	o.checkFiles(&p)
	warn := &warnLines{w: stderr, cmd: cmd}
	log := slog.New(warn)
	var a *app
	if len(p) == 0 { // the build needs options that passed the checks
		var err error
		if a, err = dryBuild(o, log); err != nil {
			p.add(err)
		}
	}
	if len(p) > 0 {
		report(stderr, cmd, p.err())
		return 2
	}
	warnIfExposed(log, o)
	warnIfForgetful(log, o)
	warnIfInsecure(log, o)
	fmt.Fprintln(stdout, "configuration OK")
	fmt.Fprintln(stdout, a.summary())
	return 0
}

// dryBuild builds the app for o as serve would, minus what writes: no
// access log file is opened (checkFiles checks it can be), no socket is
// bound, no component started; then it unwinds what build made. The state
// file is read into the throwaway table, as a start would.
func dryBuild(o *options, log *slog.Logger) (*app, error) {
	up, err := upgrade.New(upgrade.Config{Logger: log, Env: []string{}}) // never the child of an upgrade
	if err != nil {
		return nil, err
	}
	defer up.Close()
	a := newApp(o, log, new(slog.LevelVar), up)
	a.dry = true
	err = a.build()
	a.stops.unwind(context.Background())
	return a, err
}

// checkFiles checks that the files the router writes can be written: the
// access log, the state file and the pid file (each: the file is writable,
// or its directory is, to create it). The state file must be readable too.
func (o *options) checkFiles(p *problems) {
	if o.accessLog != "" && o.accessLog != "-" {
		p.add(writable("--access-log", o.accessLog))
	}
	if o.stateFile != "" {
		if err := writable("--state-file", o.stateFile); err != nil {
			p.add(err)
		} else if f, err := os.Open(o.stateFile); err == nil {
			f.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			p.addf("--state-file: %w", err)
		}
	}
	if o.pidFile != "" {
		p.add(writable("--pid-file", o.pidFile))
	}
	if o.acme.enabled() {
		p.add(writableDir("--acme-dir", o.acme.dir))
	}
}

// writableDir reports whether dir can hold files: an existing directory
// that is writable, or one that can be created in its parent.
func writableDir(flagName, dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return fmt.Errorf("%s %s: not a directory", flagName, dir)
	case err == nil:
		if err := syscall.Access(dir, 2|1 /* W_OK|X_OK */); err != nil {
			return fmt.Errorf("%s %s: not writable: %w", flagName, dir, err)
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s: %w", flagName, err)
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := syscall.Access(parent, 2|1); err != nil {
		return fmt.Errorf("%s %s: cannot create it in %s: %w", flagName, dir, parent, unwrapPath(err))
	}
	return nil
}

// writable reports whether path can be written: an existing regular file
// that is, or a directory where it can be created.
func writable(flagName, path string) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && !fi.Mode().IsRegular():
		return fmt.Errorf("%s %s: not a regular file", flagName, path)
	case err == nil:
		if err := syscall.Access(path, 2 /* W_OK */); err != nil {
			return fmt.Errorf("%s %s: not writable: %w", flagName, path, err)
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s: %w", flagName, err)
	}
	dir := filepath.Dir(path)
	if di, err := os.Stat(dir); err != nil {
		return fmt.Errorf("%s %s: directory %s: %w", flagName, path, dir, unwrapPath(err))
	} else if !di.IsDir() {
		return fmt.Errorf("%s %s: %s is not a directory", flagName, path, dir)
	}
	if err := syscall.Access(dir, 2|1 /* W_OK|X_OK */); err != nil {
		return fmt.Errorf("%s %s: cannot create it in %s: %w", flagName, path, dir, err)
	}
	return nil
}

// unwrapPath drops the operation and path of an *fs.PathError: the caller
// names them already.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// summary is check's one line on what the configuration runs.
func (a *app) summary() string {
	o := a.o
	var parts []string
	var ls []string
	for _, l := range []struct {
		kind  string
		addrs []string
	}{{"http", o.http}, {"https", o.https}, {"http-to-https", o.httpToHTTPS}, {"uwsgi", o.uwsgi}} {
		if len(l.addrs) > 0 {
			ls = append(ls, l.kind+" "+strings.Join(l.addrs, ","))
		}
	}
	if o.http3 {
		h3 := "http3 (udp) " + strings.Join(o.https, ",")
		if o.http3EarlyData {
			h3 += " with 0-RTT"
		}
		ls = append(ls, h3)
	}
	parts = append(parts, "listeners: "+strings.Join(ls, ", "))
	parts = append(parts, "subscriptions: "+strings.Join(o.subscriptionServers, ","))
	admin := "admin: " + o.admin
	switch {
	case o.adminTokenFile != "":
		admin += " (token)"
	case !isLoopback(o.admin):
		admin += " (open: --admin-insecure)"
	}
	parts = append(parts, admin)
	nodes, pools := 0, a.table.Len()
	for _, p := range a.table.Pools() {
		nodes += len(p.Nodes())
	}
	parts = append(parts, fmt.Sprintf("table: %s (%d static), %s", plural(nodes, "node"), len(o.to), plural(pools, "pool")))
	if len(o.pools) > 0 {
		parts = append(parts, "pools section: "+plural(len(o.pools), "key"))
	}
	if o.stateFile != "" {
		parts = append(parts, "state file: "+o.stateFile)
	}
	if len(o.https) > 0 {
		var acmeNames string
		if o.acme.enabled() {
			acmeNames = strings.Join(o.acme.domains, ",")
			if o.acme.onDemand {
				acmeNames = strings.TrimPrefix(acmeNames+",on-demand for "+strings.Join(o.acme.allow, ","), ",")
			}
		}
		parts = append(parts, "tls: "+strings.Join(nonEmpty("cert "+o.tlsCert, "dir "+o.tlsDir, "acme "+acmeNames), ", "))
	}
	if o.cluster.bind != "" {
		parts = append(parts, fmt.Sprintf("cluster: %s as %s, %s to join", o.cluster.bind, o.cluster.nodeName, plural(len(o.cluster.join), "peer")))
	}
	return strings.Join(parts, "; ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// nonEmpty keeps the "label value" strings whose value is set.
func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if _, v, _ := strings.Cut(s, " "); v != "" {
			out = append(out, s)
		}
	}
	return out
}

// warnLines is the log of a check: it prints the records at WARN and
// above as "fastrouter check: warning: MESSAGE (key=value ...)" and drops
// the rest.
type warnLines struct {
	w     io.Writer
	cmd   string
	attrs []slog.Attr
}

func (h *warnLines) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnLines) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: warning: %s", h.cmd, operatorText(r.Message))
	var kv []string
	add := func(a slog.Attr) bool {
		kv = append(kv, a.Key+"="+a.Value.String())
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if len(kv) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(kv, " "))
	}
	_, err := fmt.Fprintln(h.w, b.String())
	return err
}

func (h *warnLines) WithAttrs(as []slog.Attr) slog.Handler {
	return &warnLines{w: h.w, cmd: h.cmd, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *warnLines) WithGroup(string) slog.Handler { return h }
