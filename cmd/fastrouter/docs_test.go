package main

import (
	"bytes"
	"flag"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// The flag reference in docs/configuration.md is what operators read; these
// tests keep it and the binary in step: every flag --help lists is in a
// table, no table names a flag the binary lacks, documented defaults match
// the flag set's, and every key of the pools: section is documented.

const configDoc = "../../docs/configuration.md"

// docRow is one table row whose first cell is a `--flag ...` or a `key`.
type docRow struct {
	section string // the nearest heading above the row
	name    string // flag name without "--", or a YAML key
	def     string // the default cell
}

var (
	flagCell = regexp.MustCompile("^`--([a-z0-9-]+)")
	keyCell  = regexp.MustCompile("^`([a-z0-9-]+)`$")
	helpLine = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`)
)

// readDocRows returns the rows of every markdown table in the file.
func readDocRows(t *testing.T) []docRow {
	t.Helper()
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	var rows []docRow
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			section = strings.TrimSpace(strings.TrimLeft(line, "#"))
			continue
		}
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		// An escaped \| (as in N\|auto) is not a cell boundary.
		cells := strings.Split(strings.ReplaceAll(strings.Trim(line, "|"), `\|`, "/"), "|")
		if len(cells) < 3 {
			continue
		}
		first := strings.TrimSpace(cells[0])
		r := docRow{section: section, def: strings.TrimSpace(cells[1])}
		if m := flagCell.FindStringSubmatch(first); m != nil {
			r.name = m[1]
		} else if m := keyCell.FindStringSubmatch(first); m != nil {
			r.name = m[1]
		} else {
			continue
		}
		rows = append(rows, r)
	}
	return rows
}

// documented returns the names of the rows whose section satisfies in.
func documented(t *testing.T, rows []docRow, in func(section string) bool) map[string]docRow {
	t.Helper()
	out := map[string]docRow{}
	for _, r := range rows {
		if !in(r.section) {
			continue
		}
		if _, dup := out[r.name]; dup {
			t.Errorf("%s: %q documented twice", configDoc, r.name)
		}
		out[r.name] = r
	}
	return out
}

func isSubscribeSection(s string) bool { return strings.Contains(s, "fastrouter subscribe") }
func isPoolsSection(s string) bool     { return strings.Contains(s, "pools:") }
func isHealthSection(s string) bool    { return strings.Contains(s, "health-check:") }
func isRouterSection(s string) bool {
	return !isSubscribeSection(s) && !isPoolsSection(s) && !isHealthSection(s)
}

// helpFlags runs the binary's --help and returns the flags it lists.
func helpFlags(t *testing.T, args ...string) []string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("run %q = %d; stderr %s", args, code, errb.String())
	}
	var names []string
	for _, m := range helpLine.FindAllStringSubmatch(out.String(), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("run %q printed no flags:\n%s", args, out.String())
	}
	sort.Strings(names)
	return names
}

// compareNames reports flags missing from the docs and documented flags the
// binary does not have.
func compareNames(t *testing.T, what string, have []string, docs map[string]docRow) {
	t.Helper()
	for _, n := range have {
		if _, ok := docs[n]; !ok {
			t.Errorf("%s: --%s is in --help but not in %s", what, n, configDoc)
		}
	}
	for n, r := range docs {
		if !slices.Contains(have, n) {
			t.Errorf("%s: %s (section %q) documents --%s, which --help does not list", what, configDoc, r.section, n)
		}
	}
}

func TestDocsFlagReference(t *testing.T) {
	docs := documented(t, readDocRows(t), isRouterSection)
	help := helpFlags(t, "--help")
	compareNames(t, "fastrouter", help, docs)

	// --help and the flag set agree, so the set's defaults are what --help
	// shows; each documented default must carry every part of it.
	var o options
	fs := newFlagSet(&o)
	var set []string
	fs.VisitAll(func(f *flag.Flag) {
		set = append(set, f.Name)
		r, ok := docs[f.Name]
		if !ok {
			return
		}
		for _, part := range strings.Split(f.DefValue, ",") {
			if part == "" || part == "false" {
				continue
			}
			if !showsDefault(r.def, part) {
				t.Errorf("--%s: default cell %q does not show the default `%s`", f.Name, r.def, part)
			}
		}
	})
	sort.Strings(set)
	if !slices.Equal(set, help) {
		t.Errorf("--help lists %q; the flag set has %q", help, set)
	}
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// showsDefault reports whether a default cell shows def in a code span,
// literally or as the same duration (60s for 1m0s).
func showsDefault(cell, def string) bool {
	want, isDur := time.ParseDuration(def)
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		if m[1] == def {
			return true
		}
		if d, err := time.ParseDuration(m[1]); isDur == nil && err == nil && d == want {
			return true
		}
	}
	return false
}

func TestDocsSubscribeFlags(t *testing.T) {
	docs := documented(t, readDocRows(t), isSubscribeSection)
	compareNames(t, "fastrouter subscribe", helpFlags(t, "subscribe", "--help"), docs)
}

// TestDocsPoolKeys checks the pools: and health-check: tables against the
// YAML fields the decoder accepts (decodePools is strict, so an
// undocumented field would be a setting nobody can find).
func TestDocsPoolKeys(t *testing.T) {
	rows := readDocRows(t)
	for _, c := range []struct {
		name string
		typ  reflect.Type
		in   func(string) bool
	}{
		{"pools:", reflect.TypeFor[poolConfig](), isPoolsSection},
		{"health-check:", reflect.TypeFor[healthConfig](), isHealthSection},
	} {
		docs := documented(t, rows, c.in)
		var keys []string
		for i := range c.typ.NumField() {
			tag, _, _ := strings.Cut(c.typ.Field(i).Tag.Get("yaml"), ",")
			if tag != "" {
				keys = append(keys, tag)
			}
		}
		sort.Strings(keys)
		var got []string
		for k := range docs {
			got = append(got, k)
		}
		sort.Strings(got)
		if !slices.Equal(got, keys) {
			t.Errorf("%s keys documented %q; the decoder accepts %q", c.name, got, keys)
		}
	}
}
