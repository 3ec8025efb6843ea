// Command fastrouter is a load-balancing front router: it terminates HTTP,
// maps each request's Host to a pool of uwsgi nodes that join by subscription
// datagrams (as uWSGI's --subscribe-to sends them), and forwards over uwsgi.
//
// This package only wires packages together: the command line (here and
// flags.go: subcommands, help, version; addr.go: listener addresses), flags and config (config.go), the
// app and its phases (app.go: build, bind, start, run, stop), reload
// (reload.go), the binary upgrade's pid file (pidfile.go), signals (here),
// and the subcommands check (check.go), health (healthcmd.go), man (manpage.go), subscribe
// (subscribe.go) and completion (completion.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/fastrouter/fastrouter/internal/lograte"
	"github.com/fastrouter/fastrouter/internal/upgrade"
)

// version and commit are set at build time with
// -ldflags "-X main.version=… -X main.commit=…" (Makefile); unset, they
// come from the module and VCS information Go records in the binary.
var (
	version = ""
	commit  = ""
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// commitString is the VCS revision the binary was built from (12 hex
// digits, "-dirty" when the tree had changes), or "unknown".
func commitString() string {
	if commit != "" {
		return commit
	}
	bi, _ := debug.ReadBuildInfo()
	return commitOf(bi)
}

// commitOf reads the revision Go recorded in bi (go build records it
// unless -buildvcs=false).
func commitOf(bi *debug.BuildInfo) string {
	if bi == nil {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// versionLine is what --version prints.
func versionLine() string {
	return fmt.Sprintf("fastrouter %s (commit %s, %s, %s/%s)", versionString(), commitString(),
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// subcommand is a word that may come first on the command line, with
// what --help and the completion scripts say of it.
type subcommand struct{ name, args, what string }

// subcommands lists them in the order --help shows them.
func subcommands() []subcommand {
	return []subcommand{
		{"check", "[flags]", "validate the flags and --config file as the router would, start nothing"},
		{"health", "[--admin ADDR]", "ask a running router's /healthz: exit 0 when it serves, 1 when not"},
		{"subscribe", "--key KEY --address ADDR [flags]", "announce a node that is not uWSGI"},
		{"completion", "bash|zsh", "print a shell completion script"},
		{"man", "", "print the manual page (roff)"},
	}
}

// run is main with its environment passed in; it returns the exit code:
// 0 after a clean shutdown, 1 for a runtime failure (e.g. a listener that
// cannot bind), 2 for bad flags or config.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "subscribe":
			return runSubscribe(args[1:], stdout, stderr)
		case "check":
			return runCheck(args[1:], stdout, stderr)
		case "health":
			return runHealth(args[1:], stdout, stderr)
		case "completion":
			return runCompletion(args[1:], stdout, stderr)
		case "man":
			return runMan(args[1:], stdout, stderr)
		case "help":
			args = []string{"--help"}
		}
	}
	o, fs, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, fs)
		return 0
	}
	if err != nil {
		report(stderr, "fastrouter", err)
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, versionLine())
		return 0
	}
	return runServe(args, o, stderr)
}

// runServe runs the router until SIGTERM/SIGINT. Its log goes to stderr
// through a rate limit (internal/lograte), so that a flood of datagrams or
// admin calls cannot become a flood of log lines. A failure is printed
// once: a configuration the components refuse (exit 2) as a usage error,
// a runtime failure (exit 1) as one error log line.
func runServe(args []string, o *options, stderr io.Writer) int {
	level := new(slog.LevelVar)
	l, _ := parseLevel(o.logLevel)
	level.Set(l)
	limited := lograte.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}), lograte.Config{})
	log := slog.New(limited)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	reload := func() (*options, error) {
		o, _, err := parseArgs(args)
		return o, err
	}
	up, err := upgrade.New(upgrade.Config{Logger: log})
	if err != nil {
		log.Error("fatal", "err", err)
		return 1
	}
	defer up.Close()
	sig := signals{hup: hup, usr2: usr2, reload: reload}
	a := newApp(o, log, level, up)
	a.flushLog = limited.Flush
	a.h1Loops = spareP(o)
	defer runtime.GOMAXPROCS(a.h1Loops)
	err = serve(ctx, a, sig)
	limited.Flush()
	var cerr configError
	switch {
	case errors.As(err, &cerr):
		report(stderr, "fastrouter", cerr.err)
		return 2
	case err != nil:
		log.Error("fatal", "err", err)
		return 1
	}
	return 0
}

// spareP gives the scheduler one P more than the HTTP/1.1 event loops
// when there are several (router.Config.H1Loops says why) and returns the
// number of loops: GOMAXPROCS as it was. The caller restores GOMAXPROCS to
// it when the router has stopped.
func spareP(o *options) int {
	n := runtime.GOMAXPROCS(0)
	if o.h1EventLoop && n > 1 && runtime.GOOS == "linux" {
		runtime.GOMAXPROCS(n + 1)
	}
	return n
}

// configError is a configuration that parsed but that a component refused
// while the app was built (a certificate that does not load, a key
// directory that cannot be read): a usage error, exit 2.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

// report prints each problem of err on a line of its own, prefixed with
// the command's name.
func report(w io.Writer, cmd string, err error) {
	for _, l := range lines(err) {
		fmt.Fprintf(w, "%s: %s\n", cmd, operatorText(l))
	}
}

// operatorText drops the package prefixes ("balancer: ", "subauth: ")
// that errors of the components carry for their callers: an operator
// reads the flag and the problem, not where in the code it was found.
func operatorText(s string) string {
	for _, pkg := range []string{"balancer", "subauth", "tls", "health", "cluster", "lifecycle",
		"accesslog", "subscription", "router", "admin", "stats", "upgrade", "sockutil"} {
		s = strings.ReplaceAll(s, ": "+pkg+": ", ": ")
		s = strings.TrimPrefix(s, pkg+": ")
	}
	return s
}

// printUsage is fastrouter --help.
func printUsage(w io.Writer, fs *flagSet) {
	fmt.Fprintf(w, "%s: HTTP front router for uwsgi nodes that join by subscription.\n\nUsage:\n", versionLine())
	width := len("fastrouter [flags]")
	for _, c := range subcommands() {
		width = max(width, len("fastrouter "+c.name+" "+c.args))
	}
	fmt.Fprintf(w, "  %-*s  %s\n", width, "fastrouter [flags]", "run the router")
	for _, c := range subcommands() {
		fmt.Fprintf(w, "  %-*s  %s\n", width, "fastrouter "+c.name+" "+c.args, c.what)
	}
	fmt.Fprintf(w, "\nEvery flag can also be set in the --config file (key = flag name without --).\n"+
		"\"fastrouter COMMAND --help\" describes a command's own flags.\n\n")
	printFlags(w, fs)
}

// signals are the operator's requests besides stop (serve's ctx): hup
// reloads the configuration, parsed anew by reload; usr2 upgrades the
// binary.
type signals struct {
	hup, usr2 <-chan os.Signal
	reload    func() (*options, error)
}

// serve runs a through its phases until ctx ends (SIGTERM, SIGINT), a
// server fails, or a binary upgrade hands over, and then stops it within
// --shutdown-timeout. Whatever phase fails, everything a phase built,
// bound or started is stopped before serve returns (app.stop). A build
// failure is a configError.
func serve(ctx context.Context, a *app, sig signals) error {
	err := a.build()
	if err != nil {
		err = configError{err}
	}
	if err == nil {
		err = a.bind()
	}
	if err == nil {
		err = a.start(ctx)
	}
	if err == nil {
		err = a.run(ctx, sig)
	}
	a.stop()
	return err
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
