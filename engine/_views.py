"""Read-only views the engine hands out: query results and the exportable state.

Rules of this module: these are plain immutable values with no reference to the
engine's mutable objects, so a caller may keep them, send them to another task
or encode them (``msgspec.json.encode``) without copying.
"""

from __future__ import annotations

import msgspec

from engine._commands import OrderType, SelfTradePrevention, Side, TimeInForce
from engine._events import OrderStatus, TradeExecuted


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the engine knows it now. ``remaining`` is 0 once it is closed."""

    order_id: int
    user_id: str
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    self_trade_prevention: SelfTradePrevention
    client_order_id: str | None
    price: int | None
    quantity: int
    filled: int
    remaining: int
    status: OrderStatus
    created_seq: int
    created_ts: int
    updated_seq: int
    updated_ts: int


class DepthLevel(msgspec.Struct, frozen=True, array_like=True):
    """One aggregated L2 level; ``[price, quantity, orders]`` on the wire."""

    price: int
    quantity: int
    orders: int


class Depth(msgspec.Struct, frozen=True, kw_only=True):
    """L2 view, best level first on each side."""

    symbol: str
    bids: list[DepthLevel]
    asks: list[DepthLevel]


class TopOfBook(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    bid_price: int | None
    bid_quantity: int
    ask_price: int | None
    ask_quantity: int


class BookQueue(msgspec.Struct, frozen=True, kw_only=True):
    """L3 view: every resting order, best level first, oldest first within a level."""

    symbol: str
    bids: list[Order]
    asks: list[Order]


class MarketState(msgspec.Struct, frozen=True, kw_only=True):
    spec: dict[str, str | int]
    book: BookQueue
    trades: list[TradeExecuted]  # oldest first


class EngineState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to rebuild an engine, queue positions included."""

    last_seq: int
    next_trade_id: int
    order_history: int
    trade_history: int
    markets: list[MarketState]
    closed_orders: list[Order]  # oldest first: the order in which they are forgotten
    # Every user's open order ids in the user's own order (users sorted by id):
    # open_orders() and CancelAllOrders follow it, and the books alone do not hold it.
    user_orders: list[int]
