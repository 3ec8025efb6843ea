package uwsgi

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
)

// unhex decodes hex written the way the captures below print packets: spaces,
// newlines and '|' separators are ignored. It panics on bad input, which is
// a bug in the test.
func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "", "\n", "", "\t", "").Replace(s))
	if err != nil {
		panic("BUG: bad hex in test: " + err.Error())
	}
	return b
}

// vars builds a vars block from key/value pairs.
func vars(kv ...string) []byte {
	b := []byte{}
	for i := 0; i < len(kv); i += 2 {
		b = AppendVarString(b, kv[i], kv[i+1])
	}
	return b
}

// record is one decoded var.
type record struct{ k, v string }

// decodeAll walks a block with NextVar and returns the records read before
// the first error.
func decodeAll(b []byte) ([]record, error) {
	var out []record
	for off := 0; off < len(b); {
		k, v, next, err := NextVar(b, off)
		if err != nil {
			return out, err
		}
		out = append(out, record{string(k), string(v)})
		off = next
	}
	return out, nil
}

func TestHeader(t *testing.T) {
	cases := []struct {
		name string
		h    Header
		wire string
	}{
		{"zero", Header{}, "00 0000 00"},
		{"captured subscribe (§2.2)", Header{Modifier1: 224, Size: 0x65}, "e0 6500 00"},
		{"captured GET /plain (§1.8)", Header{Modifier1: 0, Size: 0x0126}, "00 2601 00"},
		{"unsubscribe", Header{Modifier1: 224, Size: 0x0165, Modifier2: 1}, "e0 6501 01"},
		{"all ones", Header{Modifier1: 255, Size: 0xffff, Modifier2: 255}, "ff ffff ff"},
		{"size is little-endian", Header{Modifier1: 5, Size: 0x1234, Modifier2: 7}, "05 3412 07"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(tc.wire)
			if got := AppendHeader(nil, tc.h); !bytes.Equal(got, want) {
				t.Errorf("AppendHeader(%+v) = % x; want % x", tc.h, got, want)
			}
			if got := AppendHeader([]byte("pre"), tc.h); !bytes.Equal(got, append([]byte("pre"), want...)) {
				t.Errorf("AppendHeader(\"pre\", %+v) = % x; want the prefix kept", tc.h, got)
			}
			buf := []byte{0xaa, 0xaa, 0xaa, 0xaa, 0xaa}
			PutHeader(buf, tc.h)
			if !bytes.Equal(buf[:4], want) || buf[4] != 0xaa {
				t.Errorf("PutHeader(%+v) wrote % x; want % x and byte 4 untouched", tc.h, buf, want)
			}
			// ParseHeader reads only the first 4 bytes.
			got, err := ParseHeader(append(want, 1, 2, 3))
			if err != nil || got != tc.h {
				t.Errorf("ParseHeader(% x) = %+v, %v; want %+v, nil", want, got, err, tc.h)
			}
		})
	}
}

func TestParseHeaderShort(t *testing.T) {
	for n := 0; n < HeaderLen; n++ {
		if h, err := ParseHeader(make([]byte, n)); err != ErrShortHeader || h != (Header{}) {
			t.Errorf("ParseHeader(%d bytes) = %+v, %v; want zero, ErrShortHeader", n, h, err)
		}
	}
	if _, err := ParseHeader(nil); err != ErrShortHeader {
		t.Errorf("ParseHeader(nil) error = %v; want ErrShortHeader", err)
	}
}

// varsCase is a vars block and how it must decode. The cases also seed the
// fuzz targets.
type varsCase struct {
	name  string
	block []byte
	want  []record // records decoded before the error (all of them if err is nil)
	err   error    // from the NextVar loop and from ValidVars
}

