package uwsgi

import "errors"

// A subscription datagram is a uwsgi packet whose modifier2 is the command
// (0 = subscribe or refresh, anything else = unsubscribe) and whose vars
// carry the announce. uWSGI 2.0 sends, in this order:
//
//	key, address, modifier1, modifier2, cores, load, weight
//	[, sni_key, sni_crt, sni_ca] [, notify] [, unix, sign]
//
// Rules kept for compatibility with real senders (as uWSGI's receiver,
// plugins/corerouter/cr_common.c uwsgi_corerouter_manage_subscription, reads them):
// modifier1 is normally 224 but is never required; the datagram length, not
// the header's datasize, bounds the vars; unknown keys are ignored. When a
// datagram is signed, "sign" is the last record and the signature covers the
// vars from offset 4 up to the start of that record.
//
// Extensions understood here and ignored by uWSGI: drain, drain_timeout,
// backup, algo.

// MaxKeyLen is the longest routing key accepted. uWSGI keeps keys in a
// 255-byte buffer (and overflows it in 2.0); we reject longer ones.
const MaxKeyLen = 255

// MaxAddressLen bounds a node address, as uWSGI does.
const MaxAddressLen = 255

// Subscription errors.
var (
	ErrNoKey      = errors.New("uwsgi: subscription without key")
	ErrNoAddress  = errors.New("uwsgi: subscription without address")
	ErrKeyLen     = errors.New("uwsgi: subscription key longer than 255 bytes")
	ErrAddressLen = errors.New("uwsgi: subscription address longer than 255 bytes")
	ErrNumber     = errors.New("uwsgi: subscription number is not a decimal")
	ErrSignLast   = errors.New("uwsgi: subscription sign is not the last var")
)

// Subscription is a decoded subscription datagram. Byte-slice fields alias
// the datagram passed to ParseSubscription and are only valid while it is;
// copy what must outlive it. A zero Subscription is an empty subscribe.
type Subscription struct {
	Unsubscribe bool // modifier2 != 0

	Key     []byte
	Address []byte

	Modifier1 uint8
	Modifier2 uint8
	Cores     uint64
	Load      uint64
	Weight    uint64 // as sent; callers map 0 to 1

	SNIKey, SNICrt, SNICA []byte
	Notify                []byte

	// Signed datagrams. Unix is the sender's time plus the command; Sign is
	// the raw signature; SignedLen is how many bytes of the vars block (from
	// offset 0 of the vars, i.e. datagram offset 4) the signature covers.
	HasUnix   bool
	Unix      uint64
	Sign      []byte
	SignedLen int

	// Extensions.
	Drain        bool
	DrainTimeout uint64 // seconds, 0 = router default
	Backup       uint64
	Algo         []byte
	// Proto is uWSGI master's proto key; its first byte 'h' means the node
	// speaks HTTP at Address (IsHTTP).
	Proto []byte
}

// IsHTTP reports whether the datagram announces an HTTP node (proto=h...).
func (s *Subscription) IsHTTP() bool { return len(s.Proto) > 0 && s.Proto[0] == 'h' }

