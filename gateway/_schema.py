"""Order-entry requests, shared by REST and the WebSocket: one schema, one copy of every rule.

Rules of this module:

* A request body is decoded by msgspec into a Struct that forbids unknown
  fields (:class:`PlaceBody`, :class:`AmendBody`); a wrong type, a missing or an
  unknown field becomes a :class:`RequestError` with the same code whichever
  transport carried the body. ``POST /api/v1/orders`` decodes the HTTP body,
  the WebSocket converts the ``order`` object of a ``place`` request: the same
  Struct, the same error.
* :func:`place_command`, :func:`amend_command` and :func:`rejection` turn
  bodies into engine commands and engine refusals into errors. Each rule lives
  here once; REST (``_rest``) and WebSocket order entry (``_order_entry``)
  only call these functions.
* A :class:`RequestError` carries the REST status, a stable ``code``, a
  message that says what to do, and the offending ``field``: REST sends
  ``{"error": {...}}``, the WebSocket ``{"type": "error", "id", ...}``.
* Pure: no trio, no clock, no I/O; every function is tested without a network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

import msgspec

from engine import (
    MAX_UNITS,
    AmendOrder,
    Command,
    MarketSpec,
    Order,
    OrderType,
    PlaceOrder,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    UnitError,
)
from gateway._codes import Code


class RequestError(Exception):
    """A request we refuse: ``status`` for REST, ``code``/``message``/``field`` for both."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field}


def fail(status: int, code: str, message: str, field: str | None = None) -> NoReturn:
    raise RequestError(status, code, message, field)


# ------------------------------------------------------------------- bodies


class PlaceBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/orders`` and the ``order`` of a WebSocket ``place``.

    Every field is optional at the decoding step so that a missing one is
    reported as ``missing_field`` naming it, in the order :func:`place_command`
    checks them.
    """

    symbol: str | None = None
    side: str | None = None
    quantity: str | None = None
    price: str | None = None
    type: str | None = None
    time_in_force: str | None = None
    post_only: bool = False
    self_trade_prevention: str | None = None
    client_order_id: str | None = None


class AmendBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``PATCH /api/v1/orders/{id}`` and the fields of a WebSocket ``amend``."""

    price: str | None = None
    quantity: str | None = None


