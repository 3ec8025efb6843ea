package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Wire format. Every message between routers, broadcast or push/pull, is
// one of these; all integers are little endian or varints.
//
//	magic    1 byte   0xFC
//	version  1 byte   1
//	kind     1 byte   1 = entry, 2 = report, 3 = state, 4 = blob, 5 = blob ack
//	base     varint   unix ns; every time (Δ) below is a varint delta from it
//
//	kind 1, entry:  key str, entry
//	kind 2, report: key str, addr str, router u64, epoch.ver Δ,
//	                epoch.origin u64, at Δ, inflight uvarint
//	kind 3, state:  rawlen uvarint, then a zstd frame of rawlen bytes:
//	                pools uvarint, { key str, n uvarint, entry × n } × pools
//	                [signed uvarint, { key str, addr str, unix varint, sig u64 } × signed]
//	                [0x00, blobs uvarint, blobrec × blobs]
//	kind 4, blob:   blobrec, with flag bit 1 set when the sender waits for
//	                acknowledgements
//	kind 5, ack:    key str, at.ver Δ, at.origin u64, router u64
//
//	blobrec:        key str, flags 1 byte (bit 0 deleted, bit 1 ack wanted),
//	                at.ver Δ, at.origin u64, value str (absent when deleted)
//
//	The optional signed section (absent when empty, so states without it
//	are what earlier versions sent) is the sender's replay memory: the
//	newest signed datagram time (unix seconds) it accepted per key and
//	announced address, and an id of that datagram if it was a subscribe
//	(subauth.Guard.SignedTimes). A signed section never starts with 0x00
//	(it is never empty), which is what tells the optional blob section
//	(blobs.go), sent only by an encrypted cluster that has blobs, from it.
//	A router older than the blob section merges such a state's entries and
//	replay memory, then rejects the rest (logged).
//
//	entry:
//	  addr       str
//	  flags      1 byte: bits 0-1 life, bit 2 static, bit 3 notify, bit 4 algo,
//	             bit 5 proof
//	  lifeAt     ver Δ, origin u64
//	  drain      start Δ, deadline Δ      (life draining or unsubscribed only)
//	  attrAt     ver Δ, origin u64
//	  modifiers  mod1 1 byte, mod2 1 byte
//	  numbers    weight, cores, load, backup: uvarint each
//	  notify     str (flag bit 3), algo str (flag bit 4)
//	  proof      str (flag bit 5): the newest signed subscription datagram
//	             accepted for the node, verified by routers that check
//	             signatures (subauth.Guard.AdmitRelayed)
//	  lastSeen   Δ
//	  reports    uvarint n, { router u64, epoch.ver Δ, epoch.origin u64,
//	                          at Δ, inflight uvarint } × n
//
//	str = uvarint length + bytes; u64 = 8 bytes; Δ = zig-zag varint of (t − base)
//
// Entries are ~60 bytes before compression (pool keys are written once per
// pool in a state), so 10k pools × 5 nodes is ~3.5 MB raw and a fraction of
// that compressed, far below memberlist's 20 MB push/pull limit. A single
// entry without a proof stays below ~900 bytes (key, address and notify are
// bounded), so it fits one gossip packet; a proof adds the datagram (~400
// bytes signed with RSA-2048). An entry too large for a packet travels by
// push/pull only.

const (
	wireMagic   = 0xFC
	wireVersion = 1

	kindEntry   = 1
	kindReport  = 2
	kindState   = 3
	kindBlob    = 4
	kindBlobAck = 5
)

// Bounds on decoded input. A message from the network never makes the
// decoder allocate more than these allow.
const (
	maxKeyLen     = 255
	maxAddrLen    = 255
	maxNotifyLen  = 255
	maxAlgoLen    = 32
	maxProofLen   = 2048 // a signed datagram: larger ones are not relayed
	maxReports    = 256
	maxStateBytes = 64 << 20      // decompressed state
	minEntryBytes = 24            // smallest encoded entry: bounds counts by input size
	minSignedRec  = 3 + 8         // smallest signed record: key, empty addr, unix, sig
	minBlobRec    = 2 + 1 + 1 + 8 // smallest blob record: key, flags, at, deleted
)

const (
	flagLifeMask = 0x03
	flagStatic   = 0x04
	flagNotify   = 0x08
	flagAlgo     = 0x10
	flagProof    = 0x20

	blobDeleted = 0x01
	blobAck     = 0x02
)

