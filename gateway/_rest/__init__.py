"""The REST listener (``/api/v1``, ``/healthz``, ``/stats``, ``/metrics``), served by hypercorn.

How it is built: :class:`~gateway._rest._front.RestFront` is the ASGI
application on the REST port. It answers what concerns every request alike
(WebSocket handshakes on the wrong port, CORS preflights, bodies over the
limit), wraps every exchange in a body guard (``_body.py``: an early answer
never wedges a kept-alive connection) and adds the CORS headers
(``_cors.py``); the routes themselves are a quart-trio application
(``_app.py``). JSON encoding and the error envelope live in ``_asgi.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway._auth import TokenVerifier
from gateway._config import LimitSettings
from gateway._hub import Hub
from gateway._limits import OrderRate
from gateway._rest._app import create_web_app
from gateway._rest._cors import CorsPolicy
from gateway._rest._front import RestFront
from gateway._runtime import EngineRuntime
from gateway._stats import Stats


def create_app(
    runtime: EngineRuntime,
    hub: Hub,
    *,
    verifier: TokenVerifier,
    stats: Stats,
    order_rate: OrderRate,
    limits: LimitSettings,
    max_request_body: int,
    public_trade_user_ids: bool,
    connection_count: Callable[[], int],
    websocket_port: Callable[[], int] = lambda: 0,
) -> RestFront:
    """The REST application, bound to one gateway's engine runtime and hub.

    Args:
        websocket_port: the WebSocket listener's bound port, named in the answer
            to a WebSocket handshake on the REST port (0 while it starts).
    """
    app = create_web_app(
        runtime, hub, verifier=verifier, stats=stats, order_rate=order_rate, limits=limits,
        max_request_body=max_request_body, public_trade_user_ids=public_trade_user_ids,
        connection_count=connection_count,
    )
    return RestFront(app, cors=CorsPolicy(limits.allowed_origins),
                     max_request_body=max_request_body, websocket_port=websocket_port)


__all__ = ["create_app"]
