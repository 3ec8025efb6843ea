package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// flagSet is the command line's flag set with each flag's help group. A
// flag belongs to the section in force where it is defined (newFlagSet
// opens one with section before its flags), so a flag added in the right
// place of newFlagSet is grouped, parsed, documented and completed
// without a table to keep in step.
type flagSet struct {
	*flag.FlagSet
	sections []string          // in help order
	group    map[string]string // flag name → section
	cur      string
}

func newFlagSetNamed(name string) *flagSet {
	return &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), group: map[string]string{}}
}

// section puts the flags defined from now on, until the next section, in
// the help group name.
func (fs *flagSet) section(name string) {
	fs.close()
	fs.cur = name
	fs.sections = append(fs.sections, name)
}

// close assigns the flags defined since the last section to it.
func (fs *flagSet) close() {
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := fs.group[f.Name]; !ok {
			fs.group[f.Name] = fs.cur
		}
	})
}

// problems collects the usage errors of one parse, so that every one of
// them is reported, one per line, rather than only the first.
type problems []error

func (p *problems) add(err error) {
	if err != nil {
		*p = append(*p, err)
	}
}

func (p *problems) addf(format string, args ...any) { p.add(fmt.Errorf(format, args...)) }

// err joins the problems: nil without any, else an error whose message
// has one problem per line.
func (p problems) err() error { return errors.Join(p...) }

// lines splits an error from parseArgs into its problems, one per line.
func lines(err error) []string {
	var out []string
	for l := range strings.SplitSeq(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// parseFlags sets fs's flags from args the way flag.FlagSet.Parse reads
// them (-name or --name; --name=value or --name value; a boolean flag
// takes no separate value; "--" or the first argument that is not a flag
// ends the flags) but goes on past a bad flag, so that every problem is
// listed, and words each problem for an operator: the flag with its "--",
// what was wrong, what is expected. It returns the arguments left and
// whether help was asked for (-h, --help).
func parseFlags(fs *flagSet, args []string, p *problems) (rest []string, help bool) {
	for len(args) > 0 {
		s := args[0]
		if len(s) < 2 || s[0] != '-' {
			break
		}
		args = args[1:]
		if s == "--" {
			break
		}
		name := strings.TrimPrefix(s[1:], "-")
		if name == "" || name[0] == '-' || name[0] == '=' {
			p.addf("bad flag syntax %q (see %s --help)", s, fs.Name())
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		f := fs.Lookup(name)
		if f == nil {
			if name == "h" || name == "help" {
				help = true
				continue
			}
			p.addf("unknown flag --%s (see %s --help)", name, fs.Name())
			// Its value, if it has one, is not an argument of its own.
			if !hasValue && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
				args = args[1:]
			}
			continue
		}
		if isBool(f) {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if len(args) == 0 {
				p.addf("--%s needs a value: --%s %s", name, name, placeholder(f))
				continue
			}
			value, args = args[0], args[1:]
		}
		if err := setFlag(fs, f, value); err != nil {
			p.add(valueError("--"+name, f, value, err))
		}
	}
	return args, help
}

// setFlag sets f to value. A value f refuses leaves f as it was: the
// standard flag types store their zero value on a parse error, which
// would make a bad "--timeout 5" look like "--timeout 0s" to the checks
// that follow.
func setFlag(fs *flagSet, f *flag.Flag, value string) error {
	old := f.Value.String()
	err := fs.Set(f.Name, value)
	if err != nil {
		_ = f.Value.Set(old)
	}
	return err
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// valueError words a value f refused: subject is how the operator named
// the flag ("--timeout", or "timeout" in a config file). The standard
// flag types only say "parse error"; this says what was expected.
func valueError(subject string, f *flag.Flag, value string, err error) error {
	var typed any
	if g, ok := f.Value.(flag.Getter); ok {
		typed = g.Get()
	}
	rangeErr := strings.Contains(err.Error(), "out of range")
	switch typed.(type) {
	case time.Duration:
		return fmt.Errorf("%s: %q is not a duration (e.g. 5s, 1m)", subject, value)
	case int, int64, uint, uint64:
		if rangeErr {
			return fmt.Errorf("%s: %q is out of range", subject, value)
		}
		return fmt.Errorf("%s: %q is not a whole number", subject, value)
	case bool:
		return fmt.Errorf("%s: %q is not true or false", subject, value)
	case float64:
		return fmt.Errorf("%s: %q is not a number", subject, value)
	}
	return fmt.Errorf("%s %q: %v", subject, value, err)
}

// placeholder is the word that stands for f's value in the help, taken
// from the `QUOTED` word of its usage ("ADDR", "FILE", "D", "N").
func placeholder(f *flag.Flag) string {
	name, _ := flag.UnquoteUsage(f)
	return name
}

// printFlags lists fs's flags by section, each as operators write it
// (--name PLACEHOLDER) with its default once: a usage that speaks of its
// default itself gets none added.
func printFlags(w io.Writer, fs *flagSet) {
	bySection := map[string][]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) { bySection[fs.group[f.Name]] = append(bySection[fs.group[f.Name]], f) })
	sections := fs.sections
	if len(sections) == 0 {
		sections = []string{""}
	}
	for i, s := range sections {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if s != "" {
			fmt.Fprintf(w, "%s:\n", s)
		}
		for _, f := range bySection[s] {
			printFlag(w, f)
		}
	}
}

func printFlag(w io.Writer, f *flag.Flag) {
	arg, usage := flag.UnquoteUsage(f)
	line := "  --" + f.Name
	if !isBool(f) && arg != "" {
		line += " " + arg
	}
	if d := f.DefValue; d != "" && d != "false" && d != "[]" && !strings.Contains(usage, "default") {
		if strings.HasSuffix(usage, ")") {
			usage = usage[:len(usage)-1] + "; default " + d + ")"
		} else {
			usage += " (default " + d + ")"
		}
	}
	fmt.Fprintf(w, "%s\n      %s\n", line, usage)
}

// flagNames lists fs's flags as --name, sorted.
func flagNames(fs *flagSet) []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, "--"+f.Name) })
	sort.Strings(out)
	return out
}
