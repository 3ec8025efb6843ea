package balancer

import "testing"

func TestMountPoints(t *testing.T) {
	tb, _ := newTable(t, Config{FallbackKey: "fallback.test"})
	if tb.HasMounts() {
		t.Fatal("empty table has mounts")
	}
	for i, k := range []string{"example.com", "example.com/api", "example.com/api/v2", "Example.com/static/", "*.wild.test/x", "fallback.test", "other.test:8080/app"} {
		announce(t, tb, k, addr(i), 1)
	}
	if !tb.HasMounts() {
		t.Fatal("mounts not indexed")
	}
	for _, tc := range []struct{ host, path, want string }{
		{"example.com", "/", "example.com"},
		{"example.com", "/api", "example.com/api"},
		{"example.com", "/api/", "example.com/api"},
		{"example.com", "/api/users", "example.com/api"},
		{"example.com", "/apix", "example.com"},
		{"example.com", "/api/v2", "example.com/api/v2"},
		{"example.com", "/api/v2/x", "example.com/api/v2"},
		{"example.com", "/api/v20", "example.com/api"},
		{"EXAMPLE.com:8443", "/api/x", "example.com/api"},
		{"example.com", "/static/a.css", "Example.com/static/"},
		{"example.com", "/static", "example.com"}, // "/static/" needs the slash
		{"example.com", "/API", "example.com"},    // paths are case-sensitive
		{"other.test:8080", "/app/1", "other.test:8080/app"},
		{"other.test", "/app/1", "fallback.test"}, // the mount names a port
		{"a.wild.test", "/x", "fallback.test"},    // mounts are not wildcards
		{"nowhere.test", "/api", "fallback.test"},
	} {
		if got := keyOf(tb.LookupPath([]byte(tc.host), []byte(tc.path))); got != tc.want {
			t.Errorf("LookupPath(%q, %q) = %s, want %s", tc.host, tc.path, got, tc.want)
		}
	}
	// An emptied mount keeps its requests (503), it does not leak them to
	// the host's app; deleted, it stops matching.
	tb.RemoveNode("example.com/api", addr(1))
	if got := keyOf(tb.LookupPath([]byte("example.com"), []byte("/api/x"))); got != "example.com/api" {
		t.Errorf("emptied mount: %s", got)
	}
	tb.DeletePool("example.com/api")
	if got := keyOf(tb.LookupPath([]byte("example.com"), []byte("/api/x"))); got != "example.com" {
		t.Errorf("deleted mount: %s", got)
	}
	for _, k := range []string{"example.com/api/v2", "Example.com/static/", "*.wild.test/x", "other.test:8080/app"} {
		tb.DeletePool(k)
	}
	if tb.HasMounts() {
		t.Fatal("mount index kept after the last mount went")
	}
}

func TestLookupPathAllocs(t *testing.T) {
	tb, _ := newTable(t, Config{})
	announce(t, tb, "example.com", addr(0), 1)
	announce(t, tb, "example.com/api", addr(1), 1)
	host, path := []byte("Example.COM:80"), []byte("/api/users/42")
	if a := testing.AllocsPerRun(1000, func() { tb.LookupPath(host, path) }); a != 0 {
		t.Fatalf("LookupPath allocates %v", a)
	}
}

func BenchmarkLookupPath(b *testing.B) {
	tb, _ := newTable(b, Config{})
	for i := range 100 {
		announce(b, tb, "host"+string(rune('a'+i%26))+".test", addr(i), 1)
	}
	announce(b, tb, "example.com", addr(0), 1)
	announce(b, tb, "example.com/api", addr(1), 1)
	announce(b, tb, "example.com/api/v2", addr(2), 1)
	host, path := []byte("example.com"), []byte("/api/users/42")
	b.ReportAllocs()
	for b.Loop() {
		tb.LookupPath(host, path)
	}
}
