package cluster

import (
	"bytes"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// entryFrom builds an entry holding w's replicated fields.
func entryFrom(w *wireEntry) *entry {
	e := &entry{
		key: string(w.key), addr: string(w.addr), static: w.static, life: w.life, lifeAt: w.lifeAt,
		drainStart: w.drainStart, drainDeadline: w.drainDeadline, attrAt: w.attrAt, lastSeen: w.lastSeen,
		attrs: attrs{mod1: w.mod1, mod2: w.mod2, weight: w.weight, cores: w.cores, load: w.load, backup: w.backup,
			notify: string(w.notify), algo: string(w.algo)},
		proof: bytes.Clone(w.proof),
	}
	for _, r := range w.reports {
		if e.reports == nil {
			e.reports = map[uint64]report{}
		}
		e.reports[r.router] = r.report
	}
	return e
}

// canon copies w with owned slices, reports sorted and deduplicated by
// router (a map on the encoding side), and nil for empty.
func canon(w *wireEntry) wireEntry {
	c := *w
	c.key, c.addr = bytes.Clone(w.key), bytes.Clone(w.addr)
	c.notify, c.algo, c.proof = bytes.Clone(w.notify), bytes.Clone(w.algo), bytes.Clone(w.proof)
	if len(w.proof) == 0 {
		c.proof = nil
	}
	if len(w.notify) == 0 {
		c.notify = nil
	}
	if len(w.algo) == 0 {
		c.algo = nil
	}
	c.reports = nil
	for _, r := range w.reports {
		if i := slices.IndexFunc(c.reports, func(x wireReport) bool { return x.router == r.router }); i >= 0 {
			c.reports[i] = r // the last one wins, as in a map
			continue
		}
		c.reports = append(c.reports, r)
	}
	slices.SortFunc(c.reports, func(a, b wireReport) int {
		switch {
		case a.router < b.router:
			return -1
		case a.router > b.router:
			return 1
		}
		return 0
	})
	return c
}

func sampleEntries() []*entry {
	return []*entry{
		{key: "a.test", addr: "127.0.0.1:3031", life: lifeAlive, lifeAt: stamp{0, 7}, attrAt: stamp{1700000000000000000, 7},
			attrs: attrs{weight: 1}, lastSeen: 1700000001000000000},
		{key: "*.wild.example.com", addr: "/run/app.sock", static: true, life: lifeDraining,
			lifeAt: stamp{1700000002000000000, 9}, drainStart: 1700000002000000000, drainDeadline: 1700000032000000000,
			attrAt: stamp{1700000000500000000, 9}, attrs: attrs{mod1: 5, mod2: 1, weight: 300, cores: 8, load: 3, backup: 2,
				notify: "udp://127.0.0.1:9000", algo: "lrc"}, lastSeen: 1700000002000000000,
			reports: map[uint64]report{9: {epoch: stamp{1700000002000000000, 9}, at: 1700000002100000000, inflight: 3},
				11: {epoch: stamp{1700000002000000000, 9}, at: 1700000002200000000, inflight: 0},
				12: {epoch: stamp{1600000000000000000, 9}, at: 1, inflight: 4}}}, // stale: not encoded
		{key: "gone.test", addr: "[::1]:3031", life: lifeGone, lifeAt: stamp{1700000003000000000, 1}},
		{key: "u.test", addr: "@abstract", life: lifeUnsub, lifeAt: stamp{1700000004000000000, 2},
			drainStart: 1700000004000000000, drainDeadline: 1700000034000000000, lastSeen: -5},
		{key: "signed.test", addr: "10.0.0.1:3031", life: lifeAlive, lifeAt: stamp{0, 3}, attrAt: stamp{1700000000000000000, 3},
			attrs: attrs{weight: 2}, lastSeen: 1700000001000000000, proof: sampleProof("signed.test", ":3031", 1700000001)},
	}
}

// sampleProof is a datagram in the signed layout (the signature is not a
// real one: the codec and the merge never verify).
func sampleProof(key, addr string, unix uint64) []byte {
	return uwsgi.AppendSubscription(nil, &uwsgi.Subscription{Key: []byte(key), Address: []byte(addr), Weight: 2,
		HasUnix: true, Unix: unix, Sign: bytes.Repeat([]byte{0xA5}, 256)})
}

func TestEntryMessageRoundTrip(t *testing.T) {
	for _, e := range sampleEntries() {
		msg := appendEntryMsg(nil, 1700000000000000000, e)
		var m message
		if err := decodeMessage(msg, &m); err != nil {
			t.Fatalf("decode(%s %s): %v", e.key, e.addr, err)
		}
		got := entryFrom(&m.entry)
		want := *e
		// Only reports of the current drain travel.
		want.reports = nil
		for id, r := range e.reports {
			if r.epoch == e.lifeAt && e.life.drains() {
				if want.reports == nil {
					want.reports = map[uint64]report{}
				}
				want.reports[id] = r
			}
		}
		if !e.life.drains() {
			want.drainStart, want.drainDeadline = 0, 0
		}
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("round trip of %s %s:\n got %+v\nwant %+v", e.key, e.addr, *got, want)
		}
	}
}

