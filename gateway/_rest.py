"""The REST API (``/api/v1``) on quart-trio: order entry, queries, health and metrics.

Rules of this module:

* Amounts are decimal strings in and out; :class:`engine.MarketSpec` converts.
* Every error is ``{"error": {"code", "message", "field"}}``: 400 for bad input
  (the engine's reason code when the engine refused), 401 without a valid
  token, 404 for an unknown id or another user's order, 413 for a body over
  ``max_request_body``, 503 ``busy`` when the engine's queue is full.
* Commands go through :class:`EngineRuntime` (the engine task); reads call the
  engine's queries directly, which never mutate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn

import msgspec
import trio
from quart import Quart, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from engine import (
    MAX_UNITS,
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    Event,
    MarketSpec,
    Order,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    UnitError,
)
from gateway import _messages as messages
from gateway._auth import AuthError, TokenVerifier
from gateway._config import LimitSettings
from gateway._hub import Hub
from gateway._limits import KeyedBuckets, OrderRate
from gateway._runtime import Busy, EngineRuntime, Unavailable
from gateway._schema import normalize_symbol, rate_limited
from gateway._stats import Stats, prometheus_text

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# Engine refusals that mean "no such order of yours".
_NOT_FOUND = frozenset({RejectReason.UNKNOWN_ORDER, RejectReason.NOT_OWNER})
_FIELD_OF = {
    RejectReason.UNKNOWN_SYMBOL: "symbol", RejectReason.INVALID_SIDE: "side",
    RejectReason.INVALID_ORDER_TYPE: "type", RejectReason.INVALID_PRICE: "price",
    RejectReason.PRICE_OFF_TICK: "price", RejectReason.INVALID_QUANTITY: "quantity",
    RejectReason.QUANTITY_OFF_LOT: "quantity", RejectReason.BELOW_MIN_QUANTITY: "quantity",
    RejectReason.BELOW_MIN_NOTIONAL: "quantity",
    RejectReason.INVALID_TIME_IN_FORCE: "time_in_force",
    RejectReason.INVALID_POST_ONLY: "post_only",
    RejectReason.INVALID_SELF_TRADE_PREVENTION: "self_trade_prevention",
    RejectReason.INVALID_CLIENT_ORDER_ID: "client_order_id",
    RejectReason.DUPLICATE_CLIENT_ORDER_ID: "client_order_id",
}
_PLACE_FIELDS = frozenset({
    "symbol", "side", "type", "price", "quantity", "time_in_force", "post_only",
    "self_trade_prevention", "client_order_id",
})
_AMEND_FIELDS = frozenset({"price", "quantity"})


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after = retry_after


def _json(body: Any, status: int = 200) -> Response:
    return Response(_encode(body), status=status, content_type="application/json")


def _fail(status: int, code: str, message: str, field: str | None = None) -> NoReturn:
    raise ApiError(status, code, message, field)


def order_json(order: Order, spec: MarketSpec) -> dict[str, Any]:
    """An order as REST shows it (the seed's field names, decimal strings)."""
    return {
        "order_id": order.order_id, "client_order_id": order.client_order_id,
        "user_id": order.user_id, "symbol": order.symbol, "side": order.side.upper(),
        "type": str(order.order_type), "time_in_force": str(order.time_in_force),
        "post_only": order.post_only,
        "self_trade_prevention": str(order.self_trade_prevention),
        "price": None if order.price is None else spec.format_price(order.price),
        "quantity": spec.format_quantity(order.quantity),
        "filled_quantity": spec.format_quantity(order.filled),
        "remaining_quantity": spec.format_quantity(order.remaining),
        "status": messages.order_status(order.status),
        "created_at": messages.iso_time(order.created_ts),
        "updated_at": messages.iso_time(order.updated_ts),
    }


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
) -> Quart:
    """The REST application, bound to one gateway's engine runtime and hub."""
    app = QuartTrio("trade_engine")
    app.config["MAX_CONTENT_LENGTH"] = max_request_body
    engine = runtime.engine
    markets = engine.markets
    buckets = KeyedBuckets(limits.rest_requests_per_second, limits.rest_burst)

    def user() -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            _fail(401, "unauthorized", "send Authorization: Bearer <token>")
        try:
            user_id = verifier.verify(token.strip()).user_id
        except AuthError as exc:
            _fail(401, "unauthorized", str(exc))
        now = trio.current_time()
        if not buckets.take(user_id, now):
            stats.rest_rate_limited += 1
            raise ApiError(429, "rate_limited", "too many requests; slow down",
                           retry_after=buckets.retry_after(user_id, now))
        return user_id

    def market(symbol: str, field: str = "symbol") -> MarketSpec:
        spec = markets.get(normalize_symbol(symbol))
        if spec is None:
            _fail(400 if field != "path" else 404, "unknown_symbol",
                  f"unknown symbol {symbol!r}", None if field == "path" else field)
        return spec

    async def body(allowed: frozenset[str]) -> dict[str, Any]:
        raw = await request.get_data()
        try:
            data = _decode(raw)
        except (msgspec.DecodeError, RecursionError):
            _fail(400, "invalid_json", "the body is not valid JSON")
        if not isinstance(data, dict):
            _fail(400, "invalid_json", "the body must be a JSON object")
        for key in data:
            if key not in allowed:
                _fail(400, "unknown_field", f"unknown field {key!r}", str(key))
        return data

    async def submit(command: Command) -> list[Event]:
        retry_after = order_rate.admit(command.user_id, trio.current_time())
        if retry_after is not None:
            stats.orders_rate_limited += 1
            limited = rate_limited(retry_after, order_rate.rate)
            raise ApiError(limited.status, limited.code, limited.message,
                           retry_after=retry_after)
        try:
            events = await runtime.submit(command)
        except Busy as exc:
            _fail(503, "busy", str(exc))
        except Unavailable as exc:
            _fail(503, "journal_unavailable", str(exc))
        if len(events) == 1 and isinstance(events[0], OrderRejected):
            reason = events[0].reason
            if reason in _NOT_FOUND:
                _fail(404, "order_not_found", "no such order")
            _fail(400, str(reason), f"rejected: {reason}", _FIELD_OF.get(reason))
        return events

    def own_order(order_id: int, user_id: str) -> Order:
        order = engine.order(order_id) if order_id <= MAX_UNITS else None
        if order is None or order.user_id != user_id:
            _fail(404, "order_not_found", "no such order")
        return order

    def enum_field(data: dict[str, Any], name: str, kind: type[Any], default: Any) -> Any:
        value = data.get(name)
        if value is None:
            return default
        try:
            return kind(value.lower() if isinstance(value, str) else value)
        except ValueError:
            choices = ", ".join(str(member) for member in kind)
            _fail(400, f"invalid_{name}", f"{name} must be one of {choices}", name)

    def amount(spec: MarketSpec, data: dict[str, Any], name: str, *, required: bool) -> int | None:
        value = data.get(name)
        if value is None:
            if required:
                _fail(400, "missing_field", f"{name} is required", name)
            return None
        try:
            if name == "price":
                return spec.parse_price(value)
            return spec.parse_quantity(value)
        except UnitError as exc:
            _fail(400, str(exc.reason), str(exc), name)

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        response = _json({"error": {"code": error.code, "message": error.message,
                                    "field": error.field}}, error.status)
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = {413: "body_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
            error.code or 500, "http_error")
        return _json({"error": {"code": code, "message": error.description, "field": None}},
                     error.code or 500)

    @app.post("/api/v1/orders")
    async def place_order() -> Response:
        user_id = user()
        data = await body(_PLACE_FIELDS)
        if "symbol" not in data:
            _fail(400, "missing_field", "symbol is required", "symbol")
        if not isinstance(data["symbol"], str):
            _fail(400, "unknown_symbol", "symbol must be a string", "symbol")
        spec = market(data["symbol"])
        if "side" not in data:
            _fail(400, "missing_field", "side is required", "side")
        side = enum_field(data, "side", Side, None)
        order_type = enum_field(data, "type", OrderType, OrderType.LIMIT)
        post_only = data.get("post_only", False)
        if not isinstance(post_only, bool):
            _fail(400, "invalid_post_only", "post_only must be true or false", "post_only")
        client_order_id = data.get("client_order_id")
        if client_order_id is not None and not isinstance(client_order_id, str):
            _fail(400, "invalid_client_order_id", "client_order_id must be a string",
                  "client_order_id")
        command = PlaceOrder(
            order_id=0, user_id=user_id, symbol=spec.symbol, side=side,
            quantity=amount(spec, data, "quantity", required=True),  # type: ignore[arg-type]
            price=amount(spec, data, "price", required=order_type is OrderType.LIMIT),
            order_type=order_type,
            time_in_force=enum_field(data, "time_in_force", TimeInForce, None),
            post_only=post_only,
            self_trade_prevention=enum_field(
                data, "self_trade_prevention", SelfTradePrevention, SelfTradePrevention.NONE),
            client_order_id=client_order_id,
        )
        accepted = (await submit(command))[0]
        assert isinstance(accepted, OrderAccepted)
        return _json(order_json(own_order(accepted.order_id, user_id), spec), 201)

    @app.get("/api/v1/orders/<int:order_id>")
    async def get_order(order_id: int) -> Response:
        order = own_order(order_id, user())
        return _json(order_json(order, markets[order.symbol]))

    @app.get("/api/v1/orders")
    async def list_orders() -> Response:
        user_id = user()
        symbol = request.args.get("symbol")
        spec_symbol = None if symbol is None else market(symbol).symbol
        status = request.args.get("status")
        if status is not None and status.upper() not in ("OPEN", "PARTIALLY_FILLED"):
            _fail(400, "invalid_status",
                  "this list holds open orders: status is OPEN or PARTIALLY_FILLED", "status")
        orders = [
            order_json(o, markets[o.symbol]) for o in engine.open_orders(user_id, spec_symbol)
        ]
        if status is not None:
            orders = [o for o in orders if o["status"] == status.upper()]
        return _json({"orders": orders})

    @app.patch("/api/v1/orders/<int:order_id>")
    async def amend_order(order_id: int) -> Response:
        user_id = user()
        data = await body(_AMEND_FIELDS)
        spec = markets[own_order(order_id, user_id).symbol]
        await submit(AmendOrder(
            order_id=order_id, user_id=user_id,
            price=amount(spec, data, "price", required=False),
            quantity=amount(spec, data, "quantity", required=False),
        ))
        return _json(order_json(own_order(order_id, user_id), spec))

    @app.delete("/api/v1/orders/<int:order_id>")
    async def cancel_order(order_id: int) -> Response:
        user_id = user()
        own_order(order_id, user_id)  # 404 before queueing a command that cannot succeed
        await submit(CancelOrder(order_id=order_id, user_id=user_id))
        order = own_order(order_id, user_id)
        return _json(order_json(order, markets[order.symbol]))

    @app.delete("/api/v1/orders")
    async def cancel_all() -> Response:
        user_id = user()
        symbol = request.args.get("symbol")
        events = await submit(CancelAllOrders(
            user_id=user_id, symbol=None if symbol is None else market(symbol).symbol))
        cancelled = [e.order_id for e in events if isinstance(e, OrderCancelled)]
        return _json({"cancelled": cancelled, "count": len(cancelled)})

    @app.get("/api/v1/markets")
    async def list_markets() -> Response:
        return _json({"markets": [
            {"symbol": s.symbol, "base": s.base, "quote": s.quote,
             "tick_size": str(s.tick_size), "lot_size": str(s.lot_size),
             "min_quantity": str(s.min_quantity), "min_notional": str(s.min_notional),
             "maker_fee_rate": str(s.maker_fee_rate), "taker_fee_rate": str(s.taker_fee_rate),
             "fee_precision": s.fee_precision}
            for s in markets.values()
        ]})

    def query_int(name: str, default: int, maximum: int) -> int:
        raw = request.args.get(name)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= maximum:
            _fail(400, f"invalid_{name}", f"{name} must be an integer in 1..{maximum}", name)
        return int(raw)

    @app.get("/api/v1/markets/<path:symbol>/orderbook")
    async def orderbook(symbol: str) -> Response:
        spec = market(symbol, "path")
        return _json(hub.depth_view(spec.symbol, query_int("depth", 20, 1000)))

    @app.get("/api/v1/markets/<path:symbol>/trades")
    async def trades(symbol: str) -> Response:
        spec = market(symbol, "path")
        limit = query_int("limit", 100, 1000)
        return _json({"trades": [
            messages.trade_executed(t, spec, with_user_ids=public_trade_user_ids)
            for t in engine.recent_trades(spec.symbol, limit)
        ]})

    @app.get("/healthz")
    async def healthz() -> Response:
        if runtime.failure is not None:
            return _json({"status": "degraded", "order_entry": False,
                          "error": str(runtime.failure), "last_seq": engine.last_seq})
        return _json({"status": "ok", "order_entry": True, "last_seq": engine.last_seq})

    @app.get("/stats")
    async def get_stats() -> Response:
        report = stats.as_json(hub.subscription_counts())
        report["connections"] = connection_count()
        return _json(report)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(prometheus_text(stats, hub.subscription_counts),
                        content_type="text/plain; version=0.0.4")

    return app
