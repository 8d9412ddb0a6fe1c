"""The OpenAPI 3.1 document of the REST listener, generated from the code it describes.

Served at ``GET /api/v1/openapi.json``. Rules of this module:

* The paths and methods are the route table's (``_routes.ROUTES``) and the
  operations application's (:data:`OPS`, ``/healthz``, ``/stats``,
  ``/metrics``); every :class:`~gateway._rest._routes.Endpoint` must have an
  entry in :data:`OPERATIONS`, or the document cannot be built.
* A request body is the msgspec Struct its handler decodes
  (``gateway._schema.PlaceBody``, ``AmendBody``, through
  ``msgspec.json.schema_components``), each field refined with the rule
  ``gateway/_schema.py`` applies to it (:data:`_FIELD_RULES`; a field without
  one cannot be built): the engine's enums, accepted in any ASCII letter case;
  the engine's decimal syntax; the server's own market symbols.
* An answer is a Struct of ``_shapes.py``; an error is the one envelope, its
  ``code`` one of those ``gateway._codes`` lists for the status.
* Pure; built once per server, since it names the server's markets.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import msgspec

from engine import MAX_UNITS, MarketSpec, OrderType, SelfTradePrevention, Side, TimeInForce
from gateway._codes import rest_codes
from gateway._rest import _shapes as shapes
from gateway._rest._api import Answer, Call, Handler
from gateway._rest._routes import PREFIX, ROUTES, Endpoint
from gateway._schema import AmendBody, PlaceBody

DECIMAL_PATTERN = r"^[0-9]{1,30}(\.[0-9]{1,30})?$"
"""The amounts the engine parses (``engine._markets._DECIMAL``, anchored); a test holds
them equal."""
MAX_CLIENT_ORDER_ID = 64
"""The engine's limit on ``client_order_id`` (``engine._validate``; a test holds them equal)."""

_REF = "#/components/schemas/{name}"
_STATUS_TEXT = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 413: "Body too large", 429: "Too many requests",
    500: "Internal error", 503: "Unavailable",
}
_HEADERS = {
    429: {"Retry-After": {"description": "seconds to wait before retrying",
                          "schema": {"type": "integer", "minimum": 1}}},
    405: {"Allow": {"description": "the methods of this path", "schema": {"type": "string"}}},
}


def any_case(word: str) -> str:
    """A regular expression for ``word`` in any ASCII letter case (JSON Schema has no ``(?i)``)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


def one_of_words(words: Iterable[str]) -> str:
    return "^(" + "|".join(any_case(word) for word in words) + ")$"


def symbol_pattern(markets: Iterable[str]) -> str:
    """Every spelling of the markets' symbols the server accepts: any ASCII letter case,
    ``/`` or ``-`` between base and quote (``gateway._schema.normalize_symbol``)."""
    return "^(" + "|".join(any_case(s).replace("/", "[/-]") for s in sorted(markets)) + ")$"


def _choice(words: Iterable[str], about: str) -> dict[str, Any]:
    values = [str(word) for word in words]
    return {"type": "string", "pattern": one_of_words(values), "examples": values,
            "description": f"{about}; any letter case"}


_AMOUNT = {"type": "string", "pattern": DECIMAL_PATTERN,
           "description": "a positive decimal string, a multiple of the market's step "
                          "(a JSON string, never a number)"}


def _field_rules(symbols: list[str]) -> dict[str, dict[str, Any]]:
    """The value rule of every body field, as ``gateway/_schema.py`` applies it."""
    return {
        "symbol": {"type": "string", "pattern": symbol_pattern(symbols), "examples": symbols,
                   "description": "a market, written BTC/USDT, BTC-USDT or btc-usdt"},
        "side": _choice(Side, "buy or sell"),
        "type": _choice(OrderType, "limit (the default) or market"),
        "time_in_force": _choice(TimeInForce, "gtc (the default for limit orders), ioc (the "
                                 "default for market orders) or fok"),
        "self_trade_prevention": _choice(SelfTradePrevention, "none (the default), "
                                         "cancel_taker, cancel_maker or cancel_both"),
        "post_only": {"type": "boolean", "description": "limit orders only: refuse the "
                      "order rather than trade at once"},
        "client_order_id": {"type": "string", "minLength": 1,
                            "maxLength": MAX_CLIENT_ORDER_ID,
                            "description": "your own id, unique among your open orders"},
        "price": {**_AMOUNT, "examples": ["50000.00"]},
        "quantity": {**_AMOUNT, "examples": ["0.01"]},
    }


_REQUIRED = {PlaceBody: ("symbol", "side", "quantity"), AmendBody: ()}
"""Fields ``gateway._schema`` refuses as ``missing_field`` when absent or null."""
_ABOUT = {
    PlaceBody: "A new order; also the `order` of a WebSocket `place` request. A limit order "
               "needs a price, a market order takes none. A field sent as null is left out.",
    AmendBody: "A new price and/or quantity; also the fields of a WebSocket `amend`.",
}


def _body_schema(kind: type[msgspec.Struct], generated: dict[str, Any],
                 rules: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The Struct's generated schema, each field given its rule (nullable when optional)."""
    schema = {**generated, "description": _ABOUT[kind]}
    required = _REQUIRED[kind]
    properties = {}
    for name in generated["properties"]:
        rule = rules[name]  # a KeyError here: a new field of the body needs its rule
        properties[name] = rule if name in required or name == "post_only" else {
            "anyOf": [rule, {"type": "null"}], "description": rule["description"]}
    schema["properties"] = properties
    schema["required"] = list(required)
    if kind is PlaceBody:  # a limit order needs a price, a market order takes none
        market = {"properties": {"type": {"type": "string",
                                          "pattern": one_of_words([OrderType.MARKET])}},
                  "required": ["type"]}
        schema["if"] = market
        schema["then"] = {"properties": {"price": {"type": "null"}}}
        schema["else"] = {"properties": {"price": rules["price"]}, "required": ["price"]}
    else:
        schema["minProperties"] = 1
    return schema


