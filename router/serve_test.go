package router

import (
	"io"
	"net"
	"testing"
	"time"
)

// sniffPreface tells h2c from HTTP/1.x without waiting for bytes a short
// HTTP/1.0 request never sends, and replays what it read.
func TestSniffPreface(t *testing.T) {
	for _, c := range []struct {
		name   string
		chunks []string
		h2     bool
	}{
		{"h2 preface in one write", []string{h2Preface + "rest"}, true},
		{"h2 preface byte by byte", splitBytes(h2Preface), true},
		{"short HTTP/1.0 request", []string{"GET / HTTP/1.0\r\n\r\n"}, false},
		{"PRI prefix then HTTP/1", []string{"PRI * HTTP/1.1\r\n"}, false},
		{"one byte", []string{"G"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				for _, ch := range c.chunks {
					b.Write([]byte(ch))
				}
				b.Close()
			}()
			_ = a.SetDeadline(time.Now().Add(2 * time.Second))
			pc, isH2, err := sniffPreface(a)
			if err != nil {
				t.Fatal(err)
			}
			if isH2 != c.h2 {
				t.Fatalf("h2 = %v; want %v", isH2, c.h2)
			}
			got, _ := io.ReadAll(pc)
			want := ""
			for _, ch := range c.chunks {
				want += ch
			}
			if string(got) != want {
				t.Fatalf("replayed %q; want %q", got, want)
			}
		})
	}
	// Nothing at all: an error, not a verdict.
	a, b := net.Pipe()
	b.Close()
	if _, _, err := sniffPreface(a); err == nil {
		t.Fatal("empty connection: no error")
	}
}

func splitBytes(s string) []string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i : i+1]
	}
	return out
}
