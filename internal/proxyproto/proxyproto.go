// Package proxyproto parses the PROXY protocol header (HAProxy's
// proxy-protocol.txt, versions 1 and 2) that a load balancer puts before a
// connection's first byte to pass on the client's address. It only parses:
// whether to believe a header (the peer must be trusted) and reading it off
// a connection are the caller's (router/proxyproto.go).
//
//	v1: "PROXY " ("TCP4" | "TCP6") " " src " " dst " " sport " " dport "\r\n"
//	    | "PROXY UNKNOWN" [anything] "\r\n"; 107 bytes at most.
//	v2: sig[12] = "\r\n\r\n\x00\r\nQUIT\n"
//	    ver_cmd[1]  high nibble 2; low nibble 0 LOCAL, 1 PROXY
//	    fam[1]      0x11 TCP4, 0x12 UDP4 → 12 address bytes;
//	                0x21 TCP6, 0x22 UDP6 → 36; others carry no usable address
//	    len[2]      big endian: bytes that follow (addresses + TLVs)
//	    src addr, dst addr, src port[2], dst port[2], TLVs (ignored)
//
// A LOCAL command, UNKNOWN or a non-IP family keeps the peer's own address.
// Input is hostile: nothing is retained, nothing allocated but the
// address parse of v1, and every length is checked before it is used
// (FuzzParse).
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/fastrouter/fastrouter/internal/ascii"
)

const (
	v1Prefix = "PROXY "
	v2Sig    = "\r\n\r\n\x00\r\nQUIT\n"
	v1Max    = 107
	v2Head   = 16
)

// MaxLen is the longest header there is: v2's 16 bytes and a length field
// of 65535.
const MaxLen = v2Head + 0xffff

// Errors of Parse, preallocated: the input is hostile and may come fast.
var (
	ErrShort = errors.New("proxyproto: PROXY header incomplete")
	ErrBad   = errors.New("proxyproto: malformed PROXY header")
)

// Header is what a parsed PROXY header says. A zero Src means "keep the
// connection's own peer address" (LOCAL, UNKNOWN, non-IP families).
type Header struct {
	Src     netip.AddrPort
	Version int // 1 or 2
}

// Kind is what the first bytes of a connection are (Match).
type Kind uint8

const (
	None      Kind = iota // not a PROXY header
	Undecided             // a proper prefix of a signature: read more
	V1                    // starts with v1's signature
	V2                    // starts with v2's signature
)

// Match classifies the first bytes of a connection.
func Match(b []byte) Kind {
	m1 := matchPrefix(b, v1Prefix)
	m2 := matchPrefix(b, v2Sig)
	switch {
	case m1 == 2:
		return V1
	case m2 == 2:
		return V2
	case m1 == 1 || m2 == 1:
		return Undecided
	}
	return None
}

// matchPrefix: 0 b diverges from sig, 1 b is a proper prefix, 2 b starts
// with sig.
func matchPrefix(b []byte, sig string) int {
	if len(b) >= len(sig) {
		if string(b[:len(sig)]) == sig {
			return 2
		}
		return 0
	}
	if string(b) == sig[:len(b)] {
		return 1
	}
	return 0
}

// Parse parses a PROXY header at the start of b and returns it with its
// length. ErrShort: b ends before the header does (read more); ErrBad: not
// a valid header. b is hostile input; nothing is retained.
func Parse(b []byte) (Header, int, error) {
	switch Match(b) {
	case V1:
		return parseV1(b)
	case V2:
		return parseV2(b)
	case Undecided:
		return Header{}, 0, ErrShort
	}
	return Header{}, 0, ErrBad
}

func parseV1(b []byte) (Header, int, error) {
	end := bytes.Index(b[:min(len(b), v1Max)], []byte("\r\n"))
	if end < 0 {
		if len(b) >= v1Max {
			return Header{}, 0, ErrBad
		}
		// A bare '\n' or other control byte will never become valid.
		if bytes.IndexByte(b, '\n') >= 0 {
			return Header{}, 0, ErrBad
		}
		return Header{}, 0, ErrShort
	}
	h := Header{Version: 1}
	line := b[len(v1Prefix):end]
	n := end + 2
	if bytes.HasPrefix(line, []byte("UNKNOWN")) {
		return h, n, nil
	}
	var f [5][]byte
	for i := range f {
		sp := bytes.IndexByte(line, ' ')
		if i == len(f)-1 {
			if sp >= 0 {
				return Header{}, 0, ErrBad
			}
			f[i] = line
			break
		}
		if sp < 0 {
			return Header{}, 0, ErrBad
		}
		f[i], line = line[:sp], line[sp+1:]
	}
	var want4 bool
	switch string(f[0]) {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return Header{}, 0, ErrBad
	}
	src, err1 := netip.ParseAddr(string(f[1]))
	dst, err2 := netip.ParseAddr(string(f[2]))
	sport, ok1 := ascii.ParsePort(f[3])
	_, ok2 := ascii.ParsePort(f[4])
	if err1 != nil || err2 != nil || !ok1 || !ok2 || src.Is4() != want4 || dst.Is4() != want4 || src.Zone() != "" || dst.Zone() != "" {
		return Header{}, 0, ErrBad
	}
	h.Src = netip.AddrPortFrom(src, sport)
	return h, n, nil
}

func parseV2(b []byte) (Header, int, error) {
	if len(b) < v2Head {
		return Header{}, 0, ErrShort
	}
	verCmd, fam := b[12], b[13]
	n := v2Head + int(binary.BigEndian.Uint16(b[14:16]))
	if verCmd>>4 != 2 || verCmd&0xf > 1 {
		return Header{}, 0, ErrBad
	}
	var need int
	switch fam {
	case 0x11, 0x12:
		need = 12
	case 0x21, 0x22:
		need = 36
	}
	if n-v2Head < need {
		return Header{}, 0, ErrBad
	}
	if len(b) < n {
		return Header{}, 0, ErrShort
	}
	h := Header{Version: 2}
	if verCmd&0xf == 0 { // LOCAL: the proxy's own connection (health check)
		return h, n, nil
	}
	a := b[v2Head:n]
	switch need {
	case 12:
		ip := netip.AddrFrom4([4]byte(a[0:4]))
		h.Src = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(a[8:10]))
	case 36:
		ip := netip.AddrFrom16([16]byte(a[0:16]))
		h.Src = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(a[32:34]))
	}
	return h, n, nil
}
