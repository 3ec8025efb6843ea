package router

import (
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// request is the protocol-neutral view of a client request that the
// forwarding core needs: every front (fasthttp for HTTP/1.1, net/http for
// h2, the uwsgi front's vars) fills one; the vars encoder
// (uwsgi.AppendVars) and the HTTP encoder (encode.go) read it. Nothing in
// it may be retained after the request ends.
type request = uwsgi.Request

// hdr is one request header as received. Slices alias the front's buffers.
type hdr = uwsgi.Field