func varsCases() []varsCase {
	maxVal := strings.Repeat("v", 0xffff)
	return []varsCase{
		{"empty block", []byte{}, nil, nil},
		{"nil block", nil, nil, nil},
		{"one record", vars("k", "v"), []record{{"k", "v"}}, nil},
		{"empty value", vars("SCRIPT_NAME", ""), []record{{"SCRIPT_NAME", ""}}, nil},
		{"empty values in a row", vars("a", "", "b", "", "c", ""), []record{{"a", ""}, {"b", ""}, {"c", ""}}, nil},
		{"duplicate keys allowed", vars("HTTP_X", "a", "HTTP_X", "b"), []record{{"HTTP_X", "a"}, {"HTTP_X", "b"}}, nil},
		{"binary bytes", vars("\x00\xff", "\x00\r\n\x00"), []record{{"\x00\xff", "\x00\r\n\x00"}}, nil},
		{"lengths are little-endian", append(unhex("0100 61 0001"), strings.Repeat("x", 256)...),
			[]record{{"a", strings.Repeat("x", 256)}}, nil},
		{"block of exactly 65535 bytes", vars("k", maxVal[:0xffff-5]), []record{{"k", maxVal[:0xffff-5]}}, nil},
		{"block over 65535 bytes", vars("k", maxVal), []record{{"k", maxVal}}, ErrTooLarge},
		{"empty key", unhex("0000 0000"), nil, ErrEmptyKey},
		{"empty key after a record", append(vars("a", "1"), 0, 0, 1, 0, 'x'), []record{{"a", "1"}}, ErrEmptyKey},
		{"one byte", []byte{1}, nil, ErrTruncated},
		{"key overruns", unhex("0300 61"), nil, ErrTruncated},
		{"no value length", unhex("0100 61"), nil, ErrTruncated},
		{"half a value length", unhex("0100 61 00"), nil, ErrTruncated},
		{"value overruns", unhex("0100 61 0500 62"), nil, ErrTruncated},
		{"key length 0xffff", unhex("ffff 616263"), nil, ErrTruncated},
		{"trailing byte", append(vars("a", "1"), 7), []record{{"a", "1"}}, ErrTruncated},
	}
}

func TestVars(t *testing.T) {
	for _, tc := range varsCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeAll(tc.block)
			wantErr := tc.err
			if wantErr == ErrTooLarge {
				wantErr = nil // only ValidVars checks the total size
			}
			if err != wantErr {
				t.Errorf("NextVar loop error = %v; want %v", err, wantErr)
			}
			if !equalRecords(got, tc.want) {
				t.Errorf("NextVar loop decoded %q; want %q", short(got), short(tc.want))
			}
			if err := ValidVars(tc.block); err != tc.err {
				t.Errorf("ValidVars = %v; want %v", err, tc.err)
			}
			if tc.err == nil {
				// Encoding the records again gives the same bytes.
				re := []byte{}
				for _, r := range got {
					re = AppendVar(re, []byte(r.k), []byte(r.v))
				}
				if !bytes.Equal(re, tc.block) {
					t.Errorf("re-encoded % .40x; want % .40x", re, tc.block)
				}
			}
		})
	}
}

