package stats

import (
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// uwsgiDocument is what uWSGI 2.0.21-debian's fastrouter wrote on its stats
// socket (--fastrouter-stats) with one static and one subscribed node,
// captured on loopback. Tests compare shapes against it.
const uwsgiDocument = `{
	"version":"2.0.21-debian",
	"pid":32173,
	"uid":0,
	"gid":0,
	"cwd":"/tmp/uwstats",
	"active_sessions":0,
	"fastrouter":[
"127.0.0.1:18301",
"127.0.0.1:18302"
	],
	"static_nodes":[
		{
			"name":"127.0.0.1:18399",
			"hits":0,
			"grace":0
		}
	],
	"subscriptions":[
		{
			"key":"example.com",
			"hash":30778,
			"hits":2,
			"sni_enabled":0,
			"nodes":[
				{
					"name":"127.0.0.1:18304",
					"modifier1":0,
					"modifier2":0,
					"last_check":1795230604,
					"pid":0,
					"uid":0,
					"gid":0,
					"requests":2,
					"last_requests":2,
					"tx":94,
					"rx":310,
					"cores":1,
					"load":0,
					"weight":1,
					"wrr":0,
					"ref":0,
					"failcnt":0,
					"death_mark":0
				}
			]
		}
	],
	"cheap":0
}`

func testTable(t *testing.T) *balancer.Table {
	t.Helper()
	tb, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ key, addr string }{
		{"example.com", "127.0.0.1:18304"},
		{"example.com", "127.0.0.1:18305"},
		{"other.test", "/run/other.sock"},
		{`<b>"hostile"</b>`, "/tmp/<script>"},
	} {
		if _, err := tb.Announce(&balancer.Announce{Key: []byte(n.key), Address: []byte(n.addr), Weight: 2, Cores: 4, Modifier1: 5}); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

// shape maps every JSON path (objects by key, arrays as []) to its JSON
// type, the part of a document tooling depends on.
func shape(v any, path string, out map[string]string) {
	switch x := v.(type) {
	case map[string]any:
		out[path] = "object"
		for k, e := range x {
			shape(e, path+"."+k, out)
		}
	case []any:
		out[path] = "array"
		for _, e := range x {
			shape(e, path+"[]", out)
		}
	case string:
		out[path] = "string"
	case float64:
		out[path] = "number"
	default:
		out[path] = "other"
	}
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("document is not JSON: %v\n%s", err, b)
	}
	return doc
}

func TestDocumentHasUWSGIsShape(t *testing.T) {
	tb := testTable(t)
	n := tb.Pool("example.com").Node("127.0.0.1:18304")
	n.AddTraffic(310, 94)
	s, err := New(Config{Table: tb, Sockets: []string{"127.0.0.1:8080", "127.0.0.1:2626"}, Version: "fastrouter test"})
	if err != nil {
		t.Fatal(err)
	}
	b := s.Document()
	if !strings.HasPrefix(string(b), "{\n\t\"version\": ") || !strings.HasSuffix(string(b), "\n}\n") {
		t.Errorf("not tab-indented like uWSGI's:\n%s", b)
	}
	want := map[string]string{}
	shape(decode(t, []byte(uwsgiDocument)), "", want)
	got := map[string]string{}
	shape(decode(t, b), "", got)
	for path, typ := range want {
		path = strings.Replace(path, ".fastrouter", ".http", 1) // our router's short name
		if strings.HasPrefix(path, ".static_nodes") {
			continue // fastrouter's static nodes live in keyed pools
		}
		if got[path] != typ {
			t.Errorf("%s: %q; uWSGI has %q", path, got[path], typ)
		}
	}

	var doc struct {
		Version        string   `json:"version"`
		ActiveSessions int      `json:"active_sessions"`
		HTTP           []string `json:"http"`
		Subscriptions  []struct {
			Key   string `json:"key"`
			Hash  int    `json:"hash"`
			Hits  int    `json:"hits"`
			Algo  string `json:"algo"`
			Nodes []struct {
				Name      string `json:"name"`
				Modifier1 int    `json:"modifier1"`
				Tx, Rx    int
				Cores     int    `json:"cores"`
				Weight    int    `json:"weight"`
				DeathMark int    `json:"death_mark"`
				State     string `json:"state"`
				Proto     string `json:"proto"`
			} `json:"nodes"`
		} `json:"subscriptions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != "fastrouter test" || !slices.Equal(doc.HTTP, []string{"127.0.0.1:8080", "127.0.0.1:2626"}) {
		t.Errorf("header: %+v", doc)
	}
	var keys []string
	for _, s := range doc.Subscriptions {
		keys = append(keys, s.Key)
		if s.Key == "example.com" {
			if s.Hash != 30778 { // uWSGI's, from the capture above
				t.Errorf("hash(example.com) = %d; want uWSGI's 30778", s.Hash)
			}
			if len(s.Nodes) != 2 || s.Nodes[0].Tx != 94 || s.Nodes[0].Rx != 310 || s.Nodes[0].Modifier1 != 5 ||
				s.Nodes[0].Cores != 4 || s.Nodes[0].Weight != 2 || s.Nodes[0].State != "active" || s.Nodes[0].Proto != "uwsgi" || s.Algo != "wrr" {
				t.Errorf("example.com: %+v", s)
			}
		}
	}
	// Bucket order, as uWSGI walks its table.
	for i := 1; i < len(doc.Subscriptions); i++ {
		if doc.Subscriptions[i-1].Hash > doc.Subscriptions[i].Hash {
			t.Errorf("pools not in hash order: %v", keys)
		}
	}
	if !slices.Contains(keys, `<b>"hostile"</b>`) {
		t.Errorf("hostile key lost: %v", keys)
	}
}

func TestDeathMarkFollowsTheDrain(t *testing.T) {
	tb := testTable(t)
	if _, err := tb.Drain("example.com", "127.0.0.1:18305", time.Minute, false); err != nil {
		t.Fatal(err)
	}
	s, _ := New(Config{Table: tb})
	var doc struct {
		Subscriptions []struct {
			Key   string `json:"key"`
			Nodes []struct {
				Name      string `json:"name"`
				DeathMark int    `json:"death_mark"`
				State     string `json:"state"`
			} `json:"nodes"`
		} `json:"subscriptions"`
	}
	if err := json.Unmarshal(s.Document(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range doc.Subscriptions {
		for _, n := range p.Nodes {
			want := 0
			if n.Name == "127.0.0.1:18305" {
				want = 1
			}
			if n.DeathMark != want {
				t.Errorf("%s %s (%s): death_mark %d; want %d", p.Key, n.Name, n.State, n.DeathMark, want)
			}
		}
	}
}

func TestUWSGIHash(t *testing.T) {
	// Values from uWSGI 2.0.21 (example.com) and the djb33x definition.
	for key, want := range map[string]uint32{"example.com": 30778, "": 5381} {
		if got := uwsgiHash(key); got != want {
			t.Errorf("uwsgiHash(%q) = %d; want %d", key, got, want)
		}
	}
}

func readAll(t *testing.T, network, addr string) []byte {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c) // the server closes after one document
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeTCPAndUnix(t *testing.T) {
	s, err := New(Config{Table: testTable(t)})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "stats.sock")
	unix, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- s.Serve(tcp) }()
	go func() { done <- s.Serve(unix) }()
	for range 3 {
		decode(t, readAll(t, "tcp", tcp.Addr().String()))
		decode(t, readAll(t, "unix", path))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("Serve after Close: %v", err)
		}
	}
	if _, err := net.Dial("tcp", tcp.Addr().String()); err == nil {
		t.Fatal("stats listener still accepts after Close")
	}
}

func TestNodeCollector(t *testing.T) {
	tb := testTable(t)
	c := NewNodeCollector(tb)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	// 4 nodes × 8 series.
	if n := testutil.CollectAndCount(c); n != 32 {
		t.Fatalf("%d series; want 32", n)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	tb.Pool("other.test").Node("/run/other.sock").AddTraffic(100, 7)
	want := `
# HELP fastrouter_node_sent_bytes_total Bytes sent to the node: uwsgi packets and request bodies.
# TYPE fastrouter_node_sent_bytes_total counter
fastrouter_node_sent_bytes_total{node="/run/other.sock",pool="other.test"} 100
fastrouter_node_sent_bytes_total{node="/tmp/<script>",pool="<b>\"hostile\"</b>"} 0
fastrouter_node_sent_bytes_total{node="127.0.0.1:18304",pool="example.com"} 0
fastrouter_node_sent_bytes_total{node="127.0.0.1:18305",pool="example.com"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fastrouter_node_sent_bytes_total"); err != nil {
		t.Fatal(err)
	}
	// A removed node's series are gone at the next scrape.
	tb.RemoveNode("other.test", "/run/other.sock")
	if n := testutil.CollectAndCount(c); n != 24 {
		t.Fatalf("%d series after removing a node; want 24", n)
	}
}

// emfileOnce fails its first Accept as a process out of descriptors does.
type emfileOnce struct {
	net.Listener
	failed atomic.Bool
}

func (l *emfileOnce) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// Running out of file descriptors pauses the stats server; it does not
// stop it.
func TestServeRidesOutEMFILE(t *testing.T) {
	s, err := New(Config{Table: testTable(t)})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(&emfileOnce{Listener: tcp}) }()
	decode(t, readAll(t, "tcp", tcp.Addr().String()))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
}
