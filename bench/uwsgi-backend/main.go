// Command uwsgi-backend is the benchmark's app node: a minimal uwsgi-protocol
// server that answers every request with a fixed body and closes the
// connection, as a uWSGI worker does. It is fast enough that the routers in
// front of it, not the app, are what a benchmark measures. Self-contained
// (the bench module does not import the router's internal packages).
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
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
	if network == "unix" {
		// nginx workers run as another user and need write permission.
		_ = os.Chmod(*addr, 0o666)
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

// serve reads one uwsgi request (4-byte header, vars, CONTENT_LENGTH body)
// and writes the canned response.
func serve(c net.Conn, resp []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(c, 8192)
	var hb [4]byte
	if _, err := io.ReadFull(br, hb[:]); err != nil {
		return
	}
	vars := make([]byte, binary.LittleEndian.Uint16(hb[1:3]))
	if _, err := io.ReadFull(br, vars); err != nil {
		return
	}
	var cl int64
	for off := 0; off+2 <= len(vars); {
		kl := int(binary.LittleEndian.Uint16(vars[off:]))
		if off+2+kl+2 > len(vars) {
			return
		}
		k := vars[off+2 : off+2+kl]
		vl := int(binary.LittleEndian.Uint16(vars[off+2+kl:]))
		vs := off + 4 + kl
		if vs+vl > len(vars) {
			return
		}
		if string(k) == "CONTENT_LENGTH" {
			cl, _ = strconv.ParseInt(string(vars[vs:vs+vl]), 10, 64)
		}
		off = vs + vl
	}
	if cl > 0 {
		io.CopyN(io.Discard, br, cl)
	}
	c.Write(resp)
}