func equalRecords(a, b []record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// short trims long records for error messages.
func short(rs []record) []record {
	out := make([]record, len(rs))
	for i, r := range rs {
		if len(r.v) > 20 {
			r.v = r.v[:20] + "…"
		}
		out[i] = r
	}
	return out
}

// TestTruncatedAtEveryOffset cuts a block at each offset: only the record
// boundaries give a valid block, every other cut is ErrTruncated.
func TestTruncatedAtEveryOffset(t *testing.T) {
	block := vars("REQUEST_METHOD", "GET", "SCRIPT_NAME", "", "k", "v", "HTTP_X", "a", "HTTP_X", "b")
	boundaries := map[int]bool{0: true}
	for off := 0; off < len(block); {
		_, _, next, err := NextVar(block, off)
		if err != nil {
			t.Fatalf("NextVar(full block, %d): %v", off, err)
		}
		boundaries[next] = true
		off = next
	}
	if !boundaries[len(block)] {
		t.Fatalf("last record does not end at len(block) = %d", len(block))
	}
	for i := 0; i <= len(block); i++ {
		err := ValidVars(block[:i])
		var want error
		if !boundaries[i] {
			want = ErrTruncated
		}
		if err != want {
			t.Errorf("ValidVars(block[:%d]) = %v; want %v", i, err, want)
		}
	}
}

func TestNextVarOffsets(t *testing.T) {
	block := vars("a", "1", "bb", "")
	cases := []struct {
		name       string
		off        int
		key, val   string
		next       int
		err        error
		wantNilKey bool
	}{
		{"first record", 0, "a", "1", 6, nil, false},
		{"second record, empty value", 6, "bb", "", 12, nil, false},
		{"at the end", 12, "", "", 12, ErrTruncated, true},
		{"past the end", 20, "", "", 20, ErrTruncated, true},
		{"inside a record", 1, "", "", 3, ErrTruncated, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, v, next, err := NextVar(block, tc.off)
			if err != tc.err || string(k) != tc.key || string(v) != tc.val || (err == nil && next != tc.next) {
				t.Errorf("NextVar(block, %d) = %q, %q, %d, %v; want %q, %q, %d, %v",
					tc.off, k, v, next, err, tc.key, tc.val, tc.next, tc.err)
			}
			if tc.wantNilKey && (k != nil || v != nil) {
				t.Errorf("NextVar(block, %d) returned non-nil slices with error %v", tc.off, err)
			}
		})
	}
}

// TestNextVarAliasing checks that key and value alias the input and that
// their capacity ends at their length, so appending to one of them cannot
// overwrite the rest of the block.
func TestNextVarAliasing(t *testing.T) {
	block := vars("key", "value", "next", "x")
	k, v, _, err := NextVar(block, 0)
	if err != nil {
		t.Fatal(err)
	}
	if &k[0] != &block[2] || &v[0] != &block[7] {
		t.Error("key/value do not alias the block")
	}
	if cap(k) != len(k) || cap(v) != len(v) {
		t.Errorf("cap(key) = %d, cap(val) = %d; want %d, %d", cap(k), cap(v), len(k), len(v))
	}
	_ = append(k, 'X')
	_ = append(v, 'X')
	if want := vars("key", "value", "next", "x"); !bytes.Equal(block, want) {
		t.Errorf("append to key/value changed the block: % x", block)
	}
}

func TestAppendVar(t *testing.T) {
	cases := []struct {
		name     string
		key, val string
		wire     string
	}{
		{"request method", "REQUEST_METHOD", "GET", "0e00 524551554553545f4d4554484f44 0300 474554"},
		{"empty value", "SCRIPT_NAME", "", "0b00 5343524950545f4e414d45 0000"},
		{"one byte each", "k", "v", "0100 6b 0100 76"},
		{"256-byte value", "a", strings.Repeat("b", 256), "0100 61 0001" + strings.Repeat("62", 256)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(tc.wire)
			if got := AppendVar(nil, []byte(tc.key), []byte(tc.val)); !bytes.Equal(got, want) {
				t.Errorf("AppendVar(%q, %.20q) = % .40x; want % .40x", tc.key, tc.val, got, want)
			}
			if got := AppendVarString(nil, tc.key, tc.val); !bytes.Equal(got, want) {
				t.Errorf("AppendVarString(%q, %.20q) = % .40x; want % .40x", tc.key, tc.val, got, want)
			}
			if got := AppendVar([]byte{9}, []byte(tc.key), []byte(tc.val)); !bytes.Equal(got, append([]byte{9}, want...)) {
				t.Errorf("AppendVar did not keep the dst prefix: % .40x", got)
			}
			if got, want := len(want), VarLen(len(tc.key), len(tc.val)); got != want {
				t.Errorf("VarLen(%d, %d) = %d; want %d", len(tc.key), len(tc.val), want, got)
			}
		})
	}
	if got := AppendVar(nil, []byte("k"), nil); !bytes.Equal(got, unhex("0100 6b 0000")) {
		t.Errorf("AppendVar with a nil value = % x; want an empty value", got)
	}
}

