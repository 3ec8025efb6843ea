package main

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// serialServer answers HTTP/1.1 keep-alive GETs one at a time, each after
// work, with the body "node=1". It stops when the test ends.
func serialServer(t *testing.T, work time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
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
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					for { // request head
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if line == "\r\n" {
							break
						}
					}
					mu.Lock()
					time.Sleep(work)
					mu.Unlock()
					if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nnode=1")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A server slower than the arrival rate, over one connection, builds a
// queue in the generator itself (the connection is busy). The open loop
// charges each request its wait since its due time, so the last ones show
// the whole queue; timed from their write (as a closed-loop tool does),
// every request would take about one service time.
func TestOpenLoopChargesTheQueue(t *testing.T) {
	addr := serialServer(t, 10*time.Millisecond) // 100 req/s at most
	res, err := openLoop(context.Background(), openLoopConfig{addr: addr, host: "x", rate: 200, dur: 500 * time.Millisecond,
		mix: requestMix{minMS: 1, maxMS: 1}, timeout: 20 * time.Second, maxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := summarize(res.samples)
	if st.ok != 100 || st.failed() != 0 {
		t.Fatalf("ok = %d, failed = %d (%s); want 100, 0", st.ok, st.failed(), st.failText())
	}
	if st.perNode[1] != 100 {
		t.Errorf("node 1 answered %d; want 100", st.perNode[1])
	}
	// Request i is due at 5i ms and answered no sooner than 10(i+1) ms: the
	// last waits ≥ 505 ms. A slower machine only makes it longer.
	if st.max < 500 {
		t.Errorf("max latency %.1f ms; want ≥ 500 (the queue)", st.max)
	}
}

func TestReadAnswer(t *testing.T) {
	for name, tc := range map[string]struct {
		in     string
		status int
		node   int8
		keep   bool
	}{
		"content-length": {"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nnode=3", 200, 3, true},
		"chunked":        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnod\r\n3\r\ne=2\r\n0\r\n\r\n", 200, 2, true},
		"close":          {"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 503, unknownNode, false},
		"http/1.0 eof":   {"HTTP/1.0 200 OK\r\n\r\nnode=1", 200, 1, false},
	} {
		status, node, keep, err := readAnswer(bufio.NewReader(strings.NewReader(tc.in)))
		if err != nil || status != tc.status || node != tc.node || keep != tc.keep {
			t.Errorf("%s: got %d, node %d, keep %v, err %v; want %d, node %d, keep %v", name, status, node, keep, err, tc.status, tc.node, tc.keep)
		}
	}
}
