"""What the engine emits: immutable, past-tense events.

Rules of this module:

* Every event carries the ``seq`` and ``ts`` of the command that caused it.
* The list returned for one command is its complete, ordered effect: lifecycle
  events first, in the order they happen (accepted or amended; each trade
  followed by the maker's and the taker's fill; a resting order cancelled by
  self-trade prevention at the point the taker met it; the taker's own
  cancellation last), then one ``BookLevelChanged`` per price level the
  command touched (with its total, which may be unchanged), then at most one
  ``TopOfBookChanged`` per market. Nothing about the engine changes that is
  not in that list.
* Events are produced incrementally by the matching code, never by rescanning
  a book, so their cost is proportional to what the command did.
* Events may be built with keywords (recommended outside the engine); the
  engine builds them positionally, at a few commented call sites, because
  keyword construction of a 13-field struct costs four times as much. Tests
  check every field of every event by name, so a field order slip cannot
  pass unnoticed.
* Amounts are integers: prices in ticks, quantities in lots, fees in units of
  ``10 ** -fee_precision`` of the quote asset (see :class:`engine.MarketSpec`).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from engine._commands import OrderType, SelfTradePrevention, Side, TimeInForce


class OrderStatus(StrEnum):
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"


class Liquidity(StrEnum):
    MAKER = "maker"  # the order was resting on the book
    TAKER = "taker"  # the order arrived and crossed


class RejectReason(StrEnum):
    """Stable reason codes. Values are part of the public protocol."""

    UNKNOWN_SYMBOL = "unknown_symbol"
    INVALID_USER_ID = "invalid_user_id"
    INVALID_SIDE = "invalid_side"
    INVALID_ORDER_TYPE = "invalid_order_type"
    INVALID_PRICE = "invalid_price"
    PRICE_OFF_TICK = "price_off_tick"
    INVALID_QUANTITY = "invalid_quantity"
    QUANTITY_OFF_LOT = "quantity_off_lot"
    BELOW_MIN_QUANTITY = "below_min_quantity"
    BELOW_MIN_NOTIONAL = "below_min_notional"
    INVALID_TIME_IN_FORCE = "invalid_time_in_force"
    INVALID_POST_ONLY = "invalid_post_only"
    INVALID_SELF_TRADE_PREVENTION = "invalid_self_trade_prevention"
    INVALID_CLIENT_ORDER_ID = "invalid_client_order_id"
    INVALID_ORDER_ID = "invalid_order_id"
    POST_ONLY_WOULD_CROSS = "post_only_would_cross"
    FOK_NOT_FILLABLE = "fok_not_fillable"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
    UNKNOWN_ORDER = "unknown_order"
    ORDER_NOT_OPEN = "order_not_open"
    NOT_OWNER = "not_owner"
    NOTHING_TO_AMEND = "nothing_to_amend"
    UNKNOWN_COMMAND = "unknown_command"


class CancelReason(StrEnum):
    USER = "user"  # CancelOrder or CancelAllOrders
    UNFILLED = "unfilled"  # IOC or market remainder with nothing left to cross
    SELF_TRADE = "self_trade"  # removed by self-trade prevention


class OrderAccepted(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts: int
    symbol: str
    order_id: int
    user_id: str
    client_order_id: str | None
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    self_trade_prevention: SelfTradePrevention
    price: int | None
    quantity: int


class OrderRejected(msgspec.Struct, frozen=True, gc=False):
    """A command refused as a whole; it changed nothing."""

    seq: int
    ts: int
    command: str  # "place", "cancel", "cancel_all", "amend", or "unknown"
    symbol: str | None
    order_id: int | None
    user_id: str
    client_order_id: str | None
    reason: RejectReason


class TradeExecuted(msgspec.Struct, frozen=True, gc=False):
    """A fill between a resting (maker) and an incoming (taker) order, at the maker's price."""

    seq: int
    ts: int
    symbol: str
    trade_id: int
    price: int
    quantity: int
    taker_side: Side
    maker_order_id: int
    maker_user_id: str
    taker_order_id: int
    taker_user_id: str
    maker_fee: int
    taker_fee: int


class OrderFilled(msgspec.Struct, frozen=True, gc=False):
    """One order's share of a trade: what its owner learns, fee included."""

    seq: int
    ts: int
    symbol: str
    order_id: int
    user_id: str
    client_order_id: str | None
    side: Side
    trade_id: int
    price: int
    quantity: int
    fee: int
    liquidity: Liquidity
    filled: int
    remaining: int
    status: OrderStatus
    order_price: int | None  # the order's own limit price; None for a market order


class OrderCancelled(msgspec.Struct, frozen=True, gc=False):
    """An order left the book (or never reached it) without filling ``cancelled`` lots."""

    seq: int
    ts: int
    symbol: str
    order_id: int
    user_id: str
    client_order_id: str | None
    side: Side
    price: int | None
    quantity: int
    filled: int
    cancelled: int
    reason: CancelReason
    status: OrderStatus = OrderStatus.CANCELLED


class OrderAmended(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts: int
    symbol: str
    order_id: int
    user_id: str
    client_order_id: str | None
    side: Side
    price: int
    quantity: int
    filled: int
    remaining: int
    status: OrderStatus
    priority_kept: bool


class BookLevelChanged(msgspec.Struct, frozen=True, gc=False):
    """L2 delta: the new total resting quantity at one price; 0 means the level is gone."""

    seq: int
    ts: int
    symbol: str
    side: Side
    price: int
    quantity: int


class TopOfBookChanged(msgspec.Struct, frozen=True, gc=False):
    """Best bid and ask after the command; ``None`` and 0 for an empty side."""

    seq: int
    ts: int
    symbol: str
    bid_price: int | None
    bid_quantity: int
    ask_price: int | None
    ask_quantity: int


Event = (
    OrderAccepted
    | OrderRejected
    | TradeExecuted
    | OrderFilled
    | OrderCancelled
    | OrderAmended
    | BookLevelChanged
    | TopOfBookChanged
)
