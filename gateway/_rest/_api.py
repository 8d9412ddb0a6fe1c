"""The ``/api/v1`` dispatcher: one request in, one JSON answer out, errors included.

Why no web framework here: profiled under load, quart-trio (a request
context, a nursery and two tasks per request, werkzeug routing) took about a
quarter of the server's CPU on ``POST /api/v1/orders``, and verifying the JWT
another 7%; the order path ran at 50-60% of a bare ASGI handler on the same
hypercorn worker. So the API is plain ASGI: the route table of
``_routes.py``, then the handler (about 15 us of dispatch per request).
quart-trio serves the rest (``_ops.py``).

Rules of this module:

* Resolve the route, authenticate a private one (``_tokens.py``: the one
  place), run its handler, answer. A handler returns ``(status, value)`` and
  never sends anything itself; it refuses with a
  :class:`~gateway._schema.RequestError`, which becomes the one error envelope
  (with ``Retry-After`` for 429, ``Allow`` for 405).
* An unexpected exception is logged and answered 500 ``internal_error``: a
  client always gets JSON, and the server keeps serving.
* A handler reads the body only through :meth:`Call.body`, bounded by
  ``max_request_body``; a handler that answers without reading it is fine
  (``_body.py`` drains or closes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import trio

from gateway._codes import Code
from gateway._rest._asgi import Scope, error_bytes, json_bytes, send_body
from gateway._rest._body import BodyGuard
from gateway._rest._routes import ROUTES, Endpoint, allowed, resolve, shape
from gateway._rest._tokens import Authenticator
from gateway._schema import RequestError

log = logging.getLogger("trade_engine.gateway")

Answer = tuple[int, Any]
Handler = Callable[["Call"], Awaitable[Answer]]


class Call:
    """One API request, as its handler sees it."""

    __slots__ = ("_guard", "_max_body", "_query", "_query_string", "param", "user_id")

    def __init__(self, guard: BodyGuard, param: str, query_string: bytes, max_body: int) -> None:
        self._guard = guard
        self._max_body = max_body
        self._query_string = query_string
        self._query: dict[str, str] | None = None
        self.param = param
        """The path parameter: an order id or a symbol, as written ("" when none)."""
        self.user_id = ""
        """The authenticated user (private routes only)."""

    def query(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        if self._query is None:
            self._query = {}
            for key, value in parse_qsl(self._query_string.decode("latin-1"),
                                        keep_blank_values=True):
                self._query.setdefault(key, value)
        return self._query.get(name)

    async def body(self) -> bytes:
        """The request body.

        Raises:
            RequestError: 413 ``body_too_large``.
        """
        data = await self._guard.read()
        if data is None:
            raise RequestError(413, Code.BODY_TOO_LARGE, f"the body is over the "
                               f"{self._max_body}-byte limit (max_request_body)")
        return data


class Api:
    """Serves ``/api/v1`` with the handlers of each endpoint."""

    def __init__(
        self, handlers: Mapping[Endpoint, Handler], auth: Authenticator, *, max_request_body: int,
    ) -> None:
        missing = set(Endpoint) - set(handlers)
        assert not missing, f"no handler for {missing}"
        self._handlers = dict(handlers)
        self._auth = auth
        self._max_body = max_request_body

    async def __call__(self, scope: Scope, guard: BodyGuard, authorization: bytes | None) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        headers: list[tuple[bytes, bytes]] = []
        try:
            if method == "OPTIONS":
                await self._options(path, guard)
                return
            endpoint, param = resolve(method, path)
            call = Call(guard, param, scope["query_string"], self._max_body)
            if endpoint.private:
                call.user_id = self._auth.user_of(authorization, trio.current_time())
            status, value = await self._handlers[endpoint](call)
            body = json_bytes(value)
        except RequestError as error:
            status, body = error.status, error_bytes(error.code, error.message, error.field)
            if error.retry_after is not None:
                headers.append((b"retry-after", b"%d" % max(1, math.ceil(error.retry_after))))
            if status == 405:
                headers.append((b"allow", _allow(path)))
        except Exception:
            log.exception("%s %s failed", method, path)
            status, body = 500, error_bytes(
                Code.INTERNAL_ERROR, "the server failed to answer; it is logged. If this was an "
                "order request, check your orders with GET /api/v1/orders before retrying")
        await send_body(guard.send, status, body, headers)

    async def _options(self, path: str, guard: BodyGuard) -> None:
        if shape(path) is None:
            resolve("OPTIONS", path)  # raises the 404
        await guard.send({"type": "http.response.start", "status": 200, "headers": [
            (b"allow", _allow(path)), (b"content-length", b"0")]})
        await guard.send({"type": "http.response.body", "body": b"", "more_body": False})


def _allow(path: str) -> bytes:
    found = shape(path)
    assert found is not None
    return allowed(ROUTES[found[0]]).encode()
