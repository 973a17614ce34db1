"""A fault-injecting HTTP file server on 127.0.0.1 for the download tests.

`server.files[path] = bytes` publishes a file; `server.faults[path] = [...]` queues
faults consumed one per request before normal service resumes:

- "drop":  headers with the full length, half of the body, then the connection closes;
- "500" / "503" / "404": that status;
- "ignore-range": a 200 with the whole body even when a Range was asked for;
- "html": a 200 with an HTML page (what dead hosts and file-sharing sites send).

Normal service honours `Range: bytes=N-` with a 206. Every request is logged in
`server.requests` as (path, Range header or None). Runs in a daemon thread; `stop()`
shuts it down (bounded by the handler's socket timeout).
"""
from __future__ import annotations

import re
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-$")


class _Handler(BaseHTTPRequestHandler):
    server: "FaultServer"
    timeout = 10  # seconds; bounds every read so shutdown never hangs
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        srv = self.server
        path = self.path.split("?", 1)[0]
        range_header = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((path, range_header))
            fault = srv.faults[path].pop(0) if srv.faults[path] else None
        body = srv.files.get(path)
        if fault == "html":
            page = b"<html><body>Quota exceeded, please confirm the download</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if fault in ("500", "503", "404") or body is None:
            status = int(fault) if fault else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        start = 0
        match = _RANGE.match(range_header or "")
        if match and fault != "ignore-range":
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        if fault == "drop":
            self.send_header("Connection", "close")
        self.end_headers()
        if fault == "drop":
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> "FaultServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)

    def hits(self, path: str) -> list[str | None]:
        with self.lock:
            return [rng for p, rng in self.requests if p == path]
