package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// runMan is `fastrouter man`: it prints the fastrouter(1) manual page in
// roff, made from the flag sets and the subcommand list, so that the page
// can never miss a flag. Install with
//
//	fastrouter man > /usr/local/share/man/man1/fastrouter.1
func runMan(args []string, stdout, stderr io.Writer) int {
	const cmd = "fastrouter man"
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fmt.Fprintf(stdout, "Usage: %s\n\nPrints the fastrouter(1) manual page (roff):\n"+
			"  %s > /usr/local/share/man/man1/fastrouter.1\n", cmd, cmd)
		return 0
	}
	if len(args) != 0 {
		fmt.Fprintf(stderr, "%s: takes no arguments (see %s --help)\n", cmd, cmd)
		return 2
	}
	writeMan(stdout)
	return 0
}

// manIntro is the page's fixed text before the options; the signals, exit
// codes and files after them are manOutro. Both say what docs/ says at
// length (docs/operations.md, docs/configuration.md).
const manIntro = `.SH NAME
fastrouter \- load-balancing front router for uWSGI nodes that join by subscription
.SH SYNOPSIS
.B fastrouter
[\fIflags\fR]
.br
.B fastrouter
\fIcommand\fR [\fIflags\fR]
.SH DESCRIPTION
.B fastrouter
terminates HTTP/1.1, HTTPS and HTTP/2, maps each request's Host to a pool of
backend nodes and forwards the request over the uwsgi protocol (or HTTP/1.1 to
http:// nodes). Nodes join and leave pools at run time by sending the
subscription datagrams uWSGI sends with \-\-subscribe\-to.
.PP
Every flag can also be set in a YAML file given with \fB\-\-config\fR: the keys
are the flag names without the dashes, lists set repeatable flags, and flags on
the command line override the file. Durations are Go durations (500ms, 17s, 1m).
`

const manOutro = `.SH SIGNALS
.TP
.B SIGTERM, SIGINT
/healthz answers 503 at once; after \-\-shutdown\-delay the router stops
accepting, finishes the requests in flight and exits within
\-\-shutdown\-timeout, cutting what is still open at that deadline.
.TP
.B SIGHUP
reload the flags and the \-\-config file and the certificates; reopen
\-\-access\-log.
.TP
.B SIGUSR2
binary upgrade: re-execute the binary, hand every socket over, drain the old
process.
.SH EXIT STATUS
.TP
.B 0
a clean shutdown, \-\-help, \-\-version, a good check.
.TP
.B 1
a runtime failure, e.g. a listener that cannot bind.
.TP
.B 2
bad flags, a bad config file, or a certificate, key or secret that does not
load; every problem is printed on a line of its own.
.SH FILES
.TP
.I /etc/fastrouter/fastrouter.yaml
the configuration file of the packaged service (configs/fastrouter.service).
.SH SEE ALSO
.BR uwsgi (1),
.BR nginx (8).
The documentation: docs/README.md in the source tree,
https://github.com/fastrouter/fastrouter/tree/main/docs.
`

// writeMan writes the page.
func writeMan(w io.Writer) {
	fmt.Fprintf(w, ".TH FASTROUTER 1 \"\" \"fastrouter %s\" \"User Commands\"\n", versionString())
	io.WriteString(w, manIntro)
	io.WriteString(w, ".SH COMMANDS\n")
	for _, c := range subcommands() {
		fmt.Fprintf(w, ".TP\n.B fastrouter %s\n%s\n", roff(c.name+" "+c.args), roff(c.what+"."))
	}
	io.WriteString(w, ".SH OPTIONS\n")
	fs := newFlagSet(&options{})
	bySection := map[string][]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) { bySection[fs.group[f.Name]] = append(bySection[fs.group[f.Name]], f) })
	for _, s := range fs.sections {
		fmt.Fprintf(w, ".SS %s\n", roff(s))
		for _, f := range bySection[s] {
			writeManFlag(w, f)
		}
	}
	io.WriteString(w, manOutro)
}

// writeManFlag writes one flag as a tagged paragraph, with the argument
// placeholder and default --help shows.
func writeManFlag(w io.Writer, f *flag.Flag) {
	arg, usage := flag.UnquoteUsage(f)
	tag := `\fB\-\-` + roff(f.Name) + `\fR`
	if !isBool(f) && arg != "" {
		tag += ` \fI` + roff(arg) + `\fR`
	}
	if d := f.DefValue; d != "" && d != "false" && d != "[]" && !strings.Contains(usage, "default") {
		usage += " (default " + d + ")"
	}
	fmt.Fprintf(w, ".TP\n%s\n%s\n", tag, roff(usage))
}

// roff escapes text for a roff line: backslashes and dashes, and a line
// that would start with a control character.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
