"""The trading page at ``/`` and its files under ``/static/``: plain ASGI, no template engine.

Rules of this module:

* The files ship inside the package (``gateway/web/``) and are read once, when
  the application is built: a request never touches the disk, so serving them
  never blocks the trio thread.
* ``/`` (and ``/index.html``) is ``index.html`` with the server's own settings
  filled in: the WebSocket URL (the host the browser asked for, on the
  WebSocket port: the two listeners differ, README "Two ports"), the depth
  window (``websocket.depth_levels``, which the page's checksum needs) and the
  version of the static files. It is answered ``Cache-Control: no-cache``.
* Every other file is at ``/static/<version>/<name>``, where ``<version>`` is a
  digest of all the files: its content never changes under a URL, so it is
  cached for a year (``immutable``). A stale version (a page loaded before the
  server was upgraded) is 404 with a message to reload; an unknown name is 404.
* Each answer carries its content type, an ``ETag`` (a matching
  ``If-None-Match`` gets 304), ``X-Content-Type-Options: nosniff`` and
  ``Referrer-Policy: no-referrer``; the page itself also carries a
  ``Content-Security-Policy``: its scripts and styles come only from this
  server and it connects only here and to the WebSocket listener, so a
  pasted token (kept in the browser's ``sessionStorage``) can only go there.
* ``GET`` and ``HEAD`` only; another method is 405 with ``Allow``.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any

from gateway._codes import Code
from gateway._rest._asgi import Scope, Send, error_bytes, header

STATIC = "/static/"
_PAGE_PATHS = ("/", "/index.html")
_TYPES = {
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "html": b"text/html; charset=utf-8",
    "svg": b"image/svg+xml",
    "png": b"image/png",
}
_FOREVER = b"public, max-age=31536000, immutable"
_ALLOW = b"GET, HEAD"
_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


def load_files() -> dict[str, bytes]:
    """The page's files shipped in the package, by name (``index.html``, ``app.js``...)."""
    web = files("gateway") / "web"
    return {item.name: item.read_bytes() for item in web.iterdir()
            if item.is_file() and item.name.rsplit(".", 1)[-1] in _TYPES}


class Page:
    """Serves the page and its static files.

    Args:
        files: the files by name, ``index.html`` among them (:func:`load_files`).
        websocket_url: the WebSocket listener's URL for a browser that reached
            this server as ``scope`` did (``ws://host:port/ws``), or None while
            that listener starts (it is bound after the REST one): the page is
            then 503 with ``Retry-After``.
        depth_levels: ``websocket.depth_levels``, the depth stream's window.
    """

    def __init__(
        self, files: dict[str, bytes], *, websocket_url: Callable[[Scope], str | None],
        depth_levels: int,
    ) -> None:
        index = files["index.html"]
        self._template = index.decode()
        self._assets = {name: data for name, data in files.items() if name != "index.html"}
        digest = hashlib.sha256()
        for name in sorted(self._assets):
            digest.update(name.encode() + b"\0" + self._assets[name] + b"\0")
        self.version = digest.hexdigest()[:16]
        self._etags = {name: b'"%s"' % hashlib.sha256(data).hexdigest()[:20].encode()
                       for name, data in self._assets.items()}
        self._websocket_url = websocket_url
        self._depth_levels = depth_levels

    @staticmethod
    def serves(path: str) -> bool:
        """Whether ``path`` is the page's (the front routes it here)."""
        return path in _PAGE_PATHS or path.startswith(STATIC)

    def render(self, ws_url: str) -> bytes:
        """The page, for a browser that reaches the WebSocket listener at ``ws_url``."""
        text = (self._template
                .replace("{{ws_url}}", html.escape(ws_url))
                .replace("{{depth_levels}}", str(self._depth_levels))
                .replace("{{static}}", f"{STATIC}{self.version}/"))
        return text.encode()

    async def __call__(self, scope: Scope, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if method not in ("GET", "HEAD"):
            await _answer(send, method, 405, error_bytes(
                Code.METHOD_NOT_ALLOWED, f"{method} is not allowed here; use GET or HEAD"),
                [(b"allow", _ALLOW)])
            return
        if path in _PAGE_PATHS:
            ws_url = self._websocket_url(scope)
            if ws_url is None:
                await _answer(send, method, 503, error_bytes(
                    Code.STARTING, "the server is starting: reload the page in a second"),
                    [(b"retry-after", b"1")])
                return
            body = self.render(ws_url)
            origin = ws_url.split("/ws", 1)[0]
            policy = (f"default-src 'none'; script-src 'self'; style-src 'self'; "
                      f"img-src 'self' data:; connect-src 'self' {origin}; "
                      "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
            etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:20].encode()
            await _answer(send, method, 200, body, [
                (b"content-type", _TYPES["html"]), (b"cache-control", b"no-cache"),
                (b"content-security-policy", policy.encode()), (b"etag", etag)],
                scope=scope, etag=etag)
            return
        version, _, name = path[len(STATIC):].partition("/")
        data = self._assets.get(name)
        if version != self.version or data is None:
            message = (f"no such file {path!r}" if data is None or not name else
                       "the page's files changed since this page was loaded: reload the page")
            await _answer(send, method, 404, error_bytes(Code.NOT_FOUND, message))
            return
        etag = self._etags[name]
        await _answer(send, method, 200, data, [
            (b"content-type", _TYPES[name.rsplit(".", 1)[-1]]), (b"cache-control", _FOREVER),
            (b"etag", etag)], scope=scope, etag=etag)


async def _answer(
    send: Send, method: str, status: int, body: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (), *, scope: Scope | None = None,
    etag: bytes | None = None,
) -> None:
    if scope is not None and etag is not None and _matches(header(scope, b"if-none-match"), etag):
        status, body = 304, b""
        headers = [h for h in headers if h[0] != b"content-type"]
    elif not any(name == b"content-type" for name, _ in headers):
        headers = [(b"content-type", b"application/json"), *headers]
    length = [] if status == 304 else [(b"content-length", b"%d" % len(body))]
    start: dict[str, Any] = {"type": "http.response.start", "status": status,
                             "headers": [*headers, *_COMMON, *length]}
    await send(start)
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body,
                "more_body": False})


def _matches(given: bytes | None, etag: bytes) -> bool:
    if given is None:
        return False
    tags = [tag.strip().removeprefix(b"W/") for tag in given.split(b",")]
    return etag in tags or b"*" in tags
