"""The page's server, from the standard library: its own static files and one run's views.

    GET  /, /look.js, /look.css    the page (lecun_jax/look/static)
    GET  /api/run                  the run: data, model, seeds, each seed's test error
    GET  /api/mistakes?seed=K      the test digits seed K gets wrong
    POST /api/look                 a drawing -> the digit, every layer, every seed's answer

Anything else is a 404; a malformed request a 400 (an oversized body a 413)
with ``{"error": "<one line>"}``; the server keeps serving either way. Requests
naming another host than the one bound are refused (400), so a web page
elsewhere cannot reach a server on 127.0.0.1 through a DNS name of its own.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lecun_jax.look import views as views_lib

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/": ("index.html", "text/html"), "/look.js": ("look.js", "text/javascript"),
         "/look.css": ("look.css", "text/css")}
MAX_BODY = 64 * 1024  # a drawing's strokes take a few KiB
DRAIN = 1024 * 1024  # a refused body up to this size is read and dropped, so that the client reads the answer
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' data:"}


class RequestError(ValueError):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    """One request; ``server.views`` answers, ``server.hosts`` are the Host headers accepted."""

    server_version = "lecun_jax.look"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart (Nagle with delayed ACKs)

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def do_HEAD(self):
        self._answer(self._get)  # _send writes no body for HEAD

    def do_PUT(self):
        self._answer(self._refuse)

    do_DELETE = do_PATCH = do_PUT

    def _answer(self, route):
        try:
            self._check_host()
            status, body, kind = route(urllib.parse.urlsplit(self.path))
        except RequestError as e:
            status, body, kind = e.status, _json({"error": str(e)}), "application/json"
        except views_lib.LookError as e:
            status, body, kind = HTTPStatus.BAD_REQUEST, _json({"error": str(e)}), "application/json"
        except Exception as e:  # a bug: one line here and to the page, and the server goes on
            message = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            print(f"lecun_jax.look: {self.command} {self.path}: {message}", file=sys.stderr, flush=True)
            status, body, kind = HTTPStatus.INTERNAL_SERVER_ERROR, _json({"error": message}), "application/json"
        self._send(status, body, kind)

    def _check_host(self):
        hosts = self.server.hosts
        if hosts is not None and self.headers.get("Host", "").lower() not in hosts:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Host {self.headers.get('Host')!r}: this server answers {sorted(hosts)[0]}")

    def _get(self, url):
        if url.path in PAGES:
            name, kind = PAGES[url.path]
            return HTTPStatus.OK, (STATIC / name).read_bytes(), f"{kind}; charset=utf-8"
        if url.path == "/api/run":
            return HTTPStatus.OK, _json(self.server.views.describe()), "application/json"
        if url.path == "/api/mistakes":
            return HTTPStatus.OK, _json(self.server.views.mistakes_of(_seed_param(url.query))), "application/json"
        raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def _post(self, url):
        if url.path != "/api/look":
            self._discard_body()
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {url.path}")
        return HTTPStatus.OK, _json(self.server.views.look(self._json_body())), "application/json"

    def _refuse(self, url):
        self._discard_body()
        raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} {url.path}: only GET and POST /api/look")

    def _length(self) -> int:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise RequestError(HTTPStatus.BAD_REQUEST, "a JSON body with its Content-Length is needed") from None
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the connection carries no other request after this one
            self._drop(length)
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body of {length} bytes; at most {MAX_BODY}")
        return length

    def _drop(self, length: int):
        """Reads and drops a refused body of moderate size: a socket closed with unread data
        resets the connection, and the client would lose the answer."""
        left = length if 0 < length <= DRAIN else 0
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)

    def _discard_body(self):
        try:
            self.rfile.read(self._length())
        except RequestError:
            pass  # the connection closes after the answer

    def _json_body(self):
        raw = self.rfile.read(self._length())
        try:
            return json.loads(raw, parse_constant=_no_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {str(e).splitlines()[0]}") from None

    def _send(self, status: HTTPStatus, body: bytes, kind: str):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in HEADERS.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # quiet: a page asks many times a second while one draws


def _no_constant(name: str):
    """JSON's NaN and Infinity extensions are no numbers here."""
    raise ValueError(f"{name} is not a finite number")


def _seed_param(query: str):
    values = urllib.parse.parse_qs(query).get("seed", ["0"])
    try:
        return int(values[-1])
    except ValueError:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"seed={values[-1]!r}: a whole number") from None


def _json(data) -> bytes:
    return json.dumps(data, allow_nan=False, separators=(",", ":")).encode()


def accepted_hosts(host: str, port: int) -> set[str] | None:
    """The Host headers a server bound to ``host`` answers: its loopback names, or any
    (None) where it serves beyond this machine (--host) and cannot know its names."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")}


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(views, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server of ``views`` on ``host``:``port`` (0: any free port), not yet serving."""
    server = (_IPv6Server if ":" in host else ThreadingHTTPServer)((host, port), Handler)
    server.daemon_threads = True
    server.views = views
    server.hosts = accepted_hosts(host, server.server_address[1])
    return server
