// Command uwsgi-backend is the benchmark's app node: a minimal uwsgi-protocol
// server that answers every request with a fixed body and closes the
// connection, as a uWSGI worker does. It is fast enough that the routers in
// front of it, not the app, are what a benchmark measures.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:3031", "address (ip:port or a unix socket path)")
	size := flag.Int("size", 512, "response body bytes")
	flag.Parse()
	network := "tcp"
	if strings.Contains(*addr, "/") {
		network = "unix"
		os.Remove(*addr)
	}
	ln, err := net.Listen(network, *addr)
	if err != nil {
		log.Fatal(err)
	}
	body := strings.Repeat("x", *size)
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(*size) + "\r\n\r\n" + body)
	fmt.Println("listening", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c, resp)
	}
}

func serve(c net.Conn, resp []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(c, 8192)
	var hb [4]byte
	if _, err := io.ReadFull(br, hb[:]); err != nil {
		return
	}
	h, _ := uwsgi.ParseHeader(hb[:])
	vars := make([]byte, h.Size)
	if _, err := io.ReadFull(br, vars); err != nil {
		return
	}
	var cl int64
	for off := 0; off < len(vars); {
		k, v, next, err := uwsgi.NextVar(vars, off)
		if err != nil {
			return
		}
		if string(k) == "CONTENT_LENGTH" {
			cl, _ = strconv.ParseInt(string(v), 10, 64)
		}
		off = next
	}
	if cl > 0 {
		io.CopyN(io.Discard, br, cl)
	}
	c.Write(resp)
}
