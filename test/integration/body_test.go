package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestChunkedUploadsAndExpectContinue: chunked request bodies reach a real
// uWSGI app whole with CONTENT_LENGTH — 100 kB (in memory) and 10 MB
// (spilled to a temporary file) — and past --max-body-bytes they are 413;
// curl's Expect: 100-continue gets 100 Continue for a body the router takes
// and a final 413 for one it would refuse, before sending it.
func TestChunkedUploadsAndExpectContinue(t *testing.T) {
	requireUWSGI(t)
	r := startRouter(t, "--max-body-bytes", "12000000")
	startNode(t, r, "up.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "up.test", 1)
	dir := t.TempDir()

	for _, size := range []int{100 * 1024, 10_000_000} {
		payload := bytes.Repeat([]byte("fastrouter-chunk"), size/16)
		file := filepath.Join(dir, fmt.Sprintf("body-%d", size))
		if err := os.WriteFile(file, payload, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(payload)
		want := fmt.Sprintf("%d %s", len(payload), hex.EncodeToString(sum[:]))
		body, _, code := curlGet(t, "-H", "Host: up.test", "-H", "Transfer-Encoding: chunked",
			"--data-binary", "@"+file, "http://"+r.http+"/upload")
		if code != 200 || body != want {
			t.Errorf("chunked upload of %d bytes: %d %q; want 200 %q", size, code, body, want)
		}
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 13_000_000), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, code := curlGet(t, "-H", "Host: up.test", "-H", "Transfer-Encoding: chunked",
		"--data-binary", "@"+big, "http://"+r.http+"/upload"); code != 413 {
		t.Errorf("chunked upload over --max-body-bytes: %d; want 413", code)
	}

	// Expect: 100-continue, with curl's own handling (-v shows the interim
	// response). --expect100-timeout is long, so a missing 100 would show
	// as a slow request rather than pass silently.
	small := filepath.Join(dir, fmt.Sprintf("body-%d", 100*1024))
	start := time.Now()
	out, err := runTool(t, 60*time.Second, "", "curl", "-sS", "-v", "--expect100-timeout", "20",
		"-H", "Host: up.test", "-H", "Expect: 100-continue", "--data-binary", "@"+small,
		"-w", "\nCODE %{http_code}", "http://"+r.http+"/upload")
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	if !strings.Contains(out, "< HTTP/1.1 100 Continue") || !strings.Contains(out, "CODE 200") || !strings.Contains(out, "102400 ") {
		t.Errorf("Expect: 100-continue upload: want 100 Continue then 200 with the body; got\n%s", out)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("Expect: 100-continue upload took %s", el)
	}
	out, err = runTool(t, 60*time.Second, "", "curl", "-sS", "-v", "--expect100-timeout", "20",
		"-H", "Host: up.test", "-H", "Expect: 100-continue", "--data-binary", "@"+big,
		"-w", "\nCODE %{http_code}", "http://"+r.http+"/upload")
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	if strings.Contains(out, "100 Continue") || !strings.Contains(out, "CODE 413") {
		t.Errorf("Expect: 100-continue over --max-body-bytes: want a final 413 without 100 Continue; got\n%s", out)
	}
}