// Decoding errors. Preallocated: decoding is input-driven.
var (
	errShort    = errors.New("cluster: message truncated")
	errMagic    = errors.New("cluster: not a fastrouter cluster message")
	errVersion  = errors.New("cluster: unknown message version")
	errKind     = errors.New("cluster: unknown message kind")
	errTooLong  = errors.New("cluster: field longer than allowed")
	errTooMany  = errors.New("cluster: count larger than the message can hold")
	errBadValue = errors.New("cluster: invalid field value")
	errTrailing = errors.New("cluster: trailing bytes")
)

// wireEntry is a decoded entry. Byte slices alias the message and are only
// valid until the callback returns.
type wireEntry struct {
	key, addr     []byte
	static        bool
	life          life
	lifeAt        stamp
	drainStart    int64
	drainDeadline int64
	attrAt        stamp
	mod1, mod2    uint8
	weight        uint64
	cores, load   uint64
	backup        uint64
	notify, algo  []byte
	proof         []byte
	lastSeen      int64
	reports       []wireReport
}

type wireReport struct {
	router uint64
	report
}

// wireReportMsg is a decoded kind-2 message.
type wireReportMsg struct {
	key, addr []byte
	router    uint64
	report
}

// --- encoding ---

func appendHeader(dst []byte, kind byte, base int64) []byte {
	dst = append(dst, wireMagic, wireVersion, kind)
	return binary.AppendVarint(dst, base)
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendUvarint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }

func appendU64(dst []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(dst, v) }

// appendEntry encodes e's replicated fields (without its key). Caller holds
// the lock guarding e. Notify and algo longer than the wire allows are not
// replicated (the table never accepts such algos; such notify paths are not
// valid unix socket paths either).
func appendEntry(dst []byte, base int64, e *entry) []byte {
	dst = appendStr(dst, e.addr)
	flags := byte(e.life) & flagLifeMask
	if e.static {
		flags |= flagStatic
	}
	notify := e.attrs.notify != "" && len(e.attrs.notify) <= maxNotifyLen
	algo := e.attrs.algo != "" && len(e.attrs.algo) <= maxAlgoLen
	proof := len(e.proof) > 0 && len(e.proof) <= maxProofLen
	if notify {
		flags |= flagNotify
	}
	if algo {
		flags |= flagAlgo
	}
	if proof {
		flags |= flagProof
	}
	dst = append(dst, flags)
	dst = binary.AppendVarint(dst, e.lifeAt.ver-base)
	dst = appendU64(dst, e.lifeAt.origin)
	if e.life.drains() {
		dst = binary.AppendVarint(dst, e.drainStart-base)
		dst = binary.AppendVarint(dst, e.drainDeadline-base)
	}
	dst = binary.AppendVarint(dst, e.attrAt.ver-base)
	dst = appendU64(dst, e.attrAt.origin)
	a := &e.attrs
	dst = append(dst, a.mod1, a.mod2)
	dst = binary.AppendUvarint(dst, a.weight)
	dst = binary.AppendUvarint(dst, a.cores)
	dst = binary.AppendUvarint(dst, a.load)
	dst = binary.AppendUvarint(dst, a.backup)
	if notify {
		dst = appendStr(dst, a.notify)
	}
	if algo {
		dst = appendStr(dst, a.algo)
	}
	if proof {
		dst = binary.AppendUvarint(dst, uint64(len(e.proof)))
		dst = append(dst, e.proof...)
	}
	dst = binary.AppendVarint(dst, e.lastSeen-base)
	// Only reports for the current drain travel; older ones are dead.
	n := 0
	if e.life.drains() {
		for _, r := range e.reports {
			if r.epoch == e.lifeAt {
				n++
			}
		}
	}
	n = min(n, maxReports)
	dst = binary.AppendUvarint(dst, uint64(n))
	if n > 0 {
		for id, r := range e.reports {
			if n == 0 {
				break
			}
			if r.epoch != e.lifeAt {
				continue
			}
			n--
			dst = appendU64(dst, id)
			dst = appendReport(dst, base, r)
		}
	}
	return dst
}

func appendReport(dst []byte, base int64, r report) []byte {
	dst = binary.AppendVarint(dst, r.epoch.ver-base)
	dst = appendU64(dst, r.epoch.origin)
	dst = binary.AppendVarint(dst, r.at-base)
	return binary.AppendUvarint(dst, uint64(r.inflight))
}

