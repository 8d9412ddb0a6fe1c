"""Validation: may this command change the engine, and if not, why not.

Rules of this module:

* Read only. Every function here looks at a command and the engine's state
  and answers with a :class:`RejectReason` (or None: valid); none changes
  anything. The engine calls them before its first mutation, so a refused
  command changes nothing but ``last_seq``.
* The checks run in the order ``docs/engine.md`` documents (§3), and the
  first failing one is the reason: the order is part of the protocol.
* Values are checked by exact type (``type(x) is int``, so ``True`` is not an
  id), and ranges against :data:`engine.MAX_UNITS`, since a command may come
  from anywhere (a decoded journal, a test, a careless caller).
* Every :class:`OrderRejected` is built by :func:`rejected`, which leaves out
  ill-typed values rather than echo them.
"""

from __future__ import annotations

from typing import Final

from engine._book import Market, RestingOrder
from engine._commands import (
    AmendOrder,
    OrderType,
    PlaceOrder,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from engine._events import Event, OrderRejected, RejectReason
from engine._markets import MAX_UNITS
from engine._matching import crosses, fillable
from engine._orders import OrderIndex

MAX_CLIENT_ORDER_ID: Final = 64
# The largest one-digit int. `0 < x < COMPACT` runs on the interpreter's fast
# int comparison; `x <= MAX_UNITS` cannot (MAX_UNITS takes three digits), so the
# range checks try the first and fall back on the second only for large values.
COMPACT: Final = (1 << 30) - 1

_BUY, _SELL = Side.BUY, Side.SELL
_GTC, _IOC, _FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET


def place_rejection(c: PlaceOrder, m: Market | None, index: OrderIndex) -> RejectReason | None:
    """Why ``c`` may not be placed, or None; ``m`` is its market (None: unknown symbol).

    A valid limit order without a time in force is GTC, a market order IOC.
    ``Engine.apply`` lets the common orders through with a stricter copy of
    these checks (``inlined: place_rejection``) and calls this for the rest:
    a rule changed here must be changed there, or made to send its orders here.
    """
    if m is None:
        return RejectReason.UNKNOWN_SYMBOL
    user, oid = c.user_id, c.order_id
    if type(user) is not str or not user:
        return RejectReason.INVALID_USER_ID
    if type(oid) is not int or not (0 < oid < COMPACT or 0 < oid <= MAX_UNITS):
        return RejectReason.INVALID_ORDER_ID
    if oid in index.by_id:
        return RejectReason.DUPLICATE_ORDER_ID
    side = c.side
    if side is not _BUY and side is not _SELL:  # identity: hashing a member runs Python code
        return RejectReason.INVALID_SIDE
    qty, price, tif, order_type = c.quantity, c.price, c.time_in_force, c.order_type
    if type(qty) is not int or not m.min_lots <= qty < COMPACT:  # min_lots >= 1
        if type(qty) is not int or not 0 < qty <= MAX_UNITS:
            return RejectReason.INVALID_QUANTITY
        if qty < m.min_lots:
            return RejectReason.BELOW_MIN_QUANTITY
    if order_type is _LIMIT:
        if type(price) is not int or not (0 < price < COMPACT or 0 < price <= MAX_UNITS):
            return RejectReason.INVALID_PRICE
        if tif is None:
            tif = _GTC
        elif tif is not _GTC and tif is not _IOC and tif is not _FOK:
            return RejectReason.INVALID_TIME_IN_FORCE
        if price * qty < m.min_notional:
            return RejectReason.BELOW_MIN_NOTIONAL
    elif order_type is _MARKET:
        if price is not None:
            return RejectReason.INVALID_PRICE
        if tif is None:
            tif = _IOC
        elif tif is not _IOC and tif is not _FOK:
            return RejectReason.INVALID_TIME_IN_FORCE
    else:
        return RejectReason.INVALID_ORDER_TYPE
    post_only, stp, cid = c.post_only, c.self_trade_prevention, c.client_order_id
    if post_only is not False and (post_only is not True or tif is not _GTC):
        return RejectReason.INVALID_POST_ONLY
    if type(stp) is not SelfTradePrevention:
        return RejectReason.INVALID_SELF_TRADE_PREVENTION
    if cid is not None:
        if type(cid) is not str or not 0 < len(cid) <= MAX_CLIENT_ORDER_ID:
            return RejectReason.INVALID_CLIENT_ORDER_ID
        if (user, cid) in index.client_ids:
            return RejectReason.DUPLICATE_CLIENT_ORDER_ID
    if post_only or tif is _FOK:  # the two checks that look at the book
        # The book was reported after the last command, so book.top holds the
        # current best prices: crossing means reaching the opposite one.
        bid, _, ask, _ = m.book.top
        if side is _BUY:
            crossing = ask is not None and (price is None or price >= ask)
        else:
            crossing = bid is not None and (price is None or price <= bid)
        if crossing:
            if post_only:
                return RejectReason.POST_ONLY_WOULD_CROSS
            opposite = m.book.asks if side is _BUY else m.book.bids
            if not fillable(opposite, price, qty, user, stp):  # tif is FOK
                return RejectReason.FOK_NOT_FILLABLE
        elif tif is _FOK:  # nothing to cross at all
            return RejectReason.FOK_NOT_FILLABLE
    return None


def amend_rejection(c: AmendOrder, order: RestingOrder, m: Market) -> RejectReason | None:
    """Why ``order``, open and owned by the amend's user, may not be amended so, or None."""
    if c.price is None and c.quantity is None:
        return RejectReason.NOTHING_TO_AMEND
    price = order.price if c.price is None else c.price
    quantity = order.quantity if c.quantity is None else c.quantity
    if type(price) is not int or not 0 < price <= MAX_UNITS:
        return RejectReason.INVALID_PRICE
    if type(quantity) is not int or not order.filled < quantity <= MAX_UNITS:
        return RejectReason.INVALID_QUANTITY
    if quantity < m.min_lots:
        return RejectReason.BELOW_MIN_QUANTITY
    if price * quantity < m.min_notional:
        return RejectReason.BELOW_MIN_NOTIONAL
    opposite = m.book.asks if order.side is _BUY else m.book.bids
    if order.post_only and price != order.price and crosses(opposite, price):
        return RejectReason.POST_ONLY_WOULD_CROSS
    return None


def refused(
    command: str, order_id: object, user_id: object, found: RestingOrder | None,
    seq: int, ts: int,
) -> list[Event]:
    """Refuse a cancel or amend of ``order_id``, which is not an open order of ``user_id``.

    ``found`` is what the order index holds for ``order_id`` (open or closed);
    the rejection names its market only while it is open.
    """
    if type(order_id) is not int or not 0 < order_id <= MAX_UNITS:
        reason = RejectReason.INVALID_ORDER_ID
    elif found is None:
        reason = RejectReason.UNKNOWN_ORDER
    elif found.user_id != user_id:
        reason = RejectReason.NOT_OWNER
    else:
        reason = RejectReason.ORDER_NOT_OPEN
    symbol = found.symbol if found is not None and found.remaining else None
    return [rejected(seq, ts, command, symbol, order_id, user_id, None, reason)]


def rejected(
    seq: int, ts: int, command: str, symbol: object, order_id: object, user_id: object,
    client_order_id: object, reason: RejectReason,
) -> OrderRejected:
    """Every OrderRejected is built here, positionally; ill-typed values are left out."""
    return OrderRejected(
        seq, ts, command,
        symbol if type(symbol) is str else None,
        order_id if type(order_id) is int and 0 < order_id <= MAX_UNITS else None,
        user_id if type(user_id) is str else "",
        client_order_id if type(client_order_id) is str else None,
        reason,
    )
