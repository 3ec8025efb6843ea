// Package uwsgi encodes and decodes the binary uwsgi protocol: the 4-byte
// packet header, the vars block, and the modifier1=224 subscription datagrams
// that uWSGI nodes send with --subscribe-to.
//
// Wire layout (all integers little-endian):
//
//	header:  modifier1 u8 | datasize u16 | modifier2 u8
//	vars:    ( keylen u16 | key | vallen u16 | val )*   exactly datasize bytes
//
// datasize counts only the vars block, never the header or a request body,
// so a vars block is at most 65535 bytes. Keys are never empty; values may be.
// The block has no count and no terminator.
//
// It also builds the request vars a router sends a node (AppendVars,
// vars.go), from the request view the router's fronts fill (Request).
//
// The package is designed to minimise heap allocations: encoders append to a
// caller-owned slice and decoders return sub-slices of their input. It has no
// dependencies beyond the standard library and internal/ascii.
package uwsgi

import (
	"encoding/binary"
	"errors"
)

// HeaderLen is the size of the fixed uwsgi packet header.
const HeaderLen = 4

// MaxVarsSize is the largest vars block the u16 datasize field can describe.
const MaxVarsSize = 0xffff

// Modifier1 values with a meaning to a router.
const (
	ModWSGI         uint8 = 0   // default app (safe for any uWSGI worker)
	ModSubscription uint8 = 224 // subscription datagram
)

// Decoding errors. They are preallocated: decoders run on attacker-controlled
// input at high rates and must not allocate to report a bad packet.
var (
	ErrShortHeader = errors.New("uwsgi: packet shorter than the 4-byte header")
	ErrTruncated   = errors.New("uwsgi: var record overruns the vars block")
	ErrEmptyKey    = errors.New("uwsgi: empty var key")
	ErrTooLarge    = errors.New("uwsgi: vars block larger than 65535 bytes")
)

// Header is the fixed 4-byte uwsgi packet header.
type Header struct {
	Modifier1 uint8
	Size      uint16 // size of the vars block that follows
	Modifier2 uint8
}

// AppendHeader appends the 4-byte header to dst.
func AppendHeader(dst []byte, h Header) []byte {
	return append(dst, h.Modifier1, byte(h.Size), byte(h.Size>>8), h.Modifier2)
}

// PutHeader writes h into the first 4 bytes of b, which must be at least
// HeaderLen long. Encoders reserve the header, append the vars, then call
// PutHeader once the size is known.
func PutHeader(b []byte, h Header) {
	_ = b[3]
	b[0] = h.Modifier1
	binary.LittleEndian.PutUint16(b[1:3], h.Size)
	b[3] = h.Modifier2
}

// ParseHeader decodes the first 4 bytes of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShortHeader
	}
	return Header{
		Modifier1: b[0],
		Size:      binary.LittleEndian.Uint16(b[1:3]),
		Modifier2: b[3],
	}, nil
}

// AppendVar appends one var record. The caller keeps the block within
// MaxVarsSize (see VarLen); key and val are each at most 65535 bytes.
func AppendVar(dst, key, val []byte) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(key)))
	dst = append(dst, key...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(val)))
	return append(dst, val...)
}

// AppendVarString is AppendVar for string arguments, without conversion
// allocations.
func AppendVarString(dst []byte, key, val string) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(key)))
	dst = append(dst, key...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(val)))
	return append(dst, val...)
}

// AppendVarUint appends a var whose value is n in decimal ASCII, as uWSGI
// sends numbers.
func AppendVarUint(dst []byte, key string, n uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(key)))
	dst = append(dst, key...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(tmp)-i))
	return append(dst, tmp[i:]...)
}

// VarLen is the number of bytes a record with the given key and value
// lengths takes in a vars block.
func VarLen(keyLen, valLen int) int { return 4 + keyLen + valLen }

// NextVar decodes the record that starts at b[off:]. It returns the key and
// value as sub-slices of b and the offset of the next record. At the end of the
// block it returns next == len(b) and err == nil; callers loop while
// off < len(b).
func NextVar(b []byte, off int) (key, val []byte, next int, err error) {
	if off+2 > len(b) {
		return nil, nil, off, ErrTruncated
	}
	kl := int(binary.LittleEndian.Uint16(b[off:]))
	off += 2
	if kl == 0 {
		return nil, nil, off, ErrEmptyKey
	}
	if off+kl+2 > len(b) {
		return nil, nil, off, ErrTruncated
	}
	key = b[off : off+kl : off+kl]
	off += kl
	vl := int(binary.LittleEndian.Uint16(b[off:]))
	off += 2
	if off+vl > len(b) {
		return nil, nil, off, ErrTruncated
	}
	val = b[off : off+vl : off+vl]
	return key, val, off + vl, nil
}

// ValidVars reports whether b is a well-formed vars block.
func ValidVars(b []byte) error {
	if len(b) > MaxVarsSize {
		return ErrTooLarge
	}
	for off := 0; off < len(b); {
		var err error
		if _, _, off, err = NextVar(b, off); err != nil {
			return err
		}
	}
	return nil
}