func TestReportMessageRoundTrip(t *testing.T) {
	r := report{epoch: stamp{1700000002000000000, 9}, at: 1700000002100000000, inflight: 42}
	msg := appendReportMsg(nil, 1700000002000000000, "k.test", "10.0.0.1:1", 77, r)
	var m message
	if err := decodeMessage(msg, &m); err != nil {
		t.Fatal(err)
	}
	if m.kind != kindReport || string(m.report.key) != "k.test" || string(m.report.addr) != "10.0.0.1:1" ||
		m.report.router != 77 || m.report.report != r {
		t.Fatalf("decoded %+v", m.report)
	}
}

func TestStateRoundTrip(t *testing.T) {
	z, err := newCompressor()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{pools: map[string]map[string]*entry{}, z: z, now: nowFunc(1700000005000000000)}
	for _, e := range sampleEntries() {
		if c.pools[e.key] == nil {
			c.pools[e.key] = map[string]*entry{}
		}
		c.pools[e.key][e.addr] = e
	}
	mem := &fakeMemory{times: map[[2]string]memRec{{"signed.test", ":3031"}: {1700000001, 42}, {"k\x00", ""}: {-3, 0}}}
	c.cfg.Signed = mem
	msg := c.encodeState()
	raw, base, err := z.decompressState(msg)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	got := &fakeMemory{}
	n, err := decodeRawState(raw, base, func(w *wireEntry) {
		e := c.pools[string(w.key)][string(w.addr)]
		if e == nil {
			t.Fatalf("decoded unknown entry %s %s", w.key, w.addr)
		}
		var m message
		if err := decodeMessage(appendEntryMsg(nil, base, e), &m); err != nil {
			t.Fatal(err)
		}
		if got, want := canon(w), canon(&m.entry); !reflect.DeepEqual(got, want) {
			t.Errorf("state entry %s %s:\n got %+v\nwant %+v", w.key, w.addr, got, want)
		}
		seen[string(w.key)+" "+string(w.addr)] = true
	}, got.RememberSigned, nil)
	if want := len(sampleEntries()); err != nil || n != want || len(seen) != want {
		t.Fatalf("decoded %d entries (%d distinct): %v; want %d", n, len(seen), err, want)
	}
	if !reflect.DeepEqual(got.times, mem.times) {
		t.Errorf("signed section: got %v; want %v", got.times, mem.times)
	}
	// Without a memory the section is absent: the state is what a router
	// that knows nothing of it sends and reads.
	c.cfg.Signed = nil
	raw, base, err = z.decompressState(c.encodeState())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeRawState(raw, base, func(*wireEntry) {}, func([]byte, []byte, int64, uint64) {
		t.Error("a signed record in a state without a memory")
	}, func(*wireBlob) {
		t.Error("a blob in the state of an unencrypted cluster")
	}); err != nil {
		t.Fatal(err)
	}
}

// fakeMemory is a SignedTimes that records what it is told.
type fakeMemory struct {
	mu    sync.Mutex
	times map[[2]string]memRec
}

type memRec struct {
	unix int64
	sig  uint64
}

