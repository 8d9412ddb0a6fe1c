"""What the engine accepts: enums and commands.

Rules of this module:

* Commands are imperative (``PlaceOrder``) and immutable. Prices are integer
  *ticks* and quantities integer *lots* of the command's market; turning the
  human decimal strings into those integers is done once, at the boundary, by
  :class:`engine.MarketSpec`.
* Commands carry no sequence number or time. The caller stamps each one when
  it hands it to :meth:`engine.Engine.apply`, so that replaying a journal of
  stamped commands reproduces every event exactly.
* Each command is tagged (``{"type": "place", ...}``) so that a journal of
  commands decodes back to the same classes.
* They are ``msgspec`` structs, not attrs classes: constructing a frozen attrs
  instance costs about ten times more, and commands and events are built on
  the hot path (see ``docs/engine.md``, "Why msgspec structs").
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(StrEnum):
    GTC = "gtc"  # good till cancelled: the remainder rests on the book
    IOC = "ioc"  # immediate or cancel: fill what crosses now, cancel the rest
    FOK = "fok"  # fill or kill: fill completely now, or reject without trading


class SelfTradePrevention(StrEnum):
    """What happens when an incoming order meets a resting order of the same user."""

    NONE = "none"  # trade with yourself
    CANCEL_TAKER = "cancel_taker"  # cancel the incoming remainder, keep the resting order
    CANCEL_MAKER = "cancel_maker"  # cancel the resting order, keep matching
    CANCEL_BOTH = "cancel_both"  # cancel both


class PlaceOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="place"):
    """Place a limit or market order.

    ``price`` is in ticks and required for limit orders; market orders carry
    ``None``. ``time_in_force`` defaults to GTC for limit orders and IOC for
    market orders. ``order_id`` is chosen by the caller and must be new.
    """

    order_id: int
    user_id: str
    symbol: str
    side: Side
    quantity: int
    price: int | None = None
    order_type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce | None = None
    post_only: bool = False
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.NONE
    client_order_id: str | None = None


class CancelOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="cancel"):
    """Cancel one open order. Only its owner may.

    The order is named by ``order_id``, or, when ``client_order_id`` is given,
    by the owner's client id of an open order (``order_id`` is then ignored).
    The engine resolves the client id when it applies the command, so a
    cancel sent right behind its place finds the order.
    """

    user_id: str
    order_id: int = 0
    client_order_id: str | None = None


class CancelAllOrders(
    msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="cancel_all"
):
    """Cancel every open order of a user, or only those in ``symbol``."""

    user_id: str
    symbol: str | None = None


class AmendOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="amend"):
    """Change the price and/or the total quantity of an open order.

    ``quantity`` is the new *total* quantity, fills included, so it must stay
    above what has already filled. Reducing the quantity at the same price
    keeps the order's place in the queue; a new price or a larger quantity
    sends it to the back of the queue at its (new) price, where it may trade
    at once as a taker if the new price crosses.
    """

    user_id: str
    order_id: int = 0
    client_order_id: str | None = None
    """As for :class:`CancelOrder`: names the open order instead of ``order_id``."""
    price: int | None = None
    quantity: int | None = None


Command = PlaceOrder | CancelOrder | CancelAllOrders | AmendOrder