@attrs.frozen
class Operation:
    """One operation: its answer, what it takes, and the error statuses it may answer."""

    summary: str
    status: int
    answer: str | None
    errors: tuple[int, ...]
    body: type[msgspec.Struct] | None = None
    query: tuple[str, ...] = ()
    description: str = ""


_ORDER_ERRORS = (400, 401, 413, 429, 500, 503)
OPERATIONS: dict[Endpoint, Operation] = {
    Endpoint.PLACE: Operation(
        "Place an order", 201, "Order", _ORDER_ERRORS, body=PlaceBody,
        description="Answered once the order is durable in the journal and applied: the "
                    "order as its own command left it (it may have traded already)."),
    Endpoint.LIST_ORDERS: Operation(
        "Your open orders", 200, "OrderList", (400, 401, 429, 500), query=("symbol", "status")),
    Endpoint.CANCEL_ALL: Operation(
        "Cancel all your open orders (of one market)", 200, "CancelledOrders",
        (400, 401, 429, 500, 503), query=("symbol",)),
    Endpoint.GET_ORDER: Operation(
        "One of your orders", 200, "Order", (401, 404, 429, 500),
        description="Another user's order is 404, exactly like a missing one."),
    Endpoint.AMEND: Operation(
        "Amend an order's price and/or quantity", 200, "Order", (*_ORDER_ERRORS, 404),
        body=AmendBody),
    Endpoint.CANCEL: Operation(
        "Cancel an order", 200, "Order", (400, 401, 404, 429, 500, 503)),
    Endpoint.MARKETS: Operation("Every market and its rules", 200, "MarketList", (500,)),
    Endpoint.ORDERBOOK: Operation(
        "A market's order book", 200, "OrderBook", (400, 404, 500), query=("depth",)),
    Endpoint.TRADES: Operation(
        "A market's recent trades, newest first", 200, "TradeList", (400, 404, 500),
        query=("limit",)),
    Endpoint.OPENAPI: Operation("This document", 200, None, (500,)),
}

OPS: dict[str, Operation] = {
    "/healthz": Operation("Health: may orders be placed?", 200, "Health", ()),
    "/stats": Operation("Counters, as JSON", 200, "Stats", ()),
    "/metrics": Operation("Counters, in Prometheus text format", 200, None, ()),
}
"""The paths of the operations application (``_ops.py``), outside ``/api/v1``."""


def _query(symbols: list[str]) -> dict[str, dict[str, Any]]:
    def bounded(name: str, default: int, about: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "description": about, "schema": {
            "type": "integer", "minimum": 1, "maximum": 1000, "default": default}}

    return {
        "symbol": {"name": "symbol", "in": "query", "description": "only this market",
                   "schema": _field_rules(symbols)["symbol"]},
        "status": {"name": "status", "in": "query", "description": "only open orders "
                   "with this status", "schema": _choice(["OPEN", "PARTIALLY_FILLED"],
                                                         "OPEN or PARTIALLY_FILLED")},
        "depth": bounded("depth", 20, "levels per side"),
        "limit": bounded("limit", 100, "trades at most"),
    }