func (m *fakeMemory) SignedTimes(fn func(key, addr string, unix int64, sig uint64)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, r := range m.times {
		fn(k[0], k[1], r.unix, r.sig)
	}
}

func (m *fakeMemory) RememberSigned(key, addr []byte, unix int64, sig uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.times == nil {
		m.times = map[[2]string]memRec{}
	}
	k := [2]string{string(key), string(addr)}
	if old, ok := m.times[k]; !ok || unix > old.unix {
		m.times[k] = memRec{unix, sig}
	}
}

func (m *fakeMemory) get(key, addr string) memRec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.times[[2]string{key, addr}]
}

func TestDecodeRejects(t *testing.T) {
	good := appendEntryMsg(nil, 1700000000000000000, sampleEntries()[1])
	cases := map[string][]byte{
		"empty":          {},
		"magic":          append([]byte{0x00}, good[1:]...),
		"version":        append([]byte{wireMagic, 9}, good[2:]...),
		"kind":           append([]byte{wireMagic, wireVersion, 9}, good[3:]...),
		"truncated":      good[:len(good)-1],
		"trailing":       append(bytes.Clone(good), 0),
		"control key":    appendEntryMsg(nil, 0, &entry{key: "a\nb", addr: "1.2.3.4:5"}),
		"empty address":  appendEntryMsg(nil, 0, &entry{key: "a", addr: ""}),
		"key too long":   appendEntryMsg(nil, 0, &entry{key: string(bytes.Repeat([]byte("k"), 256)), addr: "x"}),
		"huge count":     append(appendHeader(nil, kindEntry, 0), 0x01, 'k', 0x01, 'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"flags":          append(appendHeader(nil, kindEntry, 0), 0x01, 'k', 0x01, 'a', 0x80),
		"empty proof":    entryWithProof(0),
		"proof too long": entryWithProof(maxProofLen + 1),
	}
	var m message
	if err := decodeMessage(entryWithProof(maxProofLen), &m); err != nil || len(m.entry.proof) != maxProofLen {
		t.Errorf("longest proof: %v", err)
	}
	for name, b := range cases {
		var m message
		if err := decodeMessage(b, &m); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// entryWithProof hand-encodes an entry message whose proof is n bytes.
func entryWithProof(n int) []byte {
	b := appendHeader(nil, kindEntry, 0)
	b = appendStr(b, "k")
	b = appendStr(b, "1.2.3.4:5")
	b = append(b, flagProof)
	b = append(b, 0)
	b = appendU64(b, 1) // lifeAt
	b = append(b, 0)
	b = appendU64(b, 1)       // attrAt
	b = append(b, 0, 0)       // modifiers
	b = append(b, 1, 0, 0, 0) // weight, cores, load, backup
	b = appendUvarint(b, uint64(n))
	b = append(b, bytes.Repeat([]byte{'p'}, n)...)
	return append(b, 0, 0) // lastSeen, no reports
}

func nowFunc(ns int64) func() time.Time { return func() time.Time { return time.Unix(0, ns) } }

// FuzzDecodeMessage: decoding never panics, and what decodes re-encodes to
// something that decodes to the same entry.
func FuzzDecodeMessage(f *testing.F) {
	for _, e := range sampleEntries() {
		f.Add(appendEntryMsg(nil, 1700000000000000000, e))
	}
	f.Add(appendReportMsg(nil, 5, "k", "a", 1, report{epoch: stamp{1, 2}, at: 3, inflight: 4}))
	f.Add(entryWithProof(3))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m message
		if err := decodeMessage(b, &m); err != nil || m.kind != kindEntry {
			return
		}
		first := canon(&m.entry)
		var m2 message
		if err := decodeMessage(appendEntryMsg(nil, 0, entryFrom(&m.entry)), &m2); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		second := canon(&m2.entry)
		// Only reports of the current drain are encoded.
		first.reports = slices.DeleteFunc(first.reports, func(r wireReport) bool {
			return !first.life.drains() || r.epoch != first.lifeAt
		})
		if len(first.reports) == 0 {
			first.reports = nil
		}
		if !reflect.DeepEqual(first, second) {
			t.Fatalf("decode(encode(decode(b))) != decode(b):\n%+v\n%+v", first, second)
		}
	})
}

// FuzzDecodeRawState: the uncompressed body of a push/pull state never
// panics the decoder, whatever the counts and lengths claim.
func FuzzDecodeRawState(f *testing.F) {
	var raw []byte
	raw = appendUvarint(raw, 2)
	raw = appendStr(raw, "a.test")
	raw = appendUvarint(raw, 1)
	raw = appendEntry(raw, 0, sampleEntries()[0])
	raw = appendStr(raw, "b.test")
	raw = appendUvarint(raw, 1)
	raw = appendEntry(raw, 0, sampleEntries()[1])
	f.Add(raw)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	withProof := appendEntry(appendUvarint(appendStr(appendUvarint(nil, 1), "signed.test"), 1), 0, sampleEntries()[4])
	f.Add(withProof)
	f.Add(appendSigned(bytes.Clone(withProof), 2, appendSignedRec(appendSignedRec(nil, "signed.test", ":3031", 1700000001, 1<<63), "k", "", -1, 0)))
	f.Add(appendBlobSeed(bytes.Clone(withProof)))
	f.Add(appendBlobSeed(appendSigned(bytes.Clone(withProof), 1, appendSignedRec(nil, "signed.test", ":3031", 1700000001, 1))))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, recs, blobs := 0, 0, 0
		_, _ = decodeRawState(b, 0, func(w *wireEntry) {
			n++
			if len(w.key) == 0 || len(w.addr) == 0 {
				t.Fatal("empty key or address passed to the merge")
			}
			if len(w.proof) > maxProofLen {
				t.Fatalf("proof of %d bytes", len(w.proof))
			}
		}, func(key, addr []byte, _ int64, _ uint64) {
			recs++
			if len(key) == 0 || len(key) > maxKeyLen || len(addr) > maxAddrLen {
				t.Fatalf("signed record key %d bytes, address %d bytes", len(key), len(addr))
			}
		}, func(w *wireBlob) {
			blobs++
			if len(w.key) == 0 || len(w.key) > maxBlobKeyLen || len(w.val) > MaxBlobLen || w.ack || (w.deleted && w.val != nil) {
				t.Fatalf("blob record key %d bytes, value %d bytes, ack %v, deleted %v", len(w.key), len(w.val), w.ack, w.deleted)
			}
		})
		if n > len(b)/minEntryBytes || recs > len(b)/minSignedRec || blobs > len(b)/minBlobRec {
			t.Fatalf("%d entries, %d signed records and %d blobs from %d bytes", n, recs, blobs, len(b))
		}
	})
}

