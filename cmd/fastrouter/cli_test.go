package main

import (
	"bytes"
	"flag"
	"os"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// Every flag is in one of the help's sections, with an upper-case
// placeholder for its value, and --help states each default once.
func TestHelpGroupsAndPlaceholders(t *testing.T) {
	fs := newFlagSet(&options{})
	want := []string{"Listeners", "Routing", "Nodes and balancing", "TLS", "Security", "Cluster", "Observability", "Lifecycle"}
	if !slices.Equal(fs.sections, want) {
		t.Fatalf("sections %q; want %q", fs.sections, want)
	}
	upper := regexp.MustCompile(`^[A-Z][A-Z0-9_:=|.]*$`)
	fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(want, fs.group[f.Name]) {
			t.Errorf("--%s is in no section (%q)", f.Name, fs.group[f.Name])
		}
		if !isBool(f) && !upper.MatchString(placeholder(f)) {
			t.Errorf("--%s shows its value as %q; want an upper-case placeholder in `quotes` in its usage", f.Name, placeholder(f))
		}
	})
	var b bytes.Buffer
	printUsage(&b, fs)
	help := b.String()
	for _, block := range strings.Split(help, "\n  --")[1:] {
		if n := strings.Count(block, "default"); n > 1 {
			t.Errorf("--%s states its default %d times", block, n)
		}
	}
	for _, s := range []string{"  --max-conns N\n", "  --timeout D\n", "  --http ADDR\n", "  --config FILE\n", "  --to KEY=NODEADDR\n",
		"  --pprof\n", "(default 0: no limit)", "Nodes and balancing:\n", "fastrouter check [flags]", "fastrouter health", "fastrouter completion bash|zsh"} {
		if !strings.Contains(help, s) {
			t.Errorf("--help lacks %q", s)
		}
	}
	if strings.Contains(help, "(0 = no limit) (default 0)") || strings.Contains(help, "--max-conns listener") {
		t.Error("--help repeats a default or shows a wrong placeholder")
	}
}

