// Package quicsock holds the UDP sockets of the HTTP/3 front and the rule
// that keeps QUIC connections with the process that owns them across a
// binary upgrade (SIGUSR2, internal/upgrade).
//
// A QUIC connection is bound to a process: its keys and state live there,
// and no other process can take over its packets. TCP listeners are handed
// to the new process by file descriptor, and connections already accepted
// stay with the old one, because the kernel delivers a TCP connection's
// bytes to its own socket. A UDP socket has no such per-connection
// sockets: if both processes read one shared socket, each gets a share of
// every connection's datagrams, and each drops what it does not know (the
// old process's packets read by the new one, and the Initials of new
// connections read by the old one): both sides would see heavy loss for
// as long as the old process drains.
//
// So the HTTP/3 socket is not handed over. Every process binds its own
// socket with SO_REUSEPORT (Listen); the sockets of one address form one
// reuseport group in the kernel, which picks the socket of each datagram.
// Before it starts its successor, the old process attaches a classic BPF
// program to the group (Steer) that picks by QUIC header (RFC 9000 §17):
//
//	long header (Initial, 0-RTT, Handshake: a connection being set up)
//	                                       → index 1, the newest socket
//	short header (an established connection) whose Destination
//	Connection ID starts with the old process's prefix byte
//	                                       → index 0, the old socket
//	any other short header                 → index 1
//
// Every connection ID a process issues starts with its own prefix byte
// (the router's connection ID generator), and a successor takes the next
// byte, so the two never share one. Sockets are indexed in the order they
// joined the group; an index the group does not have (1 before the
// successor binds, or once only one socket is left) falls back to the
// kernel's 4-tuple hash over the sockets there are, which with one socket
// is that socket. So: before the successor binds, everything goes to the
// old process; after, new connections go to the new one and the old
// connections stay where they are, until the old process closes its socket
// at the end of its drain; a successor that fails leaves the old process
// alone with its socket, which then gets everything again.
//
// The program holds for a group of at most two sockets, the old process's
// at index 0: an upgrade must wait until the previous old process has
// exited (the router refuses SIGUSR2 meanwhile when it serves HTTP/3).
//
// SO_REUSEPORT lets any process of the same user bind the address too and
// take a share of its datagrams; the router binds the TCP listener of the
// same address first, which fails for a second instance.
//
// Linux only; elsewhere Listen binds a plain socket and Steer reports
// errors.ErrUnsupported (a successor then shares nothing and old
// connections are cut at the upgrade).
package quicsock

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/net/bpf"
)

// Socket indices in a reuseport group of the old and the new process
// (see the package doc).
const (
	oldIndex = 0
	newIndex = 1
)

// longHeaderBit is the Header Form bit of a QUIC packet's first byte: set
// for long headers (RFC 9000 §17.2), clear for short ones (§17.3).
const longHeaderBit = 0x80

// steeringProgram is the classic BPF program of the package doc for a
// process whose connection IDs start with prefix. A reuseport program sees
// the datagram from the start of the UDP payload; a load past its end ends
// the program with 0 (index 0: the old socket, which drops a datagram that
// short).
func steeringProgram(prefix byte) ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 1},                                  // 0: A = first byte
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: longHeaderBit, SkipTrue: 2}, // 1: long header → 4
		bpf.LoadAbsolute{Off: 1, Size: 1},                                  // 2: A = first byte of the DCID
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(prefix), SkipTrue: 1},  // 3: ours → 5
		bpf.RetConstant{Val: newIndex},                                     // 4
		bpf.RetConstant{Val: oldIndex},                                     // 5
	})
}

// Pick runs the steering program of prefix on a datagram, as the kernel
// would, and returns the socket index it chooses: for tests and the fuzz
// target, which check the program against the rule in plain Go.
func Pick(prefix byte, datagram []byte) (int, error) {
	prog, err := steeringProgram(prefix)
	if err != nil {
		return 0, err
	}
	vm, err := bpf.NewVM(disassemble(prog))
	if err != nil {
		return 0, err
	}
	return vm.Run(datagram)
}

func disassemble(raw []bpf.RawInstruction) []bpf.Instruction {
	out := make([]bpf.Instruction, len(raw))
	for i, r := range raw {
		out[i] = r.Disassemble()
	}
	return out
}

// Listen binds a UDP socket for HTTP/3 at addr (host:port, the port of the
// --https listener of the same address) with SO_REUSEPORT, so that a
// successor can bind its own beside it.
func Listen(addr string) (*net.UDPConn, error) {
	pc, err := listen(addr)
	if err != nil {
		return nil, err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok { // net.ListenPacket("udp", …) always gives one
		pc.Close()
		return nil, fmt.Errorf("quicsock: %s: %T is not a UDP socket", addr, pc)
	}
	return uc, nil
}

// Steer attaches the steering program for prefix to c's reuseport group
// (see the package doc). It replaces any program attached before.
func Steer(c *net.UDPConn, prefix byte) error {
	prog, err := steeringProgram(prefix)
	if err != nil {
		return err
	}
	return attach(c, prog)
}

// ErrUnsupported is Steer's error where there is no reuseport steering.
var ErrUnsupported = errors.ErrUnsupported
