"""The REST listener (``/api/v1``, ``/healthz``, ``/stats``, ``/metrics``), served by hypercorn.

How it is built: :class:`~gateway._rest._front.RestFront` is the ASGI
application on the REST port. It answers what concerns every request alike
(WebSocket handshakes on the wrong port, CORS preflights, bodies over the
limit), wraps every exchange in a body guard (``_body.py``: an early answer
never wedges a kept-alive connection) and adds the CORS headers
(``_cors.py``). ``/api/v1`` is plain ASGI: a route table (``_routes.py``), one
dispatcher with the error envelope (``_api.py``), one authenticator with a
verified-token cache (``_tokens.py``) and the handlers (``_orders.py``,
``_market.py``), every request rule coming from ``gateway/_schema.py``;
``/healthz``, ``/stats`` and ``/metrics`` are a small quart-trio application
(``_ops.py``). The trading page (``/``, ``/static/``, files in
``gateway/web/``) is plain ASGI too (``_page.py``). JSON encoding lives in
``_asgi.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway._auth import TokenVerifier
from gateway._config import LimitSettings
from gateway._hub import Hub
from gateway._limits import OrderRate
from gateway._rest._api import Api
from gateway._rest._asgi import Scope
from gateway._rest._cors import CorsPolicy
from gateway._rest._front import RestFront, request_host, websocket_url
from gateway._rest._market import MarketData
from gateway._rest._openapi import openapi_handler
from gateway._rest._ops import create_ops_app
from gateway._rest._orders import Orders
from gateway._rest._page import Page, load_files
from gateway._rest._routes import Endpoint
from gateway._rest._tokens import Authenticator, TokenCache
from gateway._runtime import Runtime
from gateway._stats import Stats


def create_app(
    runtime: Runtime,
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
    degraded: Callable[[], str | None] | None = None,
    depth_levels: int = 10,
) -> RestFront:
    """The REST application, bound to one gateway's engine runtime and hub.

    Args:
        websocket_port: the WebSocket listener's bound port, named in the answer
            to a WebSocket handshake on the REST port and filled into the page
            (0 while it starts).
        degraded: why the server is degraded while order entry works (the
            scale-out engine role without Redis), for ``/healthz``; None: never.
        depth_levels: ``websocket.depth_levels``, which the page's checksum needs.
    """
    orders = Orders(runtime, order_rate=order_rate, stats=stats)
    data = MarketData(runtime.engine, runtime.streams, public_trade_user_ids=public_trade_user_ids)
    auth = Authenticator(TokenCache(verifier), rate=limits.rest_requests_per_second,
                         burst=limits.rest_burst, stats=stats)
    api = Api({
        Endpoint.PLACE: orders.place, Endpoint.LIST_ORDERS: orders.list_orders,
        Endpoint.CANCEL_ALL: orders.cancel_all, Endpoint.GET_ORDER: orders.get_order,
        Endpoint.AMEND: orders.amend, Endpoint.CANCEL: orders.cancel,
        Endpoint.MARKETS: data.markets, Endpoint.ORDERBOOK: data.orderbook,
        Endpoint.TRADES: data.trades, Endpoint.OPENAPI: openapi_handler(runtime.engine.markets),
    }, auth, max_request_body=max_request_body)
    ops = create_ops_app(runtime, hub, stats=stats, connection_count=connection_count,
                         degraded=degraded)

    def page_websocket_url(scope: Scope) -> str | None:
        port = websocket_port()
        return websocket_url(request_host(scope), port, "/ws") if port else None

    page = Page(load_files(), depth_levels=depth_levels, websocket_url=page_websocket_url)
    return RestFront(api, page, ops, cors=CorsPolicy(limits.allowed_origins),
                     max_request_body=max_request_body, websocket_port=websocket_port)


__all__ = ["create_app"]