// One parse lists every problem, one per line, each worded for an
// operator: what was wrong and what was expected.
func TestEveryProblemListed(t *testing.T) {
	_, _, err := parseArgs([]string{"--bogus", "x", "--timeout", "5", "--max-conns", "lots", "--pprof=maybe",
		"--http", "127.0.0.1:99999", "--trusted-proxy", "10.0.0.0/33", "--node-allow", "10.0.0.1", "--algo", "rr", "--queue-timeout"})
	if err == nil {
		t.Fatal("accepted")
	}
	got := lines(err)
	want := []string{
		`unknown flag --bogus (see fastrouter --help)`,
		`--timeout: "5" is not a duration (e.g. 5s, 1m)`,
		`--max-conns: "lots" is not a whole number`,
		`--pprof: "maybe" is not true or false`,
		`--queue-timeout needs a value: --queue-timeout D`,
		`--http "127.0.0.1:99999": port 99999 is out of range (0-65535)`,
		`--algo: unknown algorithm "rr" (want wrr, lrc, wlrc, iphash, p2c, hash or sed)`,
		`--trusted-proxy "10.0.0.0/33": prefix length out of range (IPv4 0-32, IPv6 0-128)`,
		`--node-allow "10.0.0.1": not a CIDR: write 10.0.0.1/32 for this one address`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// No message names a Go type, package or function: each bad input is
// checked through the same text the operator reads (operatorText).
func TestMessagesNameNoGoInternals(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		args []string
		yaml string
		want string
	}{
		"misspelt pool field":   {yaml: "pools:\n  a.test:\n    algoo: wrr\n", want: `line 3: unknown setting "algoo"`},
		"pool field type":       {yaml: "pools:\n  a.test:\n    queue-size: many\n", want: `queue-size: "many" is not a whole number`},
		"health-check duration": {yaml: "pools:\n  a.test:\n    health-check:\n      interval: 5\n", want: `interval: "5" is not a duration`},
		"pools not a map":       {yaml: "pools: [a, b]\n", want: "want a map of pool key to settings"},
		"file not a map":        {yaml: "- a\n", want: "want a map of settings"},
		"setting not a value":   {yaml: "http: {a: b}\n", want: "http: want one value or a list of values"},
		"yaml duration":         {yaml: "timeout: 5\n", want: `line 1: timeout: "5" is not a duration (e.g. 5s, 1m)`},
		"set twice":             {yaml: "timeout: 5s\ntimeout: 6s\n", want: "line 2: timeout is set twice (first on line 1)"},
		"bad cidr":              {args: []string{"--subscription-allow", "10.0.0.0/99"}, want: "prefix length out of range"},
		"cidr syntax":           {args: []string{"--trusted-proxy", "ten"}, want: `not a CIDR (e.g. 10.0.0.0/8, fd00::/8)`},
		"node address":          {args: []string{"--to", "k=example.com:80"}, want: `--to "k=example.com:80": node address must be`},
		"http node address":     {args: []string{"--to", "k=http://host/x"}, want: `http node address must be`},
		"max-inflight":          {args: []string{"--max-inflight", "lots"}, want: `--max-inflight: max in-flight "lots"`},
		"duration in subscribe": {args: []string{"--drain-timeout", "-1s"}, want: "--drain-timeout must be positive"},
		"out of range int":      {args: []string{"--max-header-bytes", "99999999999999999999"}, want: "is out of range"},
	} {
		args := c.args
		if c.yaml != "" {
			args = []string{"--config", writeFile(t, dir, strings.ReplaceAll(name, " ", "_")+".yaml", c.yaml)}
		}
		_, _, err := parseArgs(args)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		text := operatorText(err.Error())
		if !strings.Contains(text, c.want) {
			t.Errorf("%s: %q; want it to say %q", name, text, c.want)
		}
		if leaksGo(text) {
			t.Errorf("%s: %q names Go internals", name, text)
		}
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := dir + "/" + name
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every listener address is checked when the flags are read: a typo is a
// usage error (exit 2), not a bind failure after other sockets opened.
func TestAddressesCheckedAtParse(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--http", "127.0.0.1:99999"}, `--http "127.0.0.1:99999": port 99999 is out of range`},
		{[]string{"--https", "localhost", "--tls-dir", "."}, `--https "localhost": want host:port`},
		{[]string{"--http-to-https", "127.0.0.1:http"}, `port "http" is not a number`},
		{[]string{"--uwsgi", "127.0.0.1:"}, `--uwsgi "127.0.0.1:": no port`},
		{[]string{"--uwsgi", "@"}, `bad unix socket name`},
		{[]string{"--subscription-server", "localhost:2626"}, `--subscription-server "localhost:2626": host "localhost" is not an IP address`},
		{[]string{"--admin", "127.0.0.1:70000"}, `--admin "127.0.0.1:70000": port 70000 is out of range`},
		{[]string{"--stats", "bad host:1"}, `--stats "bad host:1": host "bad host" is neither`},
		{[]string{"--cluster-bind", "127.0.0.1:99999"}, `--cluster-bind "127.0.0.1:99999": port 99999 is out of range`},
		{[]string{"--cluster-bind", ":7946", "--cluster-join", "peer:x"}, `--cluster-join "peer:x": port "x" is not a number`},
	} {
		_, _, err := parseArgs(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want %q", c.args, err, c.want)
		}
	}
	for _, ok := range [][]string{
		{"--http", "localhost:8080", "--http", "[::1]:0", "--http", ":8080"},
		{"--uwsgi", "/run/fr.sock", "--uwsgi", "@fr", "--uwsgi", "127.0.0.1:3031", "--stats", "/run/stats.sock"},
		{"--subscription-server", "/run/sub.sock", "--subscription-server", "[::1]:2626", "--subscription-server", ":2626"},
	} {
		if _, _, err := parseArgs(ok); err != nil {
			t.Errorf("%v refused: %v", ok, err)
		}
	}
}

// An admin listener beyond loopback needs a token, or --admin-insecure.
func TestAdminBeyondLoopbackNeedsToken(t *testing.T) {
	tok := writeFile(t, t.TempDir(), "tok", "s3cret\n")
	for _, c := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--admin", "0.0.0.0:9191"}, false},
		{[]string{"--admin", ":9191"}, false},
		{[]string{"--admin", "[::]:9191"}, false},
		{[]string{"--admin", "192.0.2.1:9191"}, false},
		{[]string{"--admin", "admin.example:9191"}, false},
		{[]string{"--admin", "127.0.0.2:9191"}, true},
		{[]string{"--admin", "[::1]:9191"}, true},
		{[]string{"--admin", "localhost:9191"}, true},
		{[]string{"--admin", "0.0.0.0:9191", "--admin-token-file", tok}, true},
		{[]string{"--admin", "0.0.0.0:9191", "--admin-insecure"}, true},
	} {
		_, _, err := parseArgs(c.args)
		if c.ok != (err == nil) {
			t.Errorf("%v: %v; want ok=%v", c.args, err, c.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "--admin-insecure") || !strings.Contains(err.Error(), "--admin-token-file") || len(lines(err)) != 1) {
			t.Errorf("%v: %q; want one line naming --admin-token-file and --admin-insecure", c.args, err)
		}
	}
}

func TestCommitOf(t *testing.T) {
	bi := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "3371cf776794c188c94809f3d1807da8b6d87edd"}, {Key: "vcs.modified", Value: "true"}}}
	if got := commitOf(bi); got != "3371cf776794-dirty" {
		t.Errorf("commitOf = %q", got)
	}
	if got := commitOf(&debug.BuildInfo{}); got != "unknown" {
		t.Errorf("commitOf without VCS = %q", got)
	}
	if !strings.HasPrefix(versionLine(), "fastrouter ") || !strings.Contains(versionLine(), "commit ") || !strings.Contains(versionLine(), "go1.") {
		t.Errorf("versionLine = %q", versionLine())
	}
}

