package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// A minimal Chrome DevTools Protocol client: enough to drive a real
// headless Chromium (Debian's chromium package) over its remote-debugging
// websocket, watch the console, run a script in the page and take
// screenshots.

// cdpMessage is a CDP response (ID set) or event (Method set).
type cdpMessage struct {
	ID     int             `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// browser is one headless Chromium with a websocket to its first page.
// The reader goroutine owns ws reads; mu guards the rest.
type browser struct {
	ws *websocket.Conn

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan cdpMessage
	events  []cdpMessage
	changed chan struct{} // buffered 1: an event arrived
	done    chan struct{} // closed when the reader returns
}

// startBrowser starts Chromium headless on a free debugging port, with
// extra command-line switches, and connects to its page. Everything is
// torn down at the end of the test.
func startBrowser(t *testing.T, extra ...string) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not installed (scripts/test.sh installs Debian's chromium)")
	}
	dir := t.TempDir()
	args := append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=*",
		"--user-data-dir=" + dir, "--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--hide-scrollbars", "--mute-audio"}, extra...)
	startProc(t, bin, append(args, "about:blank")...)
	// Chromium writes the port it bound to DevToolsActivePort.
	var port string
	eventually(t, 60*time.Second, "chromium's DevToolsActivePort", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "DevToolsActivePort"))
		if err != nil {
			return false
		}
		port, _, _ = strings.Cut(string(b), "\n")
		return port != ""
	})
	var wsURL string
	eventually(t, 30*time.Second, "chromium's page target", func() bool {
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://127.0.0.1:" + port + "/json/list")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var targets []struct {
			Type string `json:"type"`
			WS   string `json:"webSocketDebuggerUrl"`
		}
		if json.NewDecoder(resp.Body).Decode(&targets) != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WS != "" {
				wsURL = tg.WS
				return true
			}
		}
		return false
	})
	cfg, err := websocket.NewConfig(wsURL, "http://127.0.0.1/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dialer = &net.Dialer{Timeout: 10 * time.Second}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("devtools websocket: %v", err)
	}
	b := &browser{ws: ws, waiting: map[int]chan cdpMessage{}, changed: make(chan struct{}, 1), done: make(chan struct{})}
	go b.read()
	t.Cleanup(func() {
		ws.Close()
		<-b.done
	})
	for _, domain := range []string{"Page", "Runtime", "Log"} {
		b.call(t, domain+".enable", nil)
	}
	return b
}

func (b *browser) read() {
	defer close(b.done)
	for {
		var m cdpMessage
		if err := websocket.JSON.Receive(b.ws, &m); err != nil {
			return
		}
		b.mu.Lock()
		if m.ID != 0 {
			if ch := b.waiting[m.ID]; ch != nil {
				ch <- m
				delete(b.waiting, m.ID)
			}
		} else {
			b.events = append(b.events, m)
			select {
			case b.changed <- struct{}{}:
			default:
			}
		}
		b.mu.Unlock()
	}
}

// call sends a command and returns its result; a CDP error fails the test.
func (b *browser) call(t *testing.T, method string, params any) json.RawMessage {
	t.Helper()
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpMessage, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	if params == nil {
		params = struct{}{}
	}
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		t.Fatalf("CDP %s: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			t.Fatalf("CDP %s: %d %s", method, m.Error.Code, m.Error.Message)
		}
		return m.Result
	case <-b.done:
		t.Fatalf("CDP %s: connection closed", method)
	case <-time.After(60 * time.Second):
		t.Fatalf("CDP %s: no answer within 60s", method)
	}
	return nil
}

// mark returns the number of events seen so far, for waitEvent.
func (b *browser) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.events)
}

// waitEvents waits until n events named method arrived after mark.
func (b *browser) waitEvents(t *testing.T, method string, since, n int, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		b.mu.Lock()
		got := 0
		for _, e := range b.events[since:] {
			if e.Method == method {
				got++
			}
		}
		b.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-b.changed:
		case <-deadline:
			t.Fatalf("%d %s events within %s; want %d", got, method, d, n)
		}
	}
}

// navigate loads url and waits for its load event.
func (b *browser) navigate(t *testing.T, url string) {
	t.Helper()
	since := b.mark()
	var res struct {
		ErrorText string `json:"errorText"`
	}
	if err := json.Unmarshal(b.call(t, "Page.navigate", map[string]any{"url": url}), &res); err != nil {
		t.Fatal(err)
	}
	if res.ErrorText != "" {
		t.Fatalf("navigate %s: %s", url, res.ErrorText)
	}
	b.waitEvents(t, "Page.loadEventFired", since, 1, 60*time.Second)
}

// problems lists what the page reported since mark: uncaught exceptions,
// console errors and warnings, browser log errors (failed loads, CSP
// violations) and JavaScript dialogs.
func (b *browser) problems(since int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.events[since:] {
		switch e.Method {
		case "Runtime.exceptionThrown":
			out = append(out, "exception: "+string(e.Params))
		case "Runtime.consoleAPICalled":
			var p struct {
				Type string            `json:"type"`
				Args []json.RawMessage `json:"args"`
			}
			_ = json.Unmarshal(e.Params, &p)
			if p.Type == "error" || p.Type == "warning" || p.Type == "assert" {
				out = append(out, fmt.Sprintf("console.%s: %s", p.Type, e.Params))
			}
		case "Log.entryAdded":
			var p struct {
				Entry struct {
					Level, Source, Text, URL string
				} `json:"entry"`
			}
			_ = json.Unmarshal(e.Params, &p)
			if p.Entry.Level == "error" || p.Entry.Level == "warning" {
				out = append(out, fmt.Sprintf("log %s (%s): %s %s", p.Entry.Level, p.Entry.Source, p.Entry.Text, p.Entry.URL))
			}
		case "Page.javascriptDialogOpening":
			out = append(out, "dialog: "+string(e.Params))
		}
	}
	return out
}

// eval runs expression in the page and decodes its JSON-able value into v.
func (b *browser) eval(t *testing.T, expression string, v any) {
	t.Helper()
	b.evaluate(t, map[string]any{"expression": expression, "returnByValue": true}, v)
}

// evalPromise runs expression, a promise, and decodes what it resolves to
// into v; a rejection fails the test.
func (b *browser) evalPromise(t *testing.T, expression string, v any) {
	t.Helper()
	b.evaluate(t, map[string]any{"expression": expression, "returnByValue": true, "awaitPromise": true}, v)
}

func (b *browser) evaluate(t *testing.T, params map[string]any, v any) {
	t.Helper()
	expression := params["expression"]
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails json.RawMessage `json:"exceptionDetails"`
	}
	raw := b.call(t, "Runtime.evaluate", params)
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if res.ExceptionDetails != nil {
		t.Fatalf("evaluate %q: %s", expression, res.ExceptionDetails)
	}
	if err := json.Unmarshal(res.Result.Value, v); err != nil {
		t.Fatalf("evaluate %q: %v (%s)", expression, err, res.Result.Value)
	}
}

// screenshot sets the viewport (mobile: a phone's, with its viewport meta
// honoured), waits for layout and returns a PNG of the whole page.
func (b *browser) screenshot(t *testing.T, width, height int, scale float64, mobile bool) []byte {
	t.Helper()
	b.call(t, "Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile,
	})
	var m struct {
		Content struct {
			Width, Height float64
		} `json:"cssContentSize"`
	}
	if err := json.Unmarshal(b.call(t, "Page.getLayoutMetrics", nil), &m); err != nil {
		t.Fatal(err)
	}
	h := max(float64(height), m.Content.Height)
	var shot struct {
		Data []byte `json:"data"` // base64 in JSON: decoded by encoding/json
	}
	raw := b.call(t, "Page.captureScreenshot", map[string]any{
		"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": width, "height": h, "scale": 1},
	})
	if err := json.Unmarshal(raw, &shot); err != nil {
		t.Fatal(err)
	}
	return shot.Data
}
