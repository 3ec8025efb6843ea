// Command fastrouter is a load-balancing front router: it terminates HTTP,
// maps each request's Host to a pool of uwsgi nodes that join by subscription
// datagrams (as uWSGI's --subscribe-to sends them), and forwards over uwsgi.
//
// This package only wires packages together: flags and config (config.go),
// the app and its phases (app.go: build, bind, start, run, stop), reload
// (reload.go), the binary upgrade's pid file (pidfile.go), signals (here).
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
	"runtime/debug"
	"syscall"

	"github.com/fastrouter/fastrouter/internal/upgrade"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

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

// run is main with its environment passed in; it returns the exit code:
// 0 after a clean shutdown, 1 for a runtime failure (e.g. a listener that
// cannot bind), 2 for bad flags or config.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "subscribe" {
		return runSubscribe(args[1:], stdout, stderr)
	}
	o, fs, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: fastrouter [flags]\n       fastrouter subscribe [flags]   (announce a node; see fastrouter subscribe --help)\n\n"+
			"fastrouter %s: HTTP front router for uwsgi nodes that join by subscription.\n\nFlags:\n", versionString())
		printFlags(stdout, fs)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fastrouter: %v\n", err)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "fastrouter %s\n", versionString())
		return 0
	}
	level := new(slog.LevelVar)
	l, _ := parseLevel(o.logLevel)
	level.Set(l)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

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
		fmt.Fprintf(stderr, "fastrouter: %v\n", err)
		return 1
	}
	defer up.Close()
	sig := signals{hup: hup, usr2: usr2, reload: reload}
	if err := serve(ctx, newApp(o, log, level, up), sig); err != nil {
		log.Error("fatal", "err", err)
		fmt.Fprintf(stderr, "fastrouter: %v\n", err)
		return 1
	}
	return 0
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
// bound or started is stopped before serve returns (app.stop).
func serve(ctx context.Context, a *app, sig signals) error {
	err := a.build()
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

// printFlags lists every flag in the --name form operators use.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			arg = ""
		}
		line := "  --" + f.Name
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n      %s", line, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