// FuzzDecodeState: a whole kind-3 message, zstd frame included.
func FuzzDecodeState(f *testing.F) {
	z, err := newCompressor()
	if err != nil {
		f.Fatal(err)
	}
	c := &Cluster{pools: map[string]map[string]*entry{}, z: z, now: nowFunc(1700000005000000000)}
	for _, e := range sampleEntries() {
		if c.pools[e.key] == nil {
			c.pools[e.key] = map[string]*entry{}
		}
		c.pools[e.key][e.addr] = e
	}
	f.Add(c.encodeState())
	f.Fuzz(func(t *testing.T, b []byte) {
		raw, base, err := z.decompressState(b)
		if err != nil {
			return
		}
		if len(raw) > maxStateBytes {
			t.Fatalf("decompressed %d bytes", len(raw))
		}
		_, _ = decodeRawState(raw, base, func(*wireEntry) {}, func([]byte, []byte, int64, uint64) {}, func(*wireBlob) {})
	})
}

// appendBlobSeed appends a blob section of two records (one deleted) to a
// raw state.
func appendBlobSeed(raw []byte) []byte {
	raw = append(raw, 0)
	raw = appendUvarint(raw, 2)
	raw = appendBlobRec(raw, 0, "acme/cert/a.test", stamp{5, 7}, false, []byte("-----BEGIN CERTIFICATE-----"))
	return appendBlobRec(raw, 0, "acme/want/b.test", stamp{-5, 9}, true, nil)
}

