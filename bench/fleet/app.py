"""WSGI app of the benchmark harness's fleet scenario (python3 stdlib only).

/work?ms=N  sleeps N ms times $FLEET_FACTOR (a node 3x slower than the
            others runs with FLEET_FACTOR=3), then answers "node=<NODE_ID>"
            with a Content-Length. The sleep stands for the app waiting on
            its database: the worker is busy, the CPU is not, so the fleet's
            capacity is its workers' time and not the shared cores'.
anything else -> 404
"""
import os
import time

NODE = ("node=%s" % os.environ.get("NODE_ID", "?")).encode()
FACTOR = float(os.environ.get("FLEET_FACTOR", "1"))
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(NODE)))]


def application(env, start):
    if env.get("PATH_INFO") != "/work":
        start("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    ms = 0.0
    for part in env.get("QUERY_STRING", "").split("&"):
        if part.startswith("ms="):
            ms = float(part[3:] or 0)
    if ms > 0:
        time.sleep(ms * FACTOR / 1000.0)
    start("200 OK", HEADERS)
    return [NODE]