// Nodes that enter from the configuration and nodes that expire are
// logged at INFO, each naming the pool and the node.
func TestConfigAndExpiryLogged(t *testing.T) {
	a, logs := testApp(t, "--to", "s.test=127.0.0.1:1", "--log-level", "info")
	if err := a.build(); err != nil {
		t.Fatal(err)
	}
	defer a.stops.unwind(t.Context())
	if _, err := a.table.Announce(&balancer.Announce{Key: []byte("d.test"), Address: []byte("10.0.0.7:3031")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	if n := a.table.Expire(time.Nanosecond); n != 1 {
		t.Fatalf("expired %d", n)
	}
	out := logs.String()
	for _, want := range []string{
		`level=INFO msg="node joined" pool=s.test node=127.0.0.1:1 source=config static=true`,
		`level=INFO msg="node expired" pool=d.test node=10.0.0.7:3031 last_seen=`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// FuzzParseArgs: any command line parses or fails with its problems one
// per line, each naming no Go internals; it never panics. Arguments are
// the input split at NUL bytes.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"--timeout\x005", "--bogus\x00x\x00--http\x00127.0.0.1:99999", "-h", "--", "--=x", "---x", "-timeout=1s",
		"--pprof=maybe", "--to\x00k=[::1]:1", "--admin\x000.0.0.0:1\x00--admin-insecure", "--trusted-proxy\x0010.0.0.1",
		"--uwsgi\x00@\x00--stats\x00a:b:c", "--subscription-server\x00/x\x00--cluster-bind\x00:0\x00--cluster-join\x00h:1",
		"--max-conns", "extra", "--http\x00[::1%eth0]:1",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1024 {
			return
		}
		var args []string
		if len(data) > 0 {
			args = strings.Split(string(data), "\x00")
		}
		for _, a := range args {
			if leaksGo(a) {
				return // the input itself would be quoted back
			}
			if strings.HasPrefix(strings.TrimLeft(a, "-"), "config") || strings.HasPrefix(a, "--state") ||
				strings.Contains(a, "file") || strings.Contains(a, "sign-check") {
				return // no file system access from the fuzzer
			}
		}
		_, _, err := parseArgs(args)
		if err == nil || err == flag.ErrHelp {
			return
		}
		for _, l := range lines(err) {
			if leaksGo(operatorText(l)) {
				t.Fatalf("problem names Go internals: %q", l)
			}
		}
	})
}
