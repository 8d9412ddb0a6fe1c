"""The routes of ``/api/v1``, as one table: a path's shape and a method name a handler.

Rules of this module:

* Every route of the API is in :data:`ROUTES`, with whether it needs a token;
  the dispatcher authenticates private routes before their handler runs, so
  no handler checks a token itself.
* A path that matches no shape is 404 ``not_found``; a known path with another
  method is 405 ``method_not_allowed`` with the methods it has (``Allow``).
  ``HEAD`` is answered as ``GET`` (without the body).
* ``{symbol}`` may contain a slash (``BTC/USDT``, also written ``BTC%2FUSDT``,
  which arrives decoded); ``{id}`` is kept as written and checked by the handler.
* Pure: no trio, no I/O.
"""

from __future__ import annotations

import enum

from gateway._codes import Code
from gateway._schema import RequestError

PREFIX = "/api/v1"


class Endpoint(enum.Enum):
    """One handler; ``value`` is (name, needs a token)."""

    PLACE = ("place", True)
    LIST_ORDERS = ("list_orders", True)
    CANCEL_ALL = ("cancel_all", True)
    GET_ORDER = ("get_order", True)
    AMEND = ("amend", True)
    CANCEL = ("cancel", True)
    MARKETS = ("markets", False)
    ORDERBOOK = ("orderbook", False)
    TRADES = ("trades", False)
    OPENAPI = ("openapi", False)

    @property
    def private(self) -> bool:
        return self.value[1]


ROUTES: dict[str, dict[str, Endpoint]] = {
    "orders": {"POST": Endpoint.PLACE, "GET": Endpoint.LIST_ORDERS,
               "DELETE": Endpoint.CANCEL_ALL},
    "orders/{id}": {"GET": Endpoint.GET_ORDER, "PATCH": Endpoint.AMEND,
                    "DELETE": Endpoint.CANCEL},
    "markets": {"GET": Endpoint.MARKETS},
    "markets/{symbol}/orderbook": {"GET": Endpoint.ORDERBOOK},
    "markets/{symbol}/trades": {"GET": Endpoint.TRADES},
    "openapi.json": {"GET": Endpoint.OPENAPI},
}


def shape(path: str) -> tuple[str, str] | None:
    """The route shape of an ``/api/v1`` path and its parameter (``""`` when none)."""
    rest = path[len(PREFIX) + 1:] if path.startswith(PREFIX + "/") else None
    if rest is None:
        return None
    if rest in ("orders", "markets", "openapi.json"):
        return rest, ""
    if rest.startswith("orders/"):
        param = rest[len("orders/"):]
        return ("orders/{id}", param) if param and "/" not in param else None
    if rest.startswith("markets/"):
        symbol, _, leaf = rest[len("markets/"):].rpartition("/")
        if symbol and leaf in ("orderbook", "trades"):
            return f"markets/{{symbol}}/{leaf}", symbol
    return None


def allowed(methods: dict[str, Endpoint]) -> str:
    """The ``Allow`` header of a route."""
    names = list(methods)
    if "GET" in methods:
        names.append("HEAD")
    return ", ".join([*names, "OPTIONS"])


def resolve(method: str, path: str) -> tuple[Endpoint, str]:
    """The endpoint and parameter of a request.

    Raises:
        RequestError: 404 ``not_found``, or 405 ``method_not_allowed`` (its
            message lists the methods the path has).
    """
    found = shape(path)
    if found is None:
        raise RequestError(404, Code.NOT_FOUND, f"no such path {path!r}; the API's paths are "
                           "listed in docs/protocol.md (GET /api/v1/markets is one)")
    methods = ROUTES[found[0]]
    endpoint = methods.get("GET" if method == "HEAD" else method)
    if endpoint is None:
        raise RequestError(405, Code.METHOD_NOT_ALLOWED,
                           f"{method} is not allowed here; use {allowed(methods)}")
    return endpoint, found[1]