// TestBlobCodec: blob and ack messages decode to what was encoded, the ack
// flag included, and a state's blob section follows its signed section or
// stands alone.
func TestBlobCodec(t *testing.T) {
	for _, tc := range []struct {
		key          string
		at           stamp
		deleted, ack bool
		val          []byte
	}{
		{"acme/cert/a.test", stamp{1700000000000000001, 3}, false, false, []byte("pem")},
		{"acme/ch/http-01/tok", stamp{-1, 1 << 63}, false, true, []byte{}},
		{"k", stamp{0, 0}, true, false, nil},
	} {
		msg := appendBlobMsg(nil, 1700000000000000000, tc.key, tc.at, tc.deleted, tc.ack, tc.val)
		var m message
		if err := decodeMessage(msg, &m); err != nil {
			t.Fatalf("%s: %v", tc.key, err)
		}
		b := m.blob
		if m.kind != kindBlob || string(b.key) != tc.key || b.at != tc.at || b.deleted != tc.deleted || b.ack != tc.ack || !bytes.Equal(b.val, tc.val) {
			t.Errorf("%s: decoded %+v", tc.key, b)
		}
		ack := appendBlobAckMsg(nil, 5, []byte(tc.key), tc.at, 77)
		if err := decodeMessage(ack, &m); err != nil || m.kind != kindBlobAck || string(m.ack.key) != tc.key || m.ack.at != tc.at || m.ack.router != 77 {
			t.Errorf("%s: ack decoded %+v, %v", tc.key, m.ack, err)
		}
	}
	for name, raw := range map[string][]byte{
		"alone":        appendBlobSeed(appendUvarint(nil, 0)),
		"after signed": appendBlobSeed(appendSigned(appendUvarint(nil, 0), 1, appendSignedRec(nil, "s.test", "", 1, 2))),
	} {
		var keys []string
		signed := 0
		if _, err := decodeRawState(raw, 0, func(*wireEntry) {}, func([]byte, []byte, int64, uint64) { signed++ }, func(w *wireBlob) {
			keys = append(keys, string(w.key))
		}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(keys, []string{"acme/cert/a.test", "acme/want/b.test"}) || (name == "after signed") != (signed == 1) {
			t.Errorf("%s: blobs %q, signed records %d", name, keys, signed)
		}
	}
	// An ack flag has no meaning in a state record.
	bad := append(appendUvarint(nil, 0), 0)
	bad = appendUvarint(bad, 1)
	bad = appendStr(bad, "k")
	bad = append(bad, blobAck, 0)
	bad = appendU64(bad, 0)
	bad = appendStr(bad, "")
	if _, err := decodeRawState(bad, 0, func(*wireEntry) {}, nil, func(*wireBlob) {}); err != errBadValue {
		t.Errorf("ack flag in a state: %v; want errBadValue", err)
	}
}

// FuzzDecodeBlob: a blob message decodes to something that re-encodes to
// the same message (the codec is a bijection on what it accepts).
func FuzzDecodeBlob(f *testing.F) {
	f.Add(appendBlobMsg(nil, 99, "acme/cert/a.test", stamp{100, 2}, false, true, []byte("v")))
	f.Add(appendBlobMsg(nil, 0, "x", stamp{-1, 0}, true, false, nil))
	f.Add(appendBlobAckMsg(nil, 0, []byte("x"), stamp{1, 1}, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m message
		if err := decodeMessage(b, &m); err != nil || m.kind != kindBlob {
			return
		}
		w := m.blob
		if len(w.key) == 0 || len(w.key) > maxBlobKeyLen || len(w.val) > MaxBlobLen {
			t.Fatalf("key %d bytes, value %d bytes", len(w.key), len(w.val))
		}
		var m2 message
		again := appendBlobMsg(nil, 0, string(w.key), w.at, w.deleted, w.ack, w.val)
		if err := decodeMessage(again, &m2); err != nil {
			t.Fatalf("re-encoded blob does not decode: %v", err)
		}
		w2 := m2.blob
		if !bytes.Equal(w.key, w2.key) || w.at != w2.at || w.deleted != w2.deleted || w.ack != w2.ack || !bytes.Equal(w.val, w2.val) {
			t.Fatalf("decode(encode(decode(b))) != decode(b):\n%+v\n%+v", w, w2)
		}
	})
}
