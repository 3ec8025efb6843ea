package router

import (
	"context"
	"net"
	"strconv"

	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/valyala/fasthttp"
)

var slash = []byte("/")

// ServeRedirect answers every request on ln with 301 to the same host and
// URI over https (--http-to-https). httpsPort is the port of the HTTPS
// listener clients should reach; 443 (or 0) is left out of the URL. It
// returns nil after Shutdown.
func (rt *Router) ServeRedirect(ln net.Listener, name string, httpsPort int) error {
	t := rt.timeouts()
	suffix := ""
	if httpsPort != 0 && httpsPort != 443 {
		suffix = ":" + strconv.Itoa(httpsPort)
	}
	conns := rt.metrics.clientConns.WithLabelValues(name, "http/1.1")
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if rt.answerChallenge(ctx) { // acme.go: port 80 answers HTTP-01
				return
			}
			host := ctx.Request.Header.Host()
			if len(host) == 0 || !strict.ValidHost(host) {
				writeError(ctx, 400)
				ctx.SetConnectionClose()
				return
			}
			uri := ctx.Request.Header.RequestURI()
			if len(uri) == 0 || uri[0] != '/' {
				// Absolute-form or asterisk targets: send the client to the
				// root rather than echo them.
				uri = slash
			}
			var buf [512]byte
			u := append(buf[:0], "https://"...)
			u = append(u, uwsgi.ServerName(host)...)
			u = append(u, suffix...)
			u = append(u, uri...)
			ctx.Response.Header.SetBytesV("Location", u)
			ctx.Response.Header.SetContentTypeBytes(textPlain)
			ctx.SetStatusCode(fasthttp.StatusMovedPermanently)
			ctx.SetBodyString("301 Moved Permanently\n")
		},
		ErrorHandler: func(ctx *fasthttp.RequestCtx, _ error) {
			writeError(ctx, 400)
			ctx.SetConnectionClose()
		},
		ReadTimeout:                   t.Header,
		WriteTimeout:                  t.Timeout,
		IdleTimeout:                   t.Timeout,
		ReadBufferSize:                rt.cfg.MaxHeaderBytes,
		MaxRequestBodySize:            bodyPrefetch,
		DisableHeaderNamesNormalizing: true,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		SecureErrorLogMessage:         true,
		CloseOnShutdown:               true,
		Logger:                        fasthttpLogger{rt},
		ConnState: func(_ net.Conn, s fasthttp.ConnState) {
			switch s {
			case fasthttp.StateNew:
				conns.Inc()
			case fasthttp.StateClosed, fasthttp.StateHijacked:
				conns.Dec()
			}
		},
	}
	if !rt.addFront(redirectFront{s}) {
		return nil
	}
	if err := s.Serve(ln); err != nil && !rt.shuttingDown() {
		return err
	}
	return nil
}

// redirectFront is a --http-to-https listener as Router.Shutdown sees it.
type redirectFront struct{ srv *fasthttp.Server }

// Shutdown is fasthttp's: it stops accepting, closes idle connections and
// waits for the others until ctx ends.
func (f redirectFront) Shutdown(ctx context.Context) error { return f.srv.ShutdownWithContext(ctx) }
