package uwsgi_test

import (
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// Tests of the vars encoder on uwsgitest.SampleRequest, from outside the
// package: uwsgitest imports uwsgi.

func TestAppendVarsIsAValidPacket(t *testing.T) {
	b, err := uwsgi.AppendVars(nil, uwsgitest.SampleRequest(), 5, 7)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := uwsgi.ParseHeader(b)
	if h.Modifier1 != 5 || h.Modifier2 != 7 || int(h.Size) != len(b)-4 {
		t.Fatalf("header %+v for %d bytes", h, len(b))
	}
	if err := uwsgi.ValidVars(b[4:]); err != nil {
		t.Fatal(err)
	}
}

func TestAppendVarsTooLarge(t *testing.T) {
	r := uwsgitest.SampleRequest()
	big := make([]byte, 40000)
	r.Headers = append(r.Headers, uwsgi.Field{[]byte("X-A"), big}, uwsgi.Field{[]byte("X-B"), big})
	if _, err := uwsgi.AppendVars(nil, r, 0, 0); err != uwsgi.ErrTooLarge {
		t.Fatalf("err = %v; want uwsgi.ErrTooLarge", err)
	}
}

func BenchmarkAppendVars(b *testing.B) {
	r := uwsgitest.SampleRequest()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = uwsgi.AppendVars(buf[:0], r, 0, 0)
	}
}
