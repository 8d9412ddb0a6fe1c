"""Every error code of the HTTP answers and order-entry replies, with its status, in one table.

Rules of this module:

* A handler refuses with a :class:`Code` member (a :class:`~enum.StrEnum`, so
  it is sent as its plain string), never with a string literal: a code that
  is not in this table cannot be sent. The engine's own refusals are sent
  with their :class:`engine.RejectReason` value (``price_off_tick``...), except
  ``unknown_order`` and ``not_owner``, which become ``order_not_found``.
* :data:`REST` says which HTTP statuses each code of the REST listener comes
  with; an order-entry reply on the WebSocket shares them (but
  :data:`REST_ONLY`) and adds :data:`ORDER_ENTRY`;
  :data:`HANDSHAKE` the refusals of a WebSocket handshake (on the WebSocket
  port). The codes of the WebSocket control protocol (subscribe, ping...) are
  :class:`gateway._protocol.ErrorCode`.
* The OpenAPI document (``gateway/_rest/_openapi.py``) lists the REST codes
  from here, and ``docs/asyncapi.yaml`` must list the rest:
  ``tests/gateway/test_openapi.py`` and ``test_asyncapi.py`` fail when one is
  missing.
* Pure: data only.
"""

from __future__ import annotations

from enum import StrEnum

from engine import RejectReason


class Code(StrEnum):
    """Stable error codes of ``{"error": {"code": ...}}`` answers and order-entry replies."""

    INVALID_JSON = "invalid_json"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_SIDE = "invalid_side"
    INVALID_TYPE = "invalid_type"
    INVALID_TIME_IN_FORCE = "invalid_time_in_force"
    INVALID_SELF_TRADE_PREVENTION = "invalid_self_trade_prevention"
    INVALID_POST_ONLY = "invalid_post_only"
    INVALID_CLIENT_ORDER_ID = "invalid_client_order_id"
    INVALID_PRICE = "invalid_price"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_STATUS = "invalid_status"
    INVALID_DEPTH = "invalid_depth"
    INVALID_LIMIT = "invalid_limit"
    UNKNOWN_SYMBOL = "unknown_symbol"
    WRONG_PORT = "wrong_port"
    UNAUTHORIZED = "unauthorized"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    NOT_FOUND = "not_found"
    ORDER_NOT_FOUND = "order_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TOO_LARGE = "body_too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    HTTP_ERROR = "http_error"
    BUSY = "busy"
    STARTING = "starting"
    JOURNAL_UNAVAILABLE = "journal_unavailable"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    INVALID_MESSAGE = "invalid_message"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    SHUTTING_DOWN = "shutting_down"
    WEBSOCKET_ONLY = "websocket_only"


# Engine refusals that never reach a client under their own name.
HIDDEN_REASONS = frozenset({RejectReason.UNKNOWN_ORDER, RejectReason.NOT_OWNER})