// ParseSubscription decodes datagram into s. It allocates nothing. Numbers
// must be decimal digit strings (uWSGI parses "abc" as garbage silently; we
// refuse the datagram instead).
func ParseSubscription(datagram []byte, s *Subscription) error {
	*s = Subscription{}
	h, err := ParseHeader(datagram)
	if err != nil {
		return err
	}
	s.Unsubscribe = h.Modifier2 != 0
	vars := datagram[HeaderLen:]
	for off := 0; off < len(vars); {
		start := off
		var k, v []byte
		k, v, off, err = NextVar(vars, off)
		if err != nil {
			return err
		}
		if s.Sign != nil {
			return ErrSignLast
		}
		switch string(k) {
		case "key":
			s.Key = v
		case "address":
			s.Address = v
		case "modifier1":
			s.Modifier1, err = parseUint8(v)
		case "modifier2":
			s.Modifier2, err = parseUint8(v)
		case "cores":
			s.Cores, err = parseUint(v)
		case "load":
			s.Load, err = parseUint(v)
		case "weight":
			s.Weight, err = parseUint(v)
		case "sni_key":
			s.SNIKey = v
		case "sni_crt":
			s.SNICrt = v
		case "sni_ca":
			s.SNICA = v
		case "notify":
			s.Notify = v
		case "unix":
			s.HasUnix = true
			s.Unix, err = parseUint(v)
		case "sign":
			s.Sign = v
			s.SignedLen = start
		case "drain":
			s.Drain = len(v) > 0 && v[0] != '0'
		case "drain_timeout":
			s.DrainTimeout, err = parseUint(v)
		case "backup":
			s.Backup, err = parseUint(v)
		case "algo":
			s.Algo = v
		case "proto":
			s.Proto = v
		}
		if err != nil {
			return err
		}
	}
	switch {
	case len(s.Key) == 0:
		return ErrNoKey
	case len(s.Key) > MaxKeyLen:
		return ErrKeyLen
	case len(s.Address) == 0:
		return ErrNoAddress
	case len(s.Address) > MaxAddressLen:
		return ErrAddressLen
	}
	return nil
}

// AppendSubscription appends s as a datagram in the key order a uWSGI 2.0
// node uses, with m1=224 and m2 = 1 for an unsubscribe. Extensions follow the
// standard keys; a non-nil Sign is written last. Fields that uWSGI always
// sends are always written; optional ones only when set.
func AppendSubscription(dst []byte, s *Subscription) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = AppendSubscriptionVars(dst, s)
	if s.Sign != nil {
		dst = AppendVar(dst, []byte("sign"), s.Sign)
	}
	var cmd uint8
	if s.Unsubscribe {
		cmd = 1
	}
	PutHeader(dst[start:], Header{Modifier1: ModSubscription, Size: uint16(len(dst) - start - HeaderLen), Modifier2: cmd})
	return dst
}

// AppendSubscriptionVars appends the vars of s up to, not including, the sign
// record: exactly the bytes a signature covers.
func AppendSubscriptionVars(dst []byte, s *Subscription) []byte {
	dst = AppendVar(dst, []byte("key"), s.Key)
	dst = AppendVar(dst, []byte("address"), s.Address)
	dst = AppendVarUint(dst, "modifier1", uint64(s.Modifier1))
	dst = AppendVarUint(dst, "modifier2", uint64(s.Modifier2))
	dst = AppendVarUint(dst, "cores", s.Cores)
	dst = AppendVarUint(dst, "load", s.Load)
	dst = AppendVarUint(dst, "weight", s.Weight)
	if s.SNIKey != nil {
		dst = AppendVar(dst, []byte("sni_key"), s.SNIKey)
	}
	if s.SNICrt != nil {
		dst = AppendVar(dst, []byte("sni_crt"), s.SNICrt)
	}
	if s.SNICA != nil {
		dst = AppendVar(dst, []byte("sni_ca"), s.SNICA)
	}
	if s.Notify != nil {
		dst = AppendVar(dst, []byte("notify"), s.Notify)
	}
	if s.Drain {
		dst = AppendVarString(dst, "drain", "1")
	}
	if s.DrainTimeout != 0 {
		dst = AppendVarUint(dst, "drain_timeout", s.DrainTimeout)
	}
	if s.Backup != 0 {
		dst = AppendVarUint(dst, "backup", s.Backup)
	}
	if s.Algo != nil {
		dst = AppendVar(dst, []byte("algo"), s.Algo)
	}
	if s.Proto != nil {
		dst = AppendVar(dst, []byte("proto"), s.Proto)
	}
	if s.HasUnix {
		dst = AppendVarUint(dst, "unix", s.Unix)
	}
	return dst
}

// parseUint accepts 1 to 19 decimal digits, so the value never overflows.
func parseUint(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 19 {
		return 0, ErrNumber
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, ErrNumber
		}
		n = n*10 + uint64(c-'0')
	}
	return n, nil
}

func parseUint8(b []byte) (uint8, error) {
	n, err := parseUint(b)
	if err != nil || n > 255 {
		return 0, ErrNumber
	}
	return uint8(n), nil
}
