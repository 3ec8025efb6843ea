package router

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// Errors of the forwarding path. They are preallocated sentinels: the hot
// path never formats an error. statusOf maps each to the client's status in
// one place.
var (
	errBadRequest     = errors.New("router: malformed request")
	errBadHost        = errors.New("router: bad host")
	errVarsTooLarge   = errors.New("router: uwsgi vars larger than 64 KiB")
	errBodyTooLarge   = errors.New("router: request body too large")
	errNoPool         = errors.New("router: no pool for host")
	errNoNode         = errors.New("router: pool has no usable node")
	errAllFailed      = errors.New("router: every node refused the connection")
	errConnectTimeout = errors.New("router: backend connect timed out")
	errBackendTimeout = errors.New("router: backend response timed out")
	errBadResponse    = errors.New("router: backend sent an invalid response")
	errBackendWrite   = errors.New("router: backend write failed")
	errClientBody     = errors.New("router: reading the client body failed")
	// The chunked-body refusals (internal/chunked), counted by reason in
	// fastrouter_http_rejected_total (bodyReason).
	errChunkLine      = errors.New("router: a chunk-size line over 4 KiB (chunk extensions)")
	errChunkFraming   = errors.New("router: malformed chunked body")
	errChunkTrailer   = errors.New("router: chunked trailer section too large or with a framing field")
	errChunkTooLarge  = errors.New("router: chunk sizes add up to more than --max-body-bytes")
	errClientTimeout  = errors.New("router: the client body stalled for the inactivity timeout")
	errClientGone     = errors.New("router: the client abandoned the request")
	errQueueFull      = errors.New("router: every node at its in-flight cap, queue full")
	errQueueTimeout   = errors.New("router: timed out waiting for a node under its in-flight cap")
	errRawToHTTP      = errors.New("router: a uwsgi-front request cannot go to an http:// node")
	errSelfLoop       = errors.New("router: the node is one of the router's own sockets (loop)")
	errTooEarly       = errors.New("router: a request in 0-RTT early data that is not GET or HEAD")
	errNotImplemented = errors.New("router: extended CONNECT for a protocol other than websocket")
	// errLateConnect: a lazily dialled node's handshake failed at the
	// first write (upstream_uwsgi.go). proxy turns it into a failed
	// connect and tries another node; it never reaches statusOf.
	errLateConnect = errors.New("router: backend connect failed at the first write")
	// errNodeClosedEarly: the node closed or reset its connection after the
	// request went out and before any byte of an answer (response.go,
	// scanHead; upstream_raw.go). proxy sends an idempotent request whose
	// body can go again on to another node (forward.go, retryable);
	// otherwise it is a 502.
	errNodeClosedEarly = errors.New("router: backend closed the connection before answering")
)

// statusOf is the single mapping from forwarding errors to HTTP status codes
// (README, "Errors are never an empty reply").
func statusOf(err error) int {
	switch err {
	case errBadRequest, errBadHost, errClientBody, errChunkLine, errChunkFraming, errChunkTrailer:
		return 400
	case errVarsTooLarge:
		return 431
	case errClientTimeout:
		return 408
	case errTooEarly:
		return 425
	case errBodyTooLarge, errChunkTooLarge:
		return 413
	case errSpill:
		return 500
	case errNotImplemented:
		return 501
	case errNoPool:
		return 404
	case errNoNode, errQueueFull, errQueueTimeout, errShutdownCut:
		return 503
	case errConnectTimeout, errBackendTimeout:
		return 504
	case errNodeClosedEarly:
		return 502
	case errClientGone:
		// Never seen by the client; counted like nginx's 499 so an
		// abandoned request is not mistaken for a backend failure.
		return 499
	default:
		return 502
	}
}

// errorBodies are preformatted so error pages allocate nothing.
var errorBodies = map[int][]byte{
	400: []byte("400 Bad Request\n"),
	404: []byte("404 Not Found: no pool serves this host\n"),
	408: []byte("408 Request Timeout\n"),
	413: []byte("413 Content Too Large\n"),
	425: []byte("425 Too Early: retry once the handshake is complete\n"),
	431: []byte("431 Request Header Fields Too Large\n"),
	500: []byte("500 Internal Server Error\n"),
	501: []byte("501 Not Implemented\n"),
	502: []byte("502 Bad Gateway\n"),
	503: []byte("503 Service Unavailable: no usable node\n"),
	504: []byte("504 Gateway Timeout\n"),
}

// Reasons of fastrouter_backend_errors_total, as small integers so a pool
// can cache its children in an array.
const (
	reasonConnect = iota
	reasonConnectTimeout
	reasonTimeout
	reasonBadResponse
	reasonWrite
	reasonOther
	reasonLoop   // the node is the router itself (loop.go)
	reasonClosed // the node closed the connection before answering (errNodeClosedEarly)
	numReasons
)

// reasonNames are the `reason` label values, by reason.
var reasonNames = [numReasons]string{"connect", "connect_timeout", "timeout", "bad_response", "write", "other", "loop", "closed"}

// backendReason is the reason of fastrouter_backend_errors_total for err.
func backendReason(err error) int {
	switch err {
	case errAllFailed:
		return reasonConnect
	case errConnectTimeout:
		return reasonConnectTimeout
	case errBackendTimeout:
		return reasonTimeout
	case errBadResponse:
		return reasonBadResponse
	case errBackendWrite:
		return reasonWrite
	case errSelfLoop:
		return reasonLoop
	case errNodeClosedEarly:
		return reasonClosed
	}
	return reasonOther
}

// isTimeout reports a deadline expiry from net, os or fasthttp (whose
// ErrTimeout has Timeout() but is not a net.Error).
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &te) && te.Timeout())
}

// closedEarly reports a read error that says the node ended the connection
// (a FIN or a reset), as opposed to a deadline or the router closing it.
func closedEarly(err error) bool {
	return err == io.EOF || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}
