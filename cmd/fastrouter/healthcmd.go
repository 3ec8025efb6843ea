package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// runHealth is `fastrouter health [--admin ADDR] [--config FILE]`: one GET
// of a running router's /healthz with a short deadline, for a container's
// HEALTHCHECK (a distroless image has no curl) or a script. Exit 0 when
// it answers 200, 1 when it answers anything else (503 "shutting down"
// during a shutdown) or cannot be reached, 2 for bad flags.
func runHealth(args []string, stdout, stderr io.Writer) int {
	const cmd = "fastrouter health"
	var o healthOptions
	fs := newHealthFlags(&o)
	admin, config, timeout := &o.admin, &o.config, &o.timeout
	var p problems
	rest, help := parseFlags(fs, args, &p)
	if help {
		fmt.Fprintf(stdout, "Usage: %s [--admin ADDR] [--config FILE] [--timeout D]\n\n"+
			"Asks a running router's /healthz. Exit 0: it serves (200); 1: it does not, or is shutting down, or\n"+
			"cannot be reached; 2: bad flags.\n\nFlags:\n", cmd)
		printFlags(stdout, fs)
		return 0
	}
	if len(rest) > 0 {
		p.addf("unexpected argument %q (see %s --help)", rest[0], cmd)
	}
	addr := *admin
	if *config != "" && !flagGiven(fs, "admin") {
		a, err := adminFromConfig(*config)
		p.add(err)
		if a != "" {
			addr = a
		}
	}
	if err := checkTCPAddr(addr); err != nil {
		p.addf("--admin %q: %w", addr, err)
	}
	if *timeout <= 0 {
		p.addf("--timeout must be positive, got %s", *timeout)
	}
	if len(p) > 0 {
		report(stderr, cmd, p.err())
		return 2
	}
	status, body, err := getHealth(dialable(addr), *timeout)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "%s: %s unreachable: %v\n", cmd, addr, err)
		return 1
	case status != http.StatusOK:
		fmt.Fprintf(stderr, "%s: %s: %d %s\n", cmd, addr, status, body)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", addr, body)
	return 0
}

// healthOptions are the flags of `fastrouter health`.
type healthOptions struct {
	admin, config string
	timeout       time.Duration
}

func newHealthFlags(o *healthOptions) *flagSet {
	fs := newFlagSetNamed("fastrouter health")
	fs.SetOutput(discard{})
	fs.Usage = func() {}
	fs.StringVar(&o.admin, "admin", "127.0.0.1:9191", "the router's admin `ADDR`; one on every interface (:9191, 0.0.0.0:9191) is asked on loopback")
	fs.StringVar(&o.config, "config", "", "read the admin address from this `FILE` (the router's --config) unless --admin is given")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Second, "give up after `D`")
	fs.close()
	return fs
}

func flagGiven(fs *flagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// adminFromConfig reads the admin: setting of a --config file ("" when it
// has none).
func adminFromConfig(path string) (string, error) {
	data, err := readLimited(path, 1<<20)
	if err != nil {
		return "", fmt.Errorf("--config: %w", err)
	}
	var doc struct {
		Admin string `yaml:"admin"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("config %s: %w", path, oneLine(err))
	}
	return doc.Admin, nil
}

// dialable turns a listen address into one to connect to: a router
// listening on every interface is reached on loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "" || err == nil && ip.Is4() && ip.IsUnspecified():
		host = "127.0.0.1"
	case err == nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// getHealth GETs http://addr/healthz within timeout and returns the
// status and the first line of the body.
func getHealth(addr string, timeout time.Duration) (int, string, error) {
	c := &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
		return errors.New("redirected")
	}}
	resp, err := c.Get("http://" + addr + "/healthz")
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // names neither the method nor the URL: the caller says which
	}
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return resp.StatusCode, line, nil
}
