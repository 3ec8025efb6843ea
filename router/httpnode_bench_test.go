package router

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/prometheus/client_golang/prometheus"
)

// benchHTTPNode is an in-process keep-alive HTTP/1.1 node on TCP: it answers
// every request head (no bodies in this benchmark) with a fixed 200 and a
// 13-byte body.
func benchHTTPNode(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(bytes.TrimSpace(line)) == 0 {
						if _, err := c.Write(resp); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// BenchmarkProxyHTTPNode is BenchmarkProxy against an http:// node: the
// backend connection is reused (keep-alive) instead of dialled per request.
func BenchmarkProxyHTTPNode(b *testing.B) {
	node := benchHTTPNode(b)
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		b.Fatal(err)
	}
	table.AddStatic("bench.test", node, 1)
	rt, err := New(Config{Pools: table, Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	benchGET(b, rt)
}
