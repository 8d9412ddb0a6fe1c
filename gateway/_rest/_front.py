"""The ASGI application on the REST port: what every request meets before its handler.

Rules of this module, in the order a request meets them:

* A WebSocket handshake is answered 400 ``wrong_port`` with the WebSocket URL
  to use instead (same host, the WebSocket port, the same path): streams live
  on their own listener (README, "Two ports").
* Every HTTP answer goes through a :class:`~gateway._rest._body.BodyGuard`
  (an answer given before the body arrived never wedges the connection) and
  carries the CORS headers of :class:`~gateway._rest._cors.CorsPolicy`.
* A CORS preflight is answered here, for any path.
* A declared ``Content-Length`` over ``max_request_body`` is answered 413
  here, before anything reads the body.
* ``/api/v1`` goes to the API (``_api.py``, plain ASGI); ``/`` and
  ``/static/`` to the trading page (``_page.py``, plain ASGI); everything else to
  the web application behind (quart-trio: ``/healthz``, ``/stats``,
  ``/metrics``, and the 404 of unknown paths).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway._codes import Code
from gateway._rest._api import Api
from gateway._rest._asgi import App, Receive, Scope, Send, error_bytes, send_body
from gateway._rest._body import BodyGuard
from gateway._rest._cors import CorsPolicy
from gateway._rest._page import Page
from gateway._rest._routes import PREFIX


class RestFront:
    """The ASGI application hypercorn serves on the REST port.

    Args:
        api: serves ``/api/v1``.
        page: serves the trading page (``/``, ``/static/``).
        app: the web application for every other path.
        cors: who may read answers from a browser.
        max_request_body: the largest body accepted, in bytes.
        websocket_port: the WebSocket listener's bound port (0 while it starts).
    """

    def __init__(
        self, api: Api, page: Page, app: App, *, cors: CorsPolicy, max_request_body: int,
        websocket_port: Callable[[], int],
    ) -> None:
        self._api = api
        self._page = page
        self._app = app
        self._cors = cors
        self._max_body = max_request_body
        self._websocket_port = websocket_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._refuse_websocket(scope, receive, send)
        else:  # lifespan
            await self._app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared: int | None = 0
        origin = authorization = None
        preflight = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = bytes(value)
            elif name == b"content-length":
                declared = int(value)  # h11 checked it is digits, and the only one
            elif name == b"transfer-encoding":
                declared = None  # chunked: h11 accepts no other coding
            elif name == b"origin":
                origin = bytes(value)
            elif name == b"access-control-request-method":
                preflight = True
        if preflight and origin is not None and scope["method"] == "OPTIONS":
            await self._preflight(BodyGuard(
                receive, send, declared=declared, max_body=self._max_body,
                headers=self._cors.preflight(origin) or self._cors.headers(origin)), origin)
            return
        path: str = scope["path"]
        api = path.startswith(PREFIX) and path[len(PREFIX):len(PREFIX) + 1] in ("", "/")
        page = not api and Page.serves(path)
        # quart-trio cancels the task that sent its answer: shield the end of it there.
        guard = BodyGuard(receive, send, declared=declared, max_body=self._max_body,
                          headers=self._cors.headers(origin), shield=not (api or page))
        if declared is not None and declared > self._max_body:
            await send_body(guard.send, 413, error_bytes(
                Code.BODY_TOO_LARGE, f"the body is {declared} bytes, over the "
                f"{self._max_body}-byte limit (max_request_body)"))
        elif api:
            await self._api(scope, guard, authorization)
        elif page:
            await self._page(scope, guard.send)
        else:
            await self._app(scope, guard.receive, guard.send)

    async def _preflight(self, guard: BodyGuard, origin: bytes) -> None:
        if not self._cors.allows(origin):
            await send_body(guard.send, 403, error_bytes(
                Code.ORIGIN_NOT_ALLOWED, f"origin {origin.decode('latin-1')!r} is not in "
                "limits.allowed_origins"))
            return
        await guard.send({"type": "http.response.start", "status": 204,
                          "headers": [(b"content-length", b"0")]})
        await guard.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _refuse_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        port = self._websocket_port()
        if port:
            url = websocket_url(request_host(scope), port, scope["path"])
            message = (f"this port serves the REST API (/api/v1); WebSockets are on port "
                       f"{port}: connect to {url}")
        else:
            message = ("this port serves the REST API (/api/v1); the WebSocket listener "
                       "is still starting, on the ws_port setting")
        body = error_bytes(Code.WRONG_PORT, message)
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.http.response.start", "status": 400, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"connection", b"close")]})
        await send({"type": "websocket.http.response.body", "body": body})


def request_host(scope: Scope) -> str:
    """The host the client asked for, without its port."""
    for name, value in scope["headers"]:
        if name == b"host":
            host = bytes(value).decode("latin-1")
            if host.startswith("["):  # [::1]:8080
                return host[: host.find("]") + 1] or host
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    server = scope.get("server")
    address = str(server[0]) if server else "127.0.0.1"
    return f"[{address}]" if ":" in address else address


def websocket_url(host: str, port: int, path: str) -> str:
    """``ws://host:port/path`` with the WebSocket port; the query (a token?) is left out."""
    if not path.startswith("/ws"):
        path = "/ws"
    return f"ws://{host}:{port}{path}"
