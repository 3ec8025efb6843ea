"""WSGI app for fastrouter's integration tests (python3 stdlib only).

/            -> "node=<NODE_ID>"
/env, */env  -> JSON of the string vars the app received
/upload      -> reads the body, returns "<bytes> <sha256>"
/download    -> ?size=N streams N pattern bytes; &cl=1 sends Content-Length
/slow        -> reads any body, ?ms=N sleeps (times $SLOW_FACTOR, default 1), then "slow node=<NODE_ID>"
                ("<bytes> bytes, slow node=<NODE_ID>" when a body came)
/stream      -> a body without end: "tick\n" every ?ms=N (default 200) for ever
/status      -> ?code=N answers that status
/health      -> 500 while the file named by $HEALTH_FAIL_FILE exists, else 200
/ws          -> WebSocket echo (uWSGI's websocket API): each message comes back
                prefixed with "<NODE_ID>:"
/hints       -> a 103 Early Hints with a Link header, then (raw bytes: WSGI has
                no interim responses) the final "200 final"
/selfchunk   -> Transfer-Encoding: chunked set by the app, which chunks its body
                itself ("hello world")
/rawstatus   -> ?s=TEXT answers the status line TEXT verbatim (e.g. 000)
/hop         -> a 200 with hop-by-hop headers (Connection naming X-Secret,
                Keep-Alive, Proxy-Connection, Upgrade, TE, Trailer) and X-Kept
/close       -> a 200 with "Connection: close"
/latehead    -> Content-Length 4, the head at once, the body "late" ?ms=N later
                (an --http11-socket node sends it even to a HEAD)
"""
import hashlib
import json
import os
import time
from urllib.parse import parse_qs

NODE = os.environ.get("NODE_ID", "?")
SLOW_FACTOR = float(os.environ.get("SLOW_FACTOR", "1"))
CHUNK = bytes(range(256)) * 256  # 64 KiB


def pattern(n):
    while n > 0:
        part = CHUNK[: min(n, len(CHUNK))]
        n -= len(part)
        yield part


def application(env, start):
    path = env.get("PATH_INFO", "")
    q = parse_qs(env.get("QUERY_STRING", ""))
    if path.startswith("/env") or path.endswith("/env"):
        body = json.dumps({k: v for k, v in env.items() if isinstance(v, str)}).encode()
        start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/upload":
        h = hashlib.sha256()
        total = 0
        inp = env["wsgi.input"]
        while True:
            b = inp.read(65536)
            if not b:
                break
            total += len(b)
            h.update(b)
        start("200 OK", [("Content-Type", "text/plain")])
        return [("%d %s" % (total, h.hexdigest())).encode()]
    if path == "/download":
        n = int(q.get("size", ["0"])[0])
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl"):
            headers.append(("Content-Length", str(n)))
        start("200 OK", headers)
        return pattern(n)
    if path == "/slow":
        got = len(env["wsgi.input"].read())
        time.sleep(int(q.get("ms", ["1000"])[0]) * SLOW_FACTOR / 1000.0)
        start("200 OK", [("Content-Type", "text/plain")])
        if got:
            return [("%d bytes, slow node=%s" % (got, NODE)).encode()]
        return [("slow node=%s" % NODE).encode()]
    if path == "/stream":
        ms = int(q.get("ms", ["200"])[0])
        start("200 OK", [("Content-Type", "text/plain")])

        def ticks():
            while True:
                yield b"tick\n"
                time.sleep(ms / 1000.0)

        return ticks()
    if path == "/status":
        code = int(q.get("code", ["200"])[0])
        start("%d X" % code, [("Content-Type", "text/plain")])
        return [b"status"]
    if path == "/ws":
        import uwsgi  # only inside uWSGI

        uwsgi.websocket_handshake()
        while True:
            try:
                msg = uwsgi.websocket_recv()
            except IOError:
                return []
            uwsgi.websocket_send(NODE.encode() + b":" + msg)
    if path == "/hints":
        start("103 Early Hints", [("Link", "</style.css>; rel=preload; as=style")])
        return [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfinal"]
    if path == "/selfchunk":
        start("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        return [b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"]
    if path == "/rawstatus":
        start(q.get("s", ["200 OK"])[0], [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"raw"]
    if path == "/hop":
        start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"),
                         ("Connection", "keep-alive, X-Secret"), ("Keep-Alive", "timeout=5"),
                         ("Proxy-Connection", "keep-alive"), ("Upgrade", "h2c"), ("TE", "trailers"),
                         ("Trailer", "X-T"), ("X-Secret", "1"), ("X-Kept", "yes")])
        return [b"ok"]
    if path == "/close":
        start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"), ("Connection", "close")])
        return [b"ok"]
    if path == "/latehead":
        start("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])

        def late():
            yield b""  # uWSGI sends the head now
            time.sleep(int(q.get("ms", ["20"])[0]) / 1000.0)
            yield b"late"
        return late()
    if path == "/health":
        fail = os.environ.get("HEALTH_FAIL_FILE")
        if fail and os.path.exists(fail):
            start("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"unhealthy"]
        start("200 OK", [("Content-Type", "text/plain")])
        return [b"healthy"]
    start("200 OK", [("Content-Type", "text/plain")])
    return [("node=%s" % NODE).encode()]