# A field of the wrong JSON type is refused with that field's own code.
_CODE_OF_FIELD = {
    "symbol": Code.UNKNOWN_SYMBOL, "side": Code.INVALID_SIDE, "type": Code.INVALID_TYPE,
    "time_in_force": Code.INVALID_TIME_IN_FORCE,
    "self_trade_prevention": Code.INVALID_SELF_TRADE_PREVENTION,
    "post_only": Code.INVALID_POST_ONLY, "client_order_id": Code.INVALID_CLIENT_ORDER_ID,
    "price": Code.INVALID_PRICE, "quantity": Code.INVALID_QUANTITY,
}
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]*)`")
_AT_FIELD = re.compile(r"- at `\$\.(?P<field>[A-Za-z_]+)`$")

_Body = TypeVar("_Body", PlaceBody, AmendBody)
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind) for kind in (PlaceBody, AmendBody)
}


def decode_body(raw: bytes, kind: type[_Body]) -> _Body:
    """A REST body as ``kind``.

    Raises:
        RequestError: ``invalid_json`` or what :func:`convert_body` raises.
    """
    try:
        return _decoders[kind].decode(raw)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        try:  # the typed decoder stops at the first bad field: is it JSON at all?
            msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            fail(400, Code.INVALID_JSON, "the body is not valid JSON")
        _refuse_body(exc)
    except (msgspec.DecodeError, RecursionError):
        fail(400, Code.INVALID_JSON, "the body is not valid JSON")


def convert_body(data: object, kind: type[_Body]) -> _Body:
    """An already decoded JSON value (a WebSocket request's part) as ``kind``.

    Raises:
        RequestError: ``invalid_json`` when ``data`` is not an object,
            ``unknown_field``, or the field's own ``invalid_*`` code.
    """
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        _refuse_body(exc)


def _refuse_body(exc: msgspec.ValidationError) -> NoReturn:
    text = str(exc)
    if match := _UNKNOWN.match(text):
        name = match["field"]
        fail(400, Code.UNKNOWN_FIELD, f"unknown field {name!r}", name)
    if (match := _AT_FIELD.search(text)) and match["field"] in _CODE_OF_FIELD:
        name = match["field"]
        fail(400, _CODE_OF_FIELD[name], f"{name}: {_FIELD_HINT[name]}", name)
    fail(400, Code.INVALID_JSON, "the body must be a JSON object")


_FIELD_HINT = {
    "symbol": "a market symbol such as \"BTC/USDT\" (GET /api/v1/markets lists them)",
    "side": "\"buy\" or \"sell\"",
    "type": "\"limit\" or \"market\"",
    "time_in_force": "\"gtc\", \"ioc\" or \"fok\"",
    "self_trade_prevention": "\"none\", \"cancel_taker\", \"cancel_maker\" or \"cancel_both\"",
    "post_only": "true or false",
    "client_order_id": "a string",
    "price": "a decimal string such as \"50000.00\" (a JSON string, not a number)",
    "quantity": "a decimal string such as \"0.01\" (a JSON string, not a number)",
}


# ------------------------------------------------------------------ markets


def normalize_symbol(symbol: str) -> str:
    """``BTC-USDT`` and ``btc/usdt`` name the market ``BTC/USDT``.

    ASCII only: ``str.upper`` turns a long s (U+017F) into ``"S"``, a misspelling to refuse.
    """
    return symbol.replace("-", "/").upper() if symbol.isascii() else symbol


def unknown_symbol_message(symbol: object, symbols: Mapping[str, object] | list[str]) -> str:
    """Says which markets exist and how a symbol may be written."""
    names = ", ".join(sorted(symbols))
    return (f"unknown symbol {symbol!r}: the markets are {names} "
            "(written BTC/USDT, BTC-USDT or btc-usdt)")


def market(
    markets: Mapping[str, MarketSpec], symbol: object, field: str | None = "symbol"
) -> MarketSpec:
    """The market a client names, in any accepted spelling.

    Raises:
        RequestError: ``unknown_symbol``, 400 in a body (``field``), 404 in a path
            (``field=None``).
    """
    spec = markets.get(normalize_symbol(symbol)) if isinstance(symbol, str) else None
    if spec is None:
        fail(400 if field else 404, Code.UNKNOWN_SYMBOL,
             unknown_symbol_message(symbol, list(markets)), field)
    return spec


# ------------------------------------------------------------------ commands

_Enum = TypeVar("_Enum", bound=StrEnum)


def _choice(value: str | None, name: str, kind: type[_Enum], default: _Enum | None) -> Any:
    if value is None:
        return default
    try:  # ASCII only: str.lower turns a Kelvin sign into "k" ("marKet")
        return kind(value.lower() if value.isascii() else value)
    except ValueError:
        fail(400, Code(f"invalid_{name}"), f"{name} must be one of {_FIELD_HINT[name]}, "
             f"got {value!r}", name)


def _amount(spec: MarketSpec, value: str | None, name: str, *, required: bool) -> int | None:
    if value is None:
        if required:
            fail(400, Code.MISSING_FIELD, f"{name} is required", name)
        return None
    try:
        return spec.parse_price(value) if name == "price" else spec.parse_quantity(value)
    except UnitError as exc:
        fail(400, str(exc.reason), str(exc), name)


def place_command(
    body: PlaceBody, user_id: str, markets: Mapping[str, MarketSpec]
) -> PlaceOrder:
    """The engine command for a ``place`` body (``order_id`` 0: the engine task names it).

    Raises:
        RequestError: the first rule the body breaks, checked in a fixed order:
            symbol, side, type, amounts, the rest.
    """
    if body.symbol is None:
        fail(400, Code.MISSING_FIELD, "symbol is required, e.g. \"BTC/USDT\"", "symbol")
    spec = market(markets, body.symbol)
    if body.side is None:
        fail(400, Code.MISSING_FIELD, "side is required: \"buy\" or \"sell\"", "side")
    side = _choice(body.side, "side", Side, None)
    order_type = _choice(body.type, "type", OrderType, OrderType.LIMIT)
    if order_type is OrderType.MARKET and body.price is not None:
        fail(400, Code.INVALID_PRICE, "a market order takes no price: leave price out, "
             "or send \"type\": \"limit\"", "price")
    quantity = _amount(spec, body.quantity, "quantity", required=True)
    price = _amount(spec, body.price, "price", required=order_type is OrderType.LIMIT)
    assert quantity is not None
    return PlaceOrder(
        order_id=0, user_id=user_id, symbol=spec.symbol, side=side, quantity=quantity,
        price=price, order_type=order_type,
        time_in_force=_choice(body.time_in_force, "time_in_force", TimeInForce, None),
        post_only=body.post_only,
        self_trade_prevention=_choice(body.self_trade_prevention, "self_trade_prevention",
                                      SelfTradePrevention, SelfTradePrevention.NONE),
        client_order_id=body.client_order_id,
    )


def amend_command(
    body: AmendBody, spec: MarketSpec, user_id: str, *, order_id: int = 0,
    client_order_id: str | None = None,
) -> AmendOrder:
    """The engine command for an ``amend`` of an order in the market ``spec``."""
    return AmendOrder(
        order_id=order_id, client_order_id=client_order_id, user_id=user_id,
        price=_amount(spec, body.price, "price", required=False),
        quantity=_amount(spec, body.quantity, "quantity", required=False),
    )


def order_id_of(value: object) -> int:
    """An ``order_id`` from a client, as an integer the engine can hold.

    Raises:
        RequestError: 404 ``order_not_found`` for an id no order can have.
    """
    if type(value) is not int or not 0 < value <= MAX_UNITS:
        raise order_not_found()
    return value


def rate_limited(retry_after: float, rate: float) -> RequestError:
    """The answer to an order-entry command over the user's order rate."""
    return RequestError(
        429, Code.RATE_LIMITED, f"too many orders: at most {rate:g} per second per user, REST and "
        f"WebSocket together (limits.orders_per_second); retry in {retry_after:.2f} s",
        retry_after=retry_after)


def order_not_found() -> RequestError:
    return RequestError(404, Code.ORDER_NOT_FOUND, "no such order of yours (it may have "
                        "another owner, or be closed and out of the order history)")


# ------------------------------------------------------------ engine refusals

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
_EXPLAINED = {
    RejectReason.POST_ONLY_WOULD_CROSS:
        "a post-only order would have traded at once: nothing was placed; "
        "use a price that does not cross the book, or drop post_only",
    RejectReason.FOK_NOT_FILLABLE:
        "a fill-or-kill order could not fill completely now: nothing traded",
    RejectReason.DUPLICATE_CLIENT_ORDER_ID:
        "you have an open order with this client_order_id already; use a new one",
    RejectReason.ORDER_NOT_OPEN: "the order is no longer open (filled or cancelled)",
    RejectReason.NOTHING_TO_AMEND: "send a new price and/or quantity to amend",
    RejectReason.INVALID_POST_ONLY: "post_only applies to limit orders only",
    RejectReason.BELOW_MIN_QUANTITY: "the quantity is below the market's min_quantity "
                                     "(GET /api/v1/markets)",
}


def rejection(
    reason: RejectReason, command: Command, spec: MarketSpec | None, order: Order | None = None
) -> RequestError:
    """The error for an engine refusal of ``command`` (``order``: the amended order)."""
    if reason in _NOT_FOUND:
        return order_not_found()
    field = _FIELD_OF.get(reason)
    if reason is RejectReason.BELOW_MIN_NOTIONAL and spec is not None:
        message = _below_min_notional(command, spec, order)
    else:
        message = _EXPLAINED.get(reason, f"rejected: {reason}")
    return RequestError(400, str(reason), message, field)


def _below_min_notional(command: Command, spec: MarketSpec, order: Order | None) -> str:
    price = getattr(command, "price", None)
    quantity = getattr(command, "quantity", None)
    if order is not None:
        price = order.price if price is None else price
        quantity = order.quantity if quantity is None else quantity
    minimum = f"{spec.min_notional} {spec.quote}"
    if price is None or quantity is None:
        return f"the order's notional is below the market's minimum of {minimum}"
    notional = spec.format_notional(price, quantity)
    return (f"the order's notional, price x quantity = {notional} {spec.quote}, is below "
            f"the market's minimum of {minimum}: raise the quantity or the price")
