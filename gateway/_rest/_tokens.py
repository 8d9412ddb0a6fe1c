"""Who is calling: the bearer token of a REST request, verified once and then remembered.

Rules of this module:

* :meth:`Authenticator.user_of` is the one place a REST request is
  authenticated and held to ``limits.rest_requests_per_second``: 401
  ``unauthorized`` without a valid token, 429 ``rate_limited`` over the rate.
* Verifying a JWT costs about as much as the rest of an order's way through
  the server (base64, JSON, HMAC or RSA), and a client sends the same token
  with every request, so a verified token is remembered until its ``exp``:
  :class:`TokenCache` maps the exact token string to its identity. Only tokens
  that verified are kept (a forged one is checked each time), an entry is never
  used at or after its ``exp``, and at most ``size`` entries are kept, the
  least recently used going first, so spraying valid tokens cannot grow memory.
* The clock is injected (wall-clock seconds, as ``exp`` is), so the cache is
  tested without waiting.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gateway._auth import AuthError, Identity, TokenVerifier
from gateway._codes import Code
from gateway._limits import KeyedBuckets
from gateway._schema import RequestError
from gateway._stats import Stats

NEED_TOKEN = ("send the header Authorization: Bearer <token> "
              "(trade-engine token --user NAME prints one)")


class TokenCache:
    """Verified tokens until their expiry, bounded.

    Args:
        verifier: checks a token the cache does not know.
        size: entries kept at most.
        clock: wall-clock seconds (``exp`` is wall-clock time).
    """

    __slots__ = ("_clock", "_entries", "_size", "_verifier")

    def __init__(self, verifier: TokenVerifier, *, size: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self._verifier = verifier
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, Identity] = OrderedDict()

    def verify(self, token: str) -> Identity:
        """The identity ``token`` proves.

        Raises:
            AuthError: as :meth:`TokenVerifier.verify`.
        """
        entries = self._entries
        identity = entries.get(token)
        if identity is not None:
            if self._clock() < identity.expires_at:
                entries.move_to_end(token)
                return identity
            del entries[token]  # expired: verify again, which says so
        identity = self._verifier.verify(token)
        entries[token] = identity
        if len(entries) > self._size:
            entries.popitem(last=False)
        return identity

    def __len__(self) -> int:
        return len(self._entries)


class Authenticator:
    """The user behind a REST request, held to the per-user request rate.

    Args:
        tokens: the verified tokens.
        rate: ``limits.rest_requests_per_second``.
        burst: ``limits.rest_burst``.
        stats: counts the requests refused for the rate.
    """

    __slots__ = ("_buckets", "_rate", "_stats", "_tokens")

    def __init__(self, tokens: TokenCache, *, rate: float, burst: int, stats: Stats) -> None:
        self._tokens = tokens
        self._rate = rate
        self._buckets = KeyedBuckets(rate, burst)
        self._stats = stats

    def user_of(self, authorization: bytes | None, now: float) -> str:
        """The user id of an ``Authorization`` header value, at ``now`` (trio time).

        Raises:
            RequestError: 401 ``unauthorized``; 429 ``rate_limited`` with ``retry_after``.
        """
        if authorization is None:
            raise RequestError(401, Code.UNAUTHORIZED, NEED_TOKEN)
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise RequestError(401, Code.UNAUTHORIZED, NEED_TOKEN)
        try:
            user_id = self._tokens.verify(token).user_id
        except AuthError as exc:  # its message says why, and how to get a new token
            raise RequestError(401, Code.UNAUTHORIZED, str(exc)) from None
        buckets = self._buckets
        if not buckets.take(user_id, now):
            self._stats.rest_rate_limited += 1
            retry_after = buckets.retry_after(user_id, now)
            raise RequestError(
                429, Code.RATE_LIMITED, f"too many requests: at most {self._rate:g} per second "
                f"per user (limits.rest_requests_per_second); retry in {retry_after:.2f} s",
                retry_after=retry_after)
        return user_id
