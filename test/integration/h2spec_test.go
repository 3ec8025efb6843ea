package integration

import (
	"encoding/xml"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"
)

// h2specKnown are the h2spec v2.2.1 cases the router fails, by listener
// ("tls", "h2c") and case ID ("http2/6.5.3/1" is h2spec's "6.5.3. Settings
// Synchronization", case 1), each with why. A listed case that passes fails
// the test too: the list is kept exact.
var h2specKnown = map[string]map[string]string{
	"tls": {},
	"h2c": {
		"http2/3.5/2": "the clear-text listener serves HTTP/1.1 and h2c: bytes that are not the h2 preface go to the HTTP/1.1 front (serve.go: sniffPreface), which answers 400 instead of closing",
	},
}

// TestH2Spec runs h2spec (scripts/test.sh installs v2.2.1) against the
// router over TLS (ALPN h2) and over h2c with prior knowledge, each with a
// real node behind it, and compares the failed cases with h2specKnown.
func TestH2Spec(t *testing.T) {
	requireUWSGI(t)
	bin, err := exec.LookPath("h2spec")
	if err != nil {
		t.Fatal("h2spec not installed (scripts/test.sh installs it: go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible)")
	}
	t.Parallel()
	// h2spec's :authority is its --host and --port: the pool is the host.
	_, r := startTLSPool(t, "127.0.0.1", nodeOpts{id: "s", processes: 2, threads: 4})
	_, httpPort, _ := net.SplitHostPort(r.http)
	for _, lc := range []struct {
		name string
		port string
		args []string
	}{
		{"tls", r.port, []string{"--tls", "--insecure"}},
		{"h2c", httpPort, nil},
	} {
		t.Run(lc.name, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "h2spec.xml")
			args := append([]string{"--host", "127.0.0.1", "--port", lc.port, "--timeout", "2", "--junit-report", report}, lc.args...)
			out, err := runTool(t, 5*time.Minute, "", bin, args...)
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatalf("h2spec: %v\n%s", err, out)
			}
			failed, passed := h2specResults(t, report)
			if passed == 0 {
				t.Fatalf("h2spec passed no case:\n%s", tail([]byte(out), 4000))
			}
			known := h2specKnown[lc.name]
			for _, id := range failed {
				if _, ok := known[id]; !ok {
					t.Errorf("h2spec %s failed (not a known failure)", id)
				}
			}
			for id, why := range known {
				if !slices.Contains(failed, id) {
					t.Errorf("h2spec %s passed, but is listed as a known failure (%s): drop it from h2specKnown", id, why)
				}
			}
			if t.Failed() {
				t.Logf("h2spec output:\n%s", tail([]byte(out), 20000))
			}
			t.Logf("h2spec %s: %d passed, %d failed (%d known)", lc.name, passed, len(failed), len(known))
		})
	}
}

// h2specReport is the part of h2spec's JUnit report the test reads.
type h2specReport struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Package string    `xml:"package,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// h2specResults reads h2spec's JUnit report: the IDs of the failed cases
// (package/index within its section, from 1), sorted, and how many passed.
func h2specResults(t *testing.T, path string) (failed []string, passed int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep h2specReport
	if err := xml.Unmarshal(b, &rep); err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	for _, s := range rep.Suites {
		for i, c := range s.Cases {
			switch {
			case c.Failure != nil || c.Error != nil:
				failed = append(failed, s.Package+"/"+strconv.Itoa(i+1))
			case c.Skipped == nil:
				passed++
			}
		}
	}
	sort.Strings(failed)
	return failed, passed
}
