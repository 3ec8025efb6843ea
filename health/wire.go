package health

import (
	"bytes"
	"errors"
	"strings"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// ErrBadStatusLine is a probe answer that does not start with an HTTP
// status line.
var ErrBadStatusLine = errors.New("health: the node's answer is not an HTTP status line")

// ParseStatusLine reads the status code from the start of a node's answer
// ("HTTP/1.1 200 OK\r\n..."; uWSGI apps answer raw HTTP over uwsgi too).
// ok is false while b is too short to decide; err is set for anything that
// cannot become a status line. Node answers are untrusted input (fuzzed).
func ParseStatusLine(b []byte) (code int, ok bool, err error) {
	const proto = "HTTP/1."
	n := min(len(b), len(proto))
	if !bytes.Equal(b[:n], []byte(proto)[:n]) {
		return 0, false, ErrBadStatusLine
	}
	// "HTTP/1.x NNN" is 12 bytes; the reason phrase is not needed.
	if len(b) < 12 {
		return 0, false, nil
	}
	if (b[7] != '0' && b[7] != '1') || b[8] != ' ' {
		return 0, false, ErrBadStatusLine
	}
	for _, c := range b[9:12] {
		if c < '0' || c > '9' {
			return 0, false, ErrBadStatusLine
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || (len(b) > 12 && b[12] != ' ' && b[12] != '\r' && b[12] != '\n') {
		return 0, false, ErrBadStatusLine
	}
	return code, true, nil
}

// uwsgiRequest encodes a GET of path for host as a uwsgi packet with the
// node's modifiers: the vars a WSGI app needs to route it, marked as a
// health probe by its User-Agent.
func uwsgiRequest(m1, m2 uint8, path, host string) []byte {
	b := uwsgi.AppendHeader(make([]byte, 0, 256), uwsgi.Header{Modifier1: m1, Modifier2: m2})
	p, q, _ := strings.Cut(path, "?")
	for _, kv := range [...][2]string{
		{"REQUEST_METHOD", "GET"}, {"REQUEST_URI", path}, {"PATH_INFO", p}, {"QUERY_STRING", q},
		{"SCRIPT_NAME", ""}, {"SERVER_PROTOCOL", "HTTP/1.1"}, {"SERVER_NAME", host}, {"SERVER_PORT", "80"},
		{"REQUEST_SCHEME", "http"}, {"REMOTE_ADDR", "127.0.0.1"}, {"REMOTE_PORT", "0"},
		{"HTTP_HOST", host}, {"HTTP_USER_AGENT", "fastrouter-health"},
	} {
		b = uwsgi.AppendVarString(b, kv[0], kv[1])
	}
	uwsgi.PutHeader(b, uwsgi.Header{Modifier1: m1, Size: uint16(len(b) - uwsgi.HeaderLen), Modifier2: m2})
	return b
}
