//go:build !linux

package quicsock

import (
	"net"

	"golang.org/x/net/bpf"
)

func listen(addr string) (net.PacketConn, error) { return net.ListenPacket("udp", addr) }

func attach(*net.UDPConn, []bpf.RawInstruction) error { return ErrUnsupported }