def _path_parameter(name: str, symbols: list[str]) -> dict[str, Any]:
    if name == "id":
        return {"name": "id", "in": "path", "required": True, "description": "the order id",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_UNITS}}
    return {"name": "symbol", "in": "path", "required": True,
            "description": "the market: BTC/USDT, BTC-USDT or BTC%2FUSDT",
            "schema": _field_rules(symbols)["symbol"]}


def _error_schema(status: int) -> dict[str, Any]:
    codes = [{"const": code, "description": about}
             for code, (statuses, about) in rest_codes().items() if status in statuses]
    return {"type": "object", "additionalProperties": False, "required": ["error"],
            "properties": {"error": {
                "type": "object", "additionalProperties": False,
                "required": ["code", "message", "field"],
                "properties": {
                    "code": {"oneOf": codes},
                    "message": {"type": "string", "description": "what went wrong and what "
                                "to do about it"},
                    "field": {"type": ["string", "null"], "description": "the offending "
                              "input, if any"}}}}}


def _operation(op: Operation, operation_id: str, path: str, symbols: list[str],
               private: bool) -> dict[str, Any]:
    content: dict[str, Any]
    if op.answer is None:
        kind = "text/plain" if path == "/metrics" else "application/json"
        content = {kind: {"schema": {"type": "string" if kind == "text/plain" else "object"}}}
    else:
        content = {"application/json": {"schema": {"$ref": _REF.format(name=op.answer)}}}
    responses: dict[str, Any] = {str(op.status): {"description": op.summary,
                                                  "content": content}}
    for status in sorted(op.errors):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    document: dict[str, Any] = {"operationId": operation_id, "summary": op.summary}
    if op.description:
        document["description"] = op.description
    parameters = [_path_parameter(name, symbols) for name in re.findall(r"{(\w+)}", path)]
    parameters += [_query(symbols)[name] for name in op.query]
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": _REF.format(name=op.body.__name__)}}}}
    document["responses"] = responses
    document["security"] = [{"bearer": []}] if private else []
    return document


def build(markets: Mapping[str, MarketSpec], *, version: str) -> dict[str, Any]:
    """The document for a server trading ``markets``."""
    symbols = sorted(markets)
    bodies: tuple[type[msgspec.Struct], ...] = (PlaceBody, AmendBody)
    _, schemas = msgspec.json.schema_components((*bodies, *shapes.ANSWERS), ref_template=_REF)
    rules = _field_rules(symbols)
    for kind in bodies:
        schemas[kind.__name__] = _body_schema(kind, schemas[kind.__name__], rules)
    paths: dict[str, dict[str, Any]] = {}
    for route, methods in ROUTES.items():
        path = f"{PREFIX}/{route}"
        for method, endpoint in methods.items():
            paths.setdefault(path, {})[method.lower()] = _operation(
                OPERATIONS[endpoint], endpoint.value[0], path, symbols, endpoint.private)
    for path, op in OPS.items():
        paths[path] = {"get": _operation(op, path.strip("/"), path, symbols, False)}
    # Every status of gateway._codes, with the operations' or not (403: a CORS preflight).
    statuses = sorted({status for statuses, _ in rest_codes().values() for status in statuses})
    return {
        "openapi": "3.1.0",
        "info": {"title": "trade-engine REST API", "version": version, "description": (
            "Orders and market data over REST. Amounts are decimal strings; every answer, "
            "errors included, is JSON ending with a newline (but /metrics). HEAD is "
            "answered as GET, OPTIONS with the path's methods (Allow). The WebSocket "
            "streams are described by docs/asyncapi.yaml.")},
        "servers": [{"url": "/", "description": "this server"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                f"Error{status}": {
                    "description": _STATUS_TEXT[status],
                    **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
                    "content": {"application/json": {"schema": _error_schema(status)}}}
                for status in statuses},
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "trade-engine token --user NAME prints one; `sub` is the "
                               "user, `exp` is required"}},
        },
    }


def openapi_handler(markets: Mapping[str, MarketSpec]) -> Handler:
    """The handler of ``GET /api/v1/openapi.json``: the document, encoded once."""
    try:
        version = importlib.metadata.version("trade-engine")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        version = "0"
    document = msgspec.Raw(msgspec.json.encode(build(markets, version=version)))

    async def openapi(call: Call) -> Answer:
        return 200, document

    return openapi