func TestAppendVarUint(t *testing.T) {
	cases := []struct {
		name string
		n    uint64
		want string
	}{
		{"zero", 0, "0"},
		{"one digit", 7, "7"},
		{"ten", 10, "10"},
		{"u16 max", 65535, "65535"},
		{"2^32", 1 << 32, "4294967296"},
		{"unix time", 1700000000, "1700000000"},
		{"19 digits", 9999999999999999999, "9999999999999999999"},
		{"u64 max", 1<<64 - 1, "18446744073709551615"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendVarUint([]byte("pre"), "cores", tc.n)
			want := append([]byte("pre"), vars("cores", tc.want)...)
			if !bytes.Equal(got, want) {
				t.Errorf("AppendVarUint(%d) = %q; want %q", tc.n, got, want)
			}
			if tc.want != strconv.FormatUint(tc.n, 10) {
				t.Fatalf("BUG: case %q wants %q", tc.name, tc.want)
			}
		})
	}
}

// TestPlainRequestLayout checks the record layout against the bytes the
// uWSGI 2.0 http router sent for "GET /plain" (plugins/http/http.c
// http_headers_parse), captured on loopback:
//
//	00 26 01 00 | 0e00 "REQUEST_METHOD" 0300 "GET" | 0b00 "REQUEST_URI" 0600 "/plain" | 0900 "PATH_INFO" ...
func TestPlainRequestLayout(t *testing.T) {
	want := unhex("00 2601 00" +
		"| 0e00" + hex.EncodeToString([]byte("REQUEST_METHOD")) + "0300" + hex.EncodeToString([]byte("GET")) +
		"| 0b00" + hex.EncodeToString([]byte("REQUEST_URI")) + "0600" + hex.EncodeToString([]byte("/plain")) +
		"| 0900" + hex.EncodeToString([]byte("PATH_INFO")))
	b := AppendHeader(nil, Header{Modifier1: ModWSGI, Size: 0x0126})
	b = AppendVarString(b, "REQUEST_METHOD", "GET")
	b = AppendVar(b, []byte("REQUEST_URI"), []byte("/plain"))
	b = AppendVarString(b, "PATH_INFO", "/plain")
	if !bytes.HasPrefix(b, want) {
		t.Fatalf("encoded\n% x\nwant prefix\n% x", b, want)
	}
	if h, _ := ParseHeader(b); h.Size != 294 {
		t.Errorf("captured datasize = %d; want 294", h.Size)
	}

	// The full §1.8 order, built the way an encoder does: reserve the
	// header, append, then PutHeader with the size.
	b = append(b[:0], 0, 0, 0, 0)
	for _, r := range plainRequest {
		b = AppendVarString(b, r.k, r.v)
	}
	PutHeader(b, Header{Size: uint16(len(b) - HeaderLen)})
	if !bytes.HasPrefix(b, want[:4+21+21]) || b[1] != byte(len(b)-4) || b[2] != byte((len(b)-4)>>8) {
		t.Fatalf("full request header/prefix wrong: % .60x", b)
	}
	got, err := decodeAll(b[HeaderLen:])
	if err != nil || !equalRecords(got, plainRequest) {
		t.Fatalf("decoded %q, %v; want %q", got, err, plainRequest)
	}
}

// plainRequest is "GET /plain" in the uWSGI http router's order (above).
var plainRequest = []record{
	{"REQUEST_METHOD", "GET"}, {"REQUEST_URI", "/plain"}, {"PATH_INFO", "/plain"}, {"QUERY_STRING", ""},
	{"SERVER_PROTOCOL", "HTTP/1.1"}, {"SCRIPT_NAME", ""}, {"SERVER_NAME", "router"}, {"SERVER_PORT", "8080"},
	{"UWSGI_ROUTER", "http"}, {"REMOTE_ADDR", "127.0.0.1"}, {"REMOTE_PORT", "40000"},
	{"HTTP_HOST", "example.com"}, {"HTTP_USER_AGENT", "curl/8.5.0"}, {"HTTP_ACCEPT", "*/*"},
}
