"""Admission: may this WebSocket handshake become a connection, and on which endpoint?

Rules of this module:

* The checks run in this order, and the first that fails answers: shutting
  down (503), the ``Origin`` list (403), the new-connection rate of the
  client's IP (429 with ``Retry-After``), the connection count of that IP
  (429), the token (401), the endpoint (404; ``/ws/orders`` without a token:
  401), the connection count of the token's user (429). The cheap per-IP
  checks come before the token's signature is checked.
* An admitted handshake is counted against its IP and user at once, before
  the handshake completes, so a burst cannot slip past the limits; the shell
  calls :meth:`Admission.release` when the connection ends, whatever happened.
* Endpoints: ``/ws`` (subscribe by message), ``/ws/orders`` (your orders; a
  token is required), ``/ws/trades[?symbol=]`` and ``/ws/markets/{symbol}``
  (top of book; ``BTC/USDT``, ``BTC-USDT`` or ``BTC%2FUSDT``). A token, when
  given, goes in ``?token=``.
* Time is an argument (``now``, the trio clock), and the token is checked by
  the injected ``verify`` (``TokenVerifier.verify``, whose expiry check reads
  the wall clock inside PyJWT): this module itself is pure, no trio, no clock,
  no sockets (``tests/gateway/test_gateway_purity.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import msgspec

from gateway._auth import AuthError, Identity
from gateway._codes import Code
from gateway._config import LimitSettings
from gateway._limits import Counts, KeyedBuckets
from gateway._protocol import Stream
from gateway._schema import normalize_symbol

_encode = msgspec.json.Encoder().encode

Subscription = tuple[Stream, str | None]
"""A (stream, symbol) a connection is subscribed to as soon as it opens."""


@attrs.frozen
class Refusal:
    """A handshake answered with an HTTP error instead of 101."""

    status: int
    code: str
    message: str
    retry_after: float | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(self.retry_after))).encode()))
        return headers

    def body(self) -> bytes:
        return _encode({"error": {"code": self.code, "message": self.message}})


@attrs.frozen
class Admitted:
    """A handshake that may proceed; counted until :meth:`Admission.release`."""

    ip: str
    identity: Identity | None
    subscribe: list[Subscription]
    """What the endpoint subscribes to at once (nothing on ``/ws``)."""

    @property
    def user_id(self) -> str | None:
        return None if self.identity is None else self.identity.user_id


class Admission:
    """The limits, the origin list and the endpoints, over connection counts it owns.

    Args:
        limits: the ``[limits]`` settings.
        symbols: the markets an endpoint may name.
        verify: the identity a token proves; raises :class:`AuthError` otherwise.
    """

    def __init__(
        self, limits: LimitSettings, *, symbols: Collection[str],
        verify: Callable[[str], Identity],
    ) -> None:
        self._limits = limits
        self._origins = frozenset(limits.allowed_origins)
        self._new_connections = KeyedBuckets(
            limits.connections_per_second_per_ip, limits.connection_burst_per_ip)
        self._per_ip = Counts()
        self._per_user = Counts()
        self._symbols = frozenset(symbols)
        self._verify = verify
        self.accepting = True
        """False once the server shuts down: every handshake is refused."""

    def admit(
        self, *, ip: str, target: str, headers: Sequence[tuple[bytes, bytes]], now: float
    ) -> Admitted | Refusal:
        """Check a handshake (its request target and headers) and count it if admitted."""
        refusal = self._check_ip(ip, headers, now)
        if refusal is not None:
            return refusal
        route = self._route(target)
        if isinstance(route, Refusal):
            return route
        subscribe, identity = route
        user = None if identity is None else identity.user_id
        if user is not None and self._per_user.get(user) >= self._limits.max_connections_per_user:
            return Refusal(429, Code.TOO_MANY_CONNECTIONS, "too many connections for this user")
        self._per_ip.add(ip)
        if user is not None:
            self._per_user.add(user)
        return Admitted(ip, identity, subscribe)

    def release(self, admitted: Admitted) -> None:
        """The connection :meth:`admit` counted has ended (or never opened)."""
        self._per_ip.remove(admitted.ip)
        if admitted.user_id is not None:
            self._per_user.remove(admitted.user_id)

    def _check_ip(
        self, ip: str, headers: Sequence[tuple[bytes, bytes]], now: float
    ) -> Refusal | None:
        """The checks made before the request is even routed."""
        if not self.accepting:
            return Refusal(503, Code.SHUTTING_DOWN, "the server is shutting down")
        if self._origins:
            origin = dict(headers).get(b"origin", b"").decode("latin-1")
            if origin not in self._origins:
                return Refusal(403, Code.ORIGIN_NOT_ALLOWED, f"origin {origin!r} is not allowed")
        if not self._new_connections.take(ip, now):
            return Refusal(429, Code.RATE_LIMITED, "too many new connections; slow down",
                           self._new_connections.retry_after(ip, now))
        if self._per_ip.get(ip) >= self._limits.max_connections_per_ip:
            return Refusal(429, Code.TOO_MANY_CONNECTIONS, "too many connections from this address")
        return None

    def _route(self, target: str) -> tuple[list[Subscription], Identity | None] | Refusal:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        path = unquote(parts.path).rstrip("/")
        identity = None
        tokens = query.get("token")
        if tokens:
            try:
                identity = self._verify(tokens[0])
            except AuthError as exc:
                return Refusal(401, Code.UNAUTHORIZED, str(exc))
        if path == "/ws":
            return [], identity
        if path == "/ws/orders":
            if identity is None:
                return Refusal(401, Code.UNAUTHORIZED, "a token is required: /ws/orders?token=...")
            return [(Stream.ORDERS, None)], identity
        if path == "/ws/trades":
            symbol = query.get("symbol", [None])[0]
            if symbol is not None:
                symbol = normalize_symbol(symbol)
                if symbol not in self._symbols:
                    return Refusal(404, Code.UNKNOWN_SYMBOL, f"unknown symbol {symbol}")
            return [(Stream.TRADES, symbol)], identity
        if path.startswith("/ws/markets/"):
            symbol = normalize_symbol(path.removeprefix("/ws/markets/"))
            if symbol not in self._symbols:
                return Refusal(404, Code.UNKNOWN_SYMBOL, f"unknown symbol {symbol}")
            return [(Stream.ORDERBOOK, symbol)], identity
        return Refusal(404, Code.NOT_FOUND, f"no WebSocket endpoint at {parts.path}")