// appendEntryMsg encodes a kind-1 message carrying e.
func appendEntryMsg(dst []byte, base int64, e *entry) []byte {
	dst = appendHeader(dst, kindEntry, base)
	dst = appendStr(dst, e.key)
	return appendEntry(dst, base, e)
}

// appendReportMsg encodes a kind-2 message: router's in-flight count for
// the drain of (key, addr).
func appendReportMsg(dst []byte, base int64, key, addr string, router uint64, r report) []byte {
	dst = appendHeader(dst, kindReport, base)
	dst = appendStr(dst, key)
	dst = appendStr(dst, addr)
	dst = appendU64(dst, router)
	return appendReport(dst, base, r)
}

// compressor compresses and decompresses full states. Safe for concurrent
// use (zstd's EncodeAll and DecodeAll are). It is never closed: with
// concurrency 1 and only EncodeAll/DecodeAll in use, zstd starts no
// goroutine, and memberlist may still be inside LocalState or
// MergeRemoteState after Shutdown returns, so closing could race.
type compressor struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

func newCompressor() (*compressor, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxStateBytes),
		zstd.WithDecoderMaxWindow(maxStateBytes))
	if err != nil {
		return nil, err
	}
	return &compressor{enc: enc, dec: dec}, nil
}

// sealState wraps raw (the uncompressed body of a kind-3 message) into a
// complete message.
func (z *compressor) sealState(base int64, raw []byte) []byte {
	dst := make([]byte, 0, 16+len(raw)/4)
	dst = appendHeader(dst, kindState, base)
	dst = binary.AppendUvarint(dst, uint64(len(raw)))
	return z.enc.EncodeAll(raw, dst)
}

// --- decoding ---

// decoder reads fields from b, bounds-checking each. After the first error
// every read returns zero and err stays set.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) byte1() byte {
	if d.err != nil || d.off >= len(d.b) {
		d.fail(errShort)
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u64() uint64 {
	if d.err != nil || len(d.b)-d.off < 8 {
		d.fail(errShort)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

// delta reads a time relative to base. Wrapping arithmetic is fine: a
// hostile delta yields a nonsense time, never a crash.
func (d *decoder) delta(base int64) int64 { return base + d.varint() }

func (d *decoder) str(max int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail(errTooLong)
		return nil
	}
	if uint64(len(d.b)-d.off) < n {
		d.fail(errShort)
		return nil
	}
	s := d.b[d.off : d.off+int(n) : d.off+int(n)]
	d.off += int(n)
	return s
}

// count reads a count of items of at least minSize bytes each and checks
// that the rest of the input could hold them.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)-d.off)/uint64(minSize) {
		d.fail(errTooMany)
		return 0
	}
	return int(n)
}

// header reads the common header and returns the kind and base.
func (d *decoder) header() (kind byte, base int64) {
	if d.byte1() != wireMagic {
		d.fail(errMagic)
		return 0, 0
	}
	if d.byte1() != wireVersion {
		d.fail(errVersion)
		return 0, 0
	}
	kind = d.byte1()
	base = d.varint()
	return kind, base
}

// entry decodes an entry body into w (reusing w.reports).
func (d *decoder) entry(base int64, w *wireEntry) {
	w.addr = d.str(maxAddrLen)
	flags := d.byte1()
	if flags&^(flagLifeMask|flagStatic|flagNotify|flagAlgo|flagProof) != 0 {
		d.fail(errBadValue)
		return
	}
	w.life = life(flags & flagLifeMask)
	w.static = flags&flagStatic != 0
	w.lifeAt = stamp{d.delta(base), d.u64()}
	w.drainStart, w.drainDeadline = 0, 0
	if w.life.drains() {
		w.drainStart = d.delta(base)
		w.drainDeadline = d.delta(base)
	}
	w.attrAt = stamp{d.delta(base), d.u64()}
	w.mod1 = d.byte1()
	w.mod2 = d.byte1()
	w.weight = d.uvarint()
	w.cores = d.uvarint()
	w.load = d.uvarint()
	w.backup = d.uvarint()
	w.notify, w.algo = nil, nil
	if flags&flagNotify != 0 {
		w.notify = d.str(maxNotifyLen)
	}
	if flags&flagAlgo != 0 {
		w.algo = d.str(maxAlgoLen)
	}
	w.proof = nil
	if flags&flagProof != 0 {
		if w.proof = d.str(maxProofLen); d.err == nil && len(w.proof) == 0 {
			d.fail(errBadValue) // the flag says there is one
		}
	}
	w.lastSeen = d.delta(base)
	n := d.count(8 + 4)
	if n > maxReports {
		d.fail(errTooMany)
		return
	}
	w.reports = w.reports[:0]
	for i := 0; i < n && d.err == nil; i++ {
		var r wireReport
		r.router = d.u64()
		r.report = d.report(base)
		w.reports = append(w.reports, r)
	}
	if d.err == nil && (len(w.addr) == 0 || !validText(w.addr)) {
		d.fail(errBadValue)
	}
}

