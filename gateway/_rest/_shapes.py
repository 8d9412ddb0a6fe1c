"""The JSON answers of the REST listener, as msgspec Structs: the one description of their shapes.

Rules of this module:

* These Structs describe what the handlers send; the handlers build plain
  dicts (``gateway/_messages.py``, ``_market.py``, ``_ops.py``), because those
  are also the WebSocket's messages and are encoded on the hot path. The
  OpenAPI document (``_openapi.py``) is generated from these Structs, and
  ``tests/gateway/test_openapi.py`` validates live answers against it with
  unknown fields forbidden: a field the code sends and this module lacks
  fails that test, and so does a required field the code stopped sending.
* Value sets come from the code's own enums (the engine's ``Side``...), so an
  enum that grows is documented at once.
* Amounts are decimal strings (:data:`Amount`); a field that is sometimes
  left out has the default ``UNSET`` (not required in the schema).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from engine import OrderStatus, OrderType, SelfTradePrevention, Side, TimeInForce
from gateway._messages import order_status


def _one_of(values: list[str], description: str = "") -> Meta:
    schema: dict[str, Any] = {"enum": values}
    return Meta(extra_json_schema=schema, description=description or None)


AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
Amount = Annotated[str, Meta(
    pattern=AMOUNT_PATTERN, examples=["50000.00"],
    description="a decimal string, with the market's decimals (never a JSON number)")]
Timestamp = Annotated[str, Meta(
    pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$",
    examples=["2026-11-22T05:52:53.645Z"], description="ISO 8601, UTC, milliseconds")]
UpperSide = Annotated[str, _one_of([side.upper() for side in Side])]
Status = Annotated[str, _one_of(
    [order_status(status) for status in OrderStatus],
    "OPEN, PARTIALLY_FILLED, FILLED or CANCELLED")]
Level = Annotated[list[Amount], Meta(
    min_length=2, max_length=2, description="[price, quantity]",
    examples=[["50000.00", "0.01000"]])]
Seq = Annotated[int, Meta(ge=0)]
Id = Annotated[int, Meta(ge=1)]


class Order(msgspec.Struct, forbid_unknown_fields=True):
    """An order, as REST answers it and WebSocket order entry replies with."""

    order_id: Id
    client_order_id: str | None
    user_id: str
    symbol: str
    side: UpperSide
    type: Annotated[str, _one_of([str(t) for t in OrderType])]
    time_in_force: Annotated[str, _one_of([str(t) for t in TimeInForce])]
    post_only: bool
    self_trade_prevention: Annotated[str, _one_of([str(s) for s in SelfTradePrevention])]
    price: Amount | None
    quantity: Amount
    filled_quantity: Amount
    remaining_quantity: Amount
    status: Status
    created_at: Timestamp
    updated_at: Timestamp


class OrderList(msgspec.Struct, forbid_unknown_fields=True):
    """The caller's open orders."""

    orders: list[Order]


class CancelledOrders(msgspec.Struct, forbid_unknown_fields=True):
    """What a cancel-all cancelled."""

    cancelled: list[Id]
    count: Annotated[int, Meta(ge=0)]


class Market(msgspec.Struct, forbid_unknown_fields=True):
    """One market's rules: amounts are multiples of ``tick_size`` (price) and ``lot_size``
    (quantity); a limit order's price x quantity is at least ``min_notional``."""

    symbol: str
    base: str
    quote: str
    tick_size: Amount
    lot_size: Amount
    min_quantity: Amount
    min_notional: Amount
    maker_fee_rate: Amount
    taker_fee_rate: Amount
    fee_precision: Annotated[int, Meta(ge=0)]


class MarketList(msgspec.Struct, forbid_unknown_fields=True):
    """Every market of the server."""

    markets: list[Market]


class OrderBook(msgspec.Struct, forbid_unknown_fields=True):
    """The depth stream's book: the best levels of each side, best first; ``seq`` is the
    depth stream's, so a client can join this book to the stream's updates."""

    symbol: str
    seq: Seq
    bids: list[Level]
    asks: list[Level]


class Trade(msgspec.Struct, forbid_unknown_fields=True):
    """A public trade, as the ``trades`` stream sends it (without ``seq``)."""

    type: Annotated[str, _one_of(["trade_executed"])]
    trade_id: Id
    symbol: str
    price: Amount
    quantity: Amount
    taker_side: UpperSide
    buyer_fee: Amount
    seller_fee: Amount
    fee_asset: str
    executed_at: Timestamp
    buyer_id: Annotated[str, Meta(
        description="only when the server sets public_trade_user_ids")] | UnsetType = UNSET
    seller_id: Annotated[str, Meta(
        description="only when the server sets public_trade_user_ids")] | UnsetType = UNSET


class TradeList(msgspec.Struct, forbid_unknown_fields=True):
    """Recent trades of a market, newest first."""

    trades: list[Trade]


class Health(msgspec.Struct, forbid_unknown_fields=True):
    """``ok``; or ``degraded`` after a journal write failed: reads and streams go on,
    order entry answers 503 until a restart."""

    status: Annotated[str, _one_of(["ok", "degraded"])]
    order_entry: bool
    last_seq: Seq
    error: Annotated[str, Meta(description="why order entry stopped")] | UnsetType = UNSET


Counts = dict[str, Annotated[int, Meta(ge=0)]]
Count = Annotated[int, Meta(ge=0)]


class Stats(msgspec.Struct):
    """The server's counters since it started (``/metrics`` has them for Prometheus); a
    server may add counters (the only answer that allows unknown fields)."""

    connections: Count
    connections_total: Count
    subscriptions: Counts
    messages_sent: Counts
    messages_sent_total: Count
    messages_dropped: Count
    messages_compressed: Count
    slow_consumer_disconnects: Count
    heartbeat_timeouts: Count
    protocol_errors: Count
    handshakes_rejected: Count
    commands: Count
    commands_rejected: Count
    busy_rejections: Count
    connections_refused: Counts
    messages_rate_limited: Count
    rate_limit_disconnects: Count
    token_expirations: Count
    rest_rate_limited: Count
    orders_rate_limited: Count
    ws_order_requests: Count


ANSWERS: tuple[type[msgspec.Struct], ...] = (
    Order, OrderList, CancelledOrders, Market, MarketList, OrderBook, Trade, TradeList, Health,
    Stats,
)
"""Every answer Struct, in the order the document lists them."""
