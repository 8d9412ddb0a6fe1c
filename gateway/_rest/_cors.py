"""CORS for the REST API: which web pages may read its answers, as plain decisions.

Rules of this module:

* The allowed origins are ``limits.allowed_origins``, the same list that
  guards the WebSocket ``Origin``: one list says which web pages may use this
  server, for both listeners. Empty allows every origin, as it does for the
  WebSockets: the API authenticates with bearer tokens, never cookies, so a
  page on another origin can only do what the token it holds allows.
* The answer depends on the request's ``Origin``, so every answer carries
  ``Vary: Origin``; an allowed origin is echoed in
  ``Access-Control-Allow-Origin`` (never ``*``, which caches could not tell
  apart); a refused one gets no CORS header at all, so the browser keeps the
  answer from the page.
* A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an
  allowed origin is answered 204 with the methods and headers the API uses
  (``Authorization``, ``Content-Type``), cached by the browser for
  :data:`MAX_AGE` seconds; from a refused origin, 403 ``origin_not_allowed``.
* ``Retry-After`` is exposed, so a page can read when to retry after a 429.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway._rest._asgi import Headers

MAX_AGE = 600
"""Seconds a browser may cache a preflight answer (Chromium caps it at 7200)."""
METHODS = b"GET, POST, PATCH, DELETE, OPTIONS"
HEADERS = b"Authorization, Content-Type"
_VARY = (b"vary", b"Origin")


class CorsPolicy:
    """Answers the CORS questions for a set of allowed origins (empty: any)."""

    __slots__ = ("_origins",)

    def __init__(self, origins: Iterable[str]) -> None:
        self._origins = frozenset(origin.encode("latin-1") for origin in origins)

    def allows(self, origin: bytes) -> bool:
        return not self._origins or origin in self._origins

    def headers(self, origin: bytes | None) -> Headers:
        """The CORS headers of an ordinary answer to a request from ``origin``."""
        if origin is None or not self.allows(origin):
            return [_VARY]
        return [_VARY, (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", b"Retry-After")]

    def preflight(self, origin: bytes) -> Headers | None:
        """The headers of a preflight answer, or None when ``origin`` is refused."""
        if not self.allows(origin):
            return None
        return [
            _VARY, (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", METHODS),
            (b"access-control-allow-headers", HEADERS),
            (b"access-control-max-age", b"%d" % MAX_AGE),
        ]
