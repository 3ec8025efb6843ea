package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// The manual page names every flag of the router, each subcommand, and
// renders without a warning from groff (the page is made from the flag set,
// so this fails when writeMan stops walking it or emits bad roff).
func TestManPage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"man"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	page := out.String()
	if !strings.HasPrefix(page, ".TH FASTROUTER 1 ") {
		t.Fatalf("page starts %q", page[:min(40, len(page))])
	}
	for _, name := range flagNames(newFlagSet(&options{})) {
		if !strings.Contains(page, `\fB`+roff(name)+`\fR`) {
			t.Errorf("flag %s missing from the page", name)
		}
	}
	for _, c := range subcommands() {
		if !strings.Contains(page, ".B fastrouter "+roff(c.name)) {
			t.Errorf("command %s missing from the page", c.name)
		}
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Fatal("groff is needed to check the manual page (Debian: groff-base, which man-db depends on)")
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	if msg, err := cmd.CombinedOutput(); err != nil || len(msg) > 0 {
		t.Fatalf("groff: %v: %s", err, msg)
	}
	if code := run([]string{"man", "extra"}, &out, &errOut); code != 2 {
		t.Errorf("man with an argument: exit %d, want 2", code)
	}
}