func (d *decoder) report(base int64) report {
	var r report
	r.epoch.ver = d.delta(base)
	r.epoch.origin = d.u64()
	r.at = d.delta(base)
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail(errBadValue)
		return report{}
	}
	r.inflight = uint32(v)
	return r
}

func (d *decoder) key() []byte {
	k := d.str(maxKeyLen)
	if d.err == nil && (len(k) == 0 || !validKey(k)) {
		d.fail(errBadValue)
	}
	return k
}

// validKey: pool keys are printable ASCII without spaces (as the table
// requires); validText: addresses and notify targets have no control bytes.
// The table validates again when a node is created; these checks keep
// garbage out of the replicated map and the admin JSON.
func validKey(k []byte) bool {
	for _, c := range k {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func validText(b []byte) bool {
	for _, c := range b {
		if c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// message is a decoded broadcast: exactly one of entry, report, blob or
// ack is set (by kind).
type message struct {
	kind   byte
	key    []byte
	entry  wireEntry
	report wireReportMsg
	blob   wireBlob
	ack    wireBlobAck
}

// decodeMessage decodes a kind-1, 2, 4 or 5 message into m, reusing its
// buffers. Slices in m alias b.
func decodeMessage(b []byte, m *message) error {
	d := decoder{b: b}
	kind, base := d.header()
	if d.err != nil {
		return d.err
	}
	m.kind = kind
	switch kind {
	case kindEntry:
		m.key = d.key()
		m.entry.key = m.key
		d.entry(base, &m.entry)
	case kindReport:
		r := &m.report
		r.key = d.key()
		r.addr = d.str(maxAddrLen)
		r.router = d.u64()
		r.report = d.report(base)
		if d.err == nil && (len(r.addr) == 0 || !validText(r.addr)) {
			d.fail(errBadValue)
		}
	case kindBlob:
		d.blobRec(base, &m.blob, blobDeleted|blobAck)
	case kindBlobAck:
		a := &m.ack
		a.key = d.blobKey()
		a.at = stamp{d.delta(base), d.u64()}
		a.router = d.u64()
	default:
		return errKind
	}
	if d.err != nil {
		return d.err
	}
	if d.off != len(b) {
		return errTrailing
	}
	return nil
}

// decompressState checks a kind-3 message's header and returns its
// uncompressed body and time base, for decodeRawState.
func (z *compressor) decompressState(b []byte) (raw []byte, base int64, err error) {
	d := decoder{b: b}
	kind, base := d.header()
	if d.err == nil && kind != kindState {
		return nil, 0, errKind
	}
	rawLen := d.uvarint()
	if d.err != nil {
		return nil, 0, d.err
	}
	if rawLen > maxStateBytes {
		return nil, 0, errTooLong
	}
	raw, err = z.dec.DecodeAll(b[d.off:], make([]byte, 0, rawLen))
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: state: %w", err)
	}
	if uint64(len(raw)) != rawLen {
		return nil, 0, errBadValue
	}
	return raw, base, nil
}

// decodeRawState walks the uncompressed body of a state and calls fn for
// each entry, in order, then signed (if not nil) for each record of the
// signed section, then blobs (if not nil) for each blob record. fn and signed must not retain their arguments. It stops
// at the first error; what was passed before it is valid on its own.
func decodeRawState(raw []byte, base int64, fn func(w *wireEntry), signed func(key, addr []byte, unix int64, sig uint64), blobs func(w *wireBlob)) (int, error) {
	d := decoder{b: raw}
	var w wireEntry
	total := 0
	pools := d.count(2)
	for i := 0; i < pools && d.err == nil; i++ {
		key := d.key()
		n := d.count(minEntryBytes)
		for j := 0; j < n && d.err == nil; j++ {
			w.key = key
			d.entry(base, &w)
			if d.err == nil {
				fn(&w)
				total++
			}
		}
	}
	if d.err == nil && d.off < len(raw) && raw[d.off] != 0 {
		d.signedSection(signed)
	}
	if d.err == nil && d.off < len(raw) && raw[d.off] == 0 {
		d.off++
		d.blobSection(base, blobs)
	}
	if d.err != nil {
		return total, d.err
	}
	if d.off != len(raw) {
		return total, errTrailing
	}
	return total, nil
}

// signedSection decodes the state's signed section. Keys and addresses are
// the datagrams' own bytes (opaque: they are only compared), bounded as
// the subscription parser bounds them.
func (d *decoder) signedSection(signed func(key, addr []byte, unix int64, sig uint64)) {
	n := d.count(minSignedRec)
	if d.err == nil && n == 0 {
		d.fail(errBadValue) // an empty section is never sent
	}
	for i := 0; i < n && d.err == nil; i++ {
		key := d.str(maxKeyLen)
		addr := d.str(maxAddrLen)
		unix := d.varint()
		sig := d.u64()
		if d.err == nil && len(key) == 0 {
			d.fail(errBadValue)
		}
		if d.err == nil && signed != nil {
			signed(key, addr, unix, sig)
		}
	}
}

// appendSigned appends the signed section of n records in body (nothing
// when n is 0).
func appendSigned(raw []byte, n int, body []byte) []byte {
	if n == 0 {
		return raw
	}
	raw = appendUvarint(raw, uint64(n))
	return append(raw, body...)
}

// appendSignedRec encodes one record of the signed section.
func appendSignedRec(dst []byte, key, addr string, unix int64, sig uint64) []byte {
	dst = appendStr(dst, key)
	dst = appendStr(dst, addr)
	dst = binary.AppendVarint(dst, unix)
	return appendU64(dst, sig)
}

// blobKey reads a blob key: non-empty printable text.
func (d *decoder) blobKey() []byte {
	k := d.str(maxBlobKeyLen)
	if d.err == nil && (len(k) == 0 || !validText(k)) {
		d.fail(errBadValue)
	}
	return k
}

// blobRec decodes a blob record into w; allowed are the flag bits it may
// carry.
func (d *decoder) blobRec(base int64, w *wireBlob, allowed byte) {
	w.key = d.blobKey()
	flags := d.byte1()
	if d.err == nil && flags&^allowed != 0 {
		d.fail(errBadValue)
		return
	}
	w.deleted, w.ack = flags&blobDeleted != 0, flags&blobAck != 0
	w.at = stamp{d.delta(base), d.u64()}
	w.val = nil
	if !w.deleted {
		w.val = d.str(MaxBlobLen)
	}
}

// blobSection decodes the state's blob section.
func (d *decoder) blobSection(base int64, fn func(w *wireBlob)) {
	n := d.count(minBlobRec)
	if d.err == nil && n == 0 {
		d.fail(errBadValue) // an empty section is never sent
	}
	var w wireBlob
	for i := 0; i < n && d.err == nil; i++ {
		d.blobRec(base, &w, blobDeleted)
		if d.err == nil && fn != nil {
			fn(&w)
		}
	}
}

// appendBlobRec encodes one blob record.
func appendBlobRec(dst []byte, base int64, key string, at stamp, deleted bool, val []byte) []byte {
	dst = appendStr(dst, key)
	var flags byte
	if deleted {
		flags |= blobDeleted
	}
	dst = append(dst, flags)
	dst = binary.AppendVarint(dst, at.ver-base)
	dst = appendU64(dst, at.origin)
	if !deleted {
		dst = binary.AppendUvarint(dst, uint64(len(val)))
		dst = append(dst, val...)
	}
	return dst
}

// appendBlobMsg encodes a kind-4 message.
func appendBlobMsg(dst []byte, base int64, key string, at stamp, deleted, ack bool, val []byte) []byte {
	dst = appendHeader(dst, kindBlob, base)
	n := len(dst)
	dst = appendBlobRec(dst, base, key, at, deleted, val)
	if ack {
		dst[n+uvarintLen(uint64(len(key)))+len(key)] |= blobAck
	}
	return dst
}

// appendBlobAckMsg encodes a kind-5 message.
func appendBlobAckMsg(dst []byte, base int64, key []byte, at stamp, router uint64) []byte {
	dst = appendHeader(dst, kindBlobAck, base)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendVarint(dst, at.ver-base)
	dst = appendU64(dst, at.origin)
	return appendU64(dst, router)
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}
