"""``audiofm serve``: a local web page to search an indexed collection by text and listen.

Standard library only (:class:`http.server.ThreadingHTTPServer`). Routes:

* ``/`` — the page (``static/index.html`` + ``app.js`` + ``style.css``, package data);
* ``/api/search?q=TEXT&k=N`` — JSON ``{"query", "k", "results": [{"rank", "score", "path",
  "duration", "audio"}]}`` (``path`` relative to the collection root, ``audio`` the URL below);
* ``/api/info`` — JSON: number of files, model name, index directory name;
* ``/audio/<n>`` — file ``n`` of the index (by position, never by a path from the request), with
  its audio Content-Type and single-range ``Range`` requests (206), so players can seek.

The model is loaded once (by :meth:`Collection.open`) and queries run one at a time under a
lock. The default address is 127.0.0.1: only this machine can connect, and a loopback server
answers only requests whose Host header is a loopback name (no DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .collection import Collection

__all__ = ["CONTENT_TYPES", "MAX_K", "make_server"]

MAX_K = 100
CONTENT_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg",
                 ".mp3": "audio/mpeg", ".aiff": "audio/aiff", ".aif": "audio/aiff", ".au": "audio/basic"}
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/static/style.css": ("style.css", "text/css; charset=utf-8")}
_AUDIO = re.compile(r"^/audio/(\d{1,9})$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 16


def _static(name: str) -> bytes:
    return resources.files("audiofm.retrieval").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = "audiofm-serve"
    collection: Collection
    lock: threading.Lock
    allowed_hosts: frozenset[str]  # empty: any Host (the server listens beyond loopback)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per request
        pass

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_GET(self) -> None:
        self._route(body=True)

    def _route(self, body: bool) -> None:
        url = urlsplit(self.path)
        if self.allowed_hosts and self.headers.get("Host", "").lower() not in self.allowed_hosts:
            # a loopback server answers only requests addressed to loopback names, so a web page
            # whose domain resolves to 127.0.0.1 (DNS rebinding) cannot read the collection
            return self._json(HTTPStatus.FORBIDDEN, {"error": "unexpected Host header"}, body)
        try:
            if url.path in _STATIC:
                name, ctype = _STATIC[url.path]
                self._send(HTTPStatus.OK, _static(name), ctype, body)
            elif url.path == "/api/search":
                self._search(parse_qs(url.query), body)
            elif url.path == "/api/info":
                c = self.collection
                self._json(HTTPStatus.OK, {"files": len(c), "model": c.model.name, "index": c.index_dir.name}, body)
            elif m := _AUDIO.match(url.path):
                self._audio(int(m.group(1)), body)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"}, body)
        except (BrokenPipeError, ConnectionResetError):  # the browser stopped reading (seek, page closed)
            pass

    def _search(self, query: dict[str, list[str]], body: bool) -> None:
        q = (query.get("q") or [""])[0].strip()
        try:
            k = int((query.get("k") or ["10"])[0])
        except ValueError:
            k = 0
        if not q:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": "empty query: pass q=TEXT"}, body)
        if not 1 <= k <= MAX_K:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": f"k must be an integer in 1..{MAX_K}"}, body)
        with self.lock:
            hits = self.collection.search(q, k)
        results = [{"rank": h.rank, "score": h.score, "path": self.collection.entries[h.position].path,
                    "duration": h.duration, "audio": f"/audio/{h.position}"} for h in hits]
        self._json(HTTPStatus.OK, {"query": q, "k": k, "results": results}, body)

    def _audio(self, n: int, body: bool) -> None:
        c = self.collection
        if n >= len(c):
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no file {n} in this index of {len(c)} files"}, body)
        path = c.path(n)
        try:
            f = path.open("rb")
        except OSError:
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"file {n} ({c.entries[n].path}) is gone; re-run "
                                                              "audiofm index"}, body)
        with f:
            size = path.stat().st_size
            start, end = 0, size - 1
            status = HTTPStatus.OK
            header = self.headers.get("Range")
            if header and "," not in header:  # several ranges: answered with the whole file (RFC 9110 allows it)
                r = _parse_range(header, size)
                if r is None:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = r
                status = HTTPStatus.PARTIAL_CONTENT
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if not body:
                return
            f.seek(start)
            left = end - start + 1
            while left > 0:
                data = f.read(min(_CHUNK, left))
                if not data:
                    break
                self.wfile.write(data)
                left -= len(data)

    def _json(self, status: HTTPStatus, obj: Any, body: bool) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", body)

    def _send(self, status: HTTPStatus, data: bytes, ctype: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if body:
            self.wfile.write(data)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=`` range within ``size`` bytes; None when it cannot
    be satisfied (or is malformed)."""
    m = _RANGE.match(header.strip())
    if m is None or size == 0 or not (m.group(1) or m.group(2)):
        return None
    a, b = m.group(1), m.group(2)
    if not a:  # the last b bytes
        n = int(b)
        return (max(0, size - n), size - 1) if n else None
    first = int(a)
    last = min(int(b), size - 1) if b else size - 1
    return (first, last) if first <= last else None


def make_server(collection: Collection, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server (not yet serving: call ``serve_forever``) of ``collection`` at ``host``:``port``
    (port 0 = a free one; ``server.server_address`` has the one bound)."""
    handler: type[_Handler] = type("Handler", (_Handler,), {"collection": collection, "lock": threading.Lock(),
                                                            "allowed_hosts": frozenset()})
    server = ThreadingHTTPServer((host, port), handler)
    if _loopback(host):
        bound = server.server_address[1]
        handler.allowed_hosts = frozenset(f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]", host))
    server.daemon_threads = True
    return server


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def page_files() -> list[Path]:
    """The page's files as installed (for checks that the package data is present)."""
    return [Path(str(resources.files("audiofm.retrieval").joinpath("static", name))) for name, _ in _STATIC.values()]