REST: dict[str, tuple[tuple[int, ...], str]] = {
    Code.INVALID_JSON: ((400,), "the body is not JSON, or not a JSON object"),
    Code.MISSING_FIELD: ((400,), "a required field is missing (`field` names it)"),
    Code.UNKNOWN_FIELD: ((400,), "a field the body does not take (`field` names it)"),
    Code.INVALID_SIDE: ((400,), "`side` is not buy or sell"),
    Code.INVALID_TYPE: ((400,), "`type` is not limit or market"),
    Code.INVALID_TIME_IN_FORCE: ((400,), "`time_in_force` is not gtc, ioc or fok"),
    Code.INVALID_SELF_TRADE_PREVENTION: (
        (400,), "`self_trade_prevention` is not none, cancel_taker, cancel_maker or cancel_both"),
    Code.INVALID_POST_ONLY: ((400,), "`post_only` is not a boolean, or set on a market order"),
    Code.INVALID_CLIENT_ORDER_ID: ((400,), "`client_order_id` is not a string, or too long"),
    Code.INVALID_PRICE: ((400,), "`price` is not a positive decimal string, too large, or "
                                 "given for a market order"),
    Code.INVALID_QUANTITY: ((400,), "`quantity` is not a positive decimal string, or too large"),
    Code.INVALID_STATUS: ((400,), "the `status` query parameter is not OPEN or "
                                  "PARTIALLY_FILLED"),
    Code.INVALID_DEPTH: ((400,), "the `depth` query parameter is not an integer in 1..1000"),
    Code.INVALID_LIMIT: ((400,), "the `limit` query parameter is not an integer in 1..1000"),
    Code.UNKNOWN_SYMBOL: ((400, 404), "no market has this symbol: 400 in a body or query, "
                                      "404 in a path; the message lists the markets"),
    Code.WRONG_PORT: ((400,), "a WebSocket handshake on the REST port; the message names "
                              "the WebSocket URL"),
    Code.UNAUTHORIZED: ((401,), "no token, or a token that is invalid or expired"),
    Code.ORIGIN_NOT_ALLOWED: ((403,), "a CORS preflight from an origin not in "
                                      "limits.allowed_origins"),
    Code.NOT_FOUND: ((404,), "no such path"),
    Code.ORDER_NOT_FOUND: ((404,), "no such order of yours (unknown, or another user's)"),
    Code.METHOD_NOT_ALLOWED: ((405,), "the path has no such method; `Allow` lists its methods"),
    Code.BODY_TOO_LARGE: ((413,), "the body is over max_request_body"),
    Code.RATE_LIMITED: ((429,), "over limits.rest_requests_per_second or "
                                "limits.orders_per_second; `Retry-After` says when to retry"),
    Code.INTERNAL_ERROR: ((500,), "a bug on our side, logged by the server; after an order "
                                  "request, check your orders before retrying"),
    Code.HTTP_ERROR: ((400,), "a request the web framework refused before any handler "
                              "(outside /api/v1)"),
    Code.BUSY: ((503,), "the engine's command queue is full; nothing was applied, retry"),
    Code.STARTING: ((503,), "the page at / while the server is still starting: reload it in "
                            "a second (`Retry-After`)"),
    Code.JOURNAL_UNAVAILABLE: ((503,), "the journal failed: order entry is stopped until a "
                                       "restart (/healthz says degraded)"),
    Code.ENGINE_UNAVAILABLE: ((503,), "a scale-out gateway cannot reach the engine or Redis: "
                                      "at once when nothing was sent (retry later), after "
                                      "broker.reply_timeout when the order may exist (look "
                                      "for its client_order_id before sending it again)"),
}
"""The codes of the REST listener: their HTTP statuses and when they come."""

REST_REASONS: dict[str, tuple[tuple[int, ...], str]] = {
    str(reason): ((400,), "refused by the engine (docs/engine.md)")
    for reason in RejectReason if reason not in HIDDEN_REASONS and reason not in REST
}
"""The engine's refusals, answered 400 with the reason as the code."""

REST_ONLY = frozenset({
    Code.WRONG_PORT, Code.ORIGIN_NOT_ALLOWED, Code.NOT_FOUND, Code.METHOD_NOT_ALLOWED,
    Code.BODY_TOO_LARGE, Code.HTTP_ERROR, Code.INVALID_STATUS, Code.INVALID_DEPTH,
    Code.INVALID_LIMIT, Code.STARTING,
})
"""REST codes of paths, methods, bodies and query parameters: never an order-entry reply's."""

ORDER_ENTRY: dict[str, str] = {
    Code.INVALID_MESSAGE: "an order-entry request whose `order` is not an object, or that "
                          "the engine task could not take",
}
"""Codes of WebSocket order-entry replies besides those of REST (which they share)."""

HANDSHAKE: dict[str, tuple[int, str]] = {
    Code.SHUTTING_DOWN: (503, "the server is shutting down"),
    Code.ORIGIN_NOT_ALLOWED: (403, "the Origin is not in limits.allowed_origins"),
    Code.RATE_LIMITED: (429, "too many new connections from this address; `Retry-After` "
                             "says when to retry"),
    Code.TOO_MANY_CONNECTIONS: (429, "too many open connections from this address or for "
                                     "this user"),
    Code.UNAUTHORIZED: (401, "an invalid or expired token, or /ws/orders without one"),
    Code.UNKNOWN_SYMBOL: (404, "no market has this symbol"),
    Code.NOT_FOUND: (404, "no WebSocket endpoint at this path"),
    Code.WEBSOCKET_ONLY: (400, "a plain HTTP request on the WebSocket port; the message "
                               "names the REST URL"),
}
"""Refusals of a WebSocket handshake: the HTTP status and when."""


def rest_codes() -> dict[str, tuple[tuple[int, ...], str]]:
    """Every code the REST listener may answer with, the engine's refusals included."""
    return {**REST, **REST_REASONS}


def order_entry_codes() -> set[str]:
    """Every code a WebSocket order-entry reply may carry."""
    return {code for code in rest_codes() if code not in REST_ONLY} | set(ORDER_ENTRY)
