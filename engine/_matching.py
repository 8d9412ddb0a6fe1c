"""Matching: orders against the book, and what a command reports about the book.

Rules of this module:

* Price-time priority. A taker takes the head of the best opposite level until
  it is filled, the book no longer crosses its limit, or self-trade
  prevention stops it; fills print at the resting (maker) order's price. Each
  fill pays ``ceil(notional * rate)`` in fee units, maker and taker rates
  apart (``engine._markets``, "Fee rule").
* Events are built as the book changes, in the order of ``engine._events``: a
  trade, then the maker's fill, then the taker's; a maker cancelled by
  self-trade prevention where the taker met it; the taker's own cancellation
  by self-trade prevention last. The book report (:func:`publish_book`) comes
  after all of them.
* :func:`fillable` answers the fill-or-kill question by walking the same
  levels in the same order as :func:`match`, without changing anything; the
  two must change together.
* A maker that leaves the book is closed in the order index at once. What a
  new order leaves after matching rests at the back of its level if it is
  GTC, and is cancelled as ``unfilled`` otherwise (:func:`take`).
* An amend to the same price and no more quantity keeps the order's place in
  its queue; any other amend is a new entry at the back, which may trade first
  (:func:`amend`).
"""

from __future__ import annotations

from typing import Final

import msgspec

from engine._book import BookSide, Level, Market, RestingOrder
from engine._commands import SelfTradePrevention, Side, TimeInForce
from engine._events import (
    BookLevelChanged,
    CancelReason,
    Event,
    Liquidity,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderStatus,
    TopOfBookChanged,
    TradeExecuted,
)
from engine._orders import OrderIndex

_NO_LIMIT: Final = -(1 << 64)  # a market order's limit key: crosses every level
_BUY = Side.BUY
_GTC = TimeInForce.GTC
_STP_NONE = SelfTradePrevention.NONE
_STP_CANCEL_TAKER = SelfTradePrevention.CANCEL_TAKER
_STP_CANCEL_MAKER = SelfTradePrevention.CANCEL_MAKER
_PARTIAL, _FILLED = OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED
_CANCELLED = OrderStatus.CANCELLED
_MAKER, _TAKER = Liquidity.MAKER, Liquidity.TAKER

Dirty = list[Level]
"""Every level a command touched, in order: what :func:`publish_book` reports."""


def match(
    m: Market, order: RestingOrder, opposite: BookSide, index: OrderIndex, trade_id: int,
    events: list[Event], dirty: Dirty, seq: int, ts: int,
) -> int:
    """Cross ``order`` against ``opposite`` as the taker; return the next trade id.

    ``trade_id`` is the id of the first trade. When self-trade prevention stops
    the taker, its remainder is cancelled here (``remaining`` becomes 0);
    otherwise the caller rests or cancels what remains.
    """
    keys = opposite.keys
    if not keys:
        return trade_id
    price = order.price
    sign = opposite.sign
    # A market order crosses every level: the worst key on the side will do,
    # as matching only ever removes keys. (A compact int, unlike a sentinel
    # beyond 2**63, keeps the comparison below on its fast path.)
    limit_key = keys[0] if price is None else price * sign
    levels = opposite.levels
    symbol, maker_side = m.symbol, opposite.side
    taker_side, user, taker_id = order.side, order.user_id, order.order_id
    taker_cid = order.client_order_id
    stp = order.self_trade_prevention
    check_stp = stp is not _STP_NONE
    maker_num, maker_den = m.maker_num, m.maker_den
    taker_num, taker_den = m.taker_num, m.taker_den
    record_trade = m.trades.append
    append = events.append
    remaining, filled = order.remaining, order.filled
    stopped = False
    while remaining and keys:
        key = keys[-1]
        if key < limit_key:
            break
        level = levels[key * sign]
        queue = level.queue
        trade_price = level.price
        dirty.append(level)
        while True:
            maker = queue[0]
            maker_left = maker.remaining
            if not maker_left:  # cancelled earlier: lazily dropped here
                queue.popleft()
                continue
            maker_user = maker.user_id
            if check_stp and maker_user == user:
                if stp is not _STP_CANCEL_TAKER:  # cancel maker, or both
                    queue.popleft()
                    level.quantity -= maker_left
                    level.count -= 1
                    report_cancelled(maker, maker_left, CancelReason.SELF_TRADE, events, seq, ts)
                    index.close(maker)
                if stp is not _STP_CANCEL_MAKER:  # cancel taker, or both
                    stopped = True
                    break
                if not level.count:
                    break
                continue
            fill = remaining if remaining < maker_left else maker_left
            remaining -= fill
            filled += fill
            maker_left -= fill
            maker_filled = maker.filled + fill
            maker_status = _PARTIAL if maker_left else _FILLED
            maker.remaining = maker_left
            maker.filled = maker_filled
            maker.status = maker_status
            maker.updated_seq = seq
            maker.updated_ts = ts
            level.quantity -= fill
            notional = trade_price * fill
            maker_fee = -((-notional * maker_num) // maker_den)
            taker_fee = -((-notional * taker_num) // taker_den)
            maker_id, maker_cid = maker.order_id, maker.client_order_id
            # Positional: field order of TradeExecuted and OrderFilled (see _events).
            trade = TradeExecuted(
                seq, ts, symbol, trade_id, trade_price, fill, taker_side,
                maker_id, maker_user, taker_id, user, maker_fee, taker_fee,
            )
            append(trade)
            record_trade(trade)
            append(
                OrderFilled(
                    seq, ts, symbol, maker_id, maker_user, maker_cid, maker_side, trade_id,
                    trade_price, fill, maker_fee, _MAKER, maker_filled, maker_left,
                    maker_status, trade_price,
                )
            )
            append(
                OrderFilled(
                    seq, ts, symbol, taker_id, user, taker_cid, taker_side, trade_id,
                    trade_price, fill, taker_fee, _TAKER, filled, remaining,
                    _PARTIAL if remaining else _FILLED, price,
                )
            )
            trade_id += 1
            if not maker_left:
                queue.popleft()
                level.count -= 1
                index.close(maker)
                if not remaining or not level.count:
                    break
            else:  # the maker is left partly filled, so the taker is filled
                break
        if not level.count:
            opposite.drop(level)
        if stopped:
            break
    order.remaining = remaining
    if filled != order.filled:
        order.filled = filled
        order.status = _PARTIAL if remaining else _FILLED
    if stopped and remaining:
        report_cancelled(order, remaining, CancelReason.SELF_TRADE, events, seq, ts)
    return trade_id


def report_cancelled(
    order: RestingOrder, cancelled: int, reason: CancelReason, events: list[Event],
    seq: int, ts: int,
) -> None:
    """Mark ``order`` cancelled and report it. The caller takes it off the book.

    ``Engine._cancel`` writes this out (``inlined: report_cancelled``).
    """
    order.remaining = 0
    order.status = _CANCELLED
    order.updated_seq = seq
    order.updated_ts = ts
    # Positional: field order of OrderCancelled (see _events); status is its default.
    events.append(
        OrderCancelled(
            seq, ts, order.symbol, order.order_id, order.user_id, order.client_order_id,
            order.side, order.price, order.quantity, order.filled, cancelled, reason,
        )
    )


def cancel_open(
    m: Market, order: RestingOrder, reason: CancelReason, index: OrderIndex,
    events: list[Event], dirty: Dirty, seq: int, ts: int,
) -> None:
    """Take an open order off the book, report it cancelled and close it."""
    side = m.book.bids if order.side is _BUY else m.book.asks
    cancelled = order.remaining
    dirty.append(side.take_out(order))
    report_cancelled(order, cancelled, reason, events, seq, ts)
    index.close(order)


def take(
    m: Market, order: RestingOrder, own: BookSide, opposite: BookSide, index: OrderIndex,
    trade_id: int, events: list[Event], seq: int, ts: int,
) -> int:
    """A new order that crosses, or is IOC or FOK: match it, then rest (GTC) or
    cancel what remains, and report the book; return the next trade id."""
    dirty: Dirty = []
    trade_id = match(m, order, opposite, index, trade_id, events, dirty, seq, ts)
    remaining = order.remaining
    if remaining and order.time_in_force is _GTC:
        dirty.append(own.add(order))
        index.open(order)
    else:
        if remaining:
            report_cancelled(order, remaining, CancelReason.UNFILLED, events, seq, ts)
        index.remember_closed(order)
    # The levels touched are distinct: each opposite level is visited once,
    # and the own level is on the other side.
    publish_levels(m, dirty, events, seq, ts)
    return trade_id


def amend(
    m: Market, order: RestingOrder, price: int, quantity: int, index: OrderIndex,
    trade_id: int, events: list[Event], dirty: Dirty, seq: int, ts: int,
) -> int:
    """Give an open order a new ``price`` and total ``quantity``; return the next trade id.

    The same price and no more quantity keep the order's place in its queue.
    Otherwise a replacement goes to the back of its (new) level, after taking
    what it crosses as a taker; the old queue entry stays behind, dead.
    """
    book = m.book
    side, opposite = (book.bids, book.asks) if order.side is _BUY else (book.asks, book.bids)
    if price == order.price and quantity <= order.quantity:
        shrink = order.quantity - quantity
        level = side.levels[price]
        level.quantity -= shrink
        order.remaining -= shrink
        order.quantity = quantity
        order.updated_seq, order.updated_ts = seq, ts
        dirty.append(level)
        events.append(_amended(order, True, seq, ts))
        return trade_id
    replacement = msgspec.structs.replace(
        order, price=price, quantity=quantity, remaining=quantity - order.filled,
        updated_seq=seq, updated_ts=ts,
    )
    dirty.append(side.take_out(order))
    index.replace(replacement)
    events.append(_amended(replacement, False, seq, ts))
    if crosses(opposite, price):
        trade_id = match(m, replacement, opposite, index, trade_id, events, dirty, seq, ts)
    if replacement.remaining:
        dirty.append(side.add(replacement))
    else:
        index.close(replacement)
    return trade_id


def _amended(order: RestingOrder, priority_kept: bool, seq: int, ts: int) -> OrderAmended:
    assert order.price is not None
    # Positional: field order of OrderAmended (see _events).
    return OrderAmended(
        seq, ts, order.symbol, order.order_id, order.user_id, order.client_order_id,
        order.side, order.price, order.quantity, order.filled, order.remaining,
        order.status, priority_kept,
    )


def publish_book(m: Market, dirty: Dirty, events: list[Event], seq: int, ts: int) -> None:
    """Report the final quantity of every touched level, then the top of book if it moved."""
    if len(dirty) > 1:
        # One event per price: a level emptied and re-created by the same
        # command (an amend at the same price) is reported once, as it ends.
        # Keyed by the signed price, not (side, price): hashing an enum member
        # runs Python code.
        dirty = list(
            {level.price if level.side is _BUY else -level.price: level for level in dirty}
            .values()
        )
    publish_levels(m, dirty, events, seq, ts)


def publish_levels(m: Market, levels: Dirty, events: list[Event], seq: int, ts: int) -> None:
    """:func:`publish_book` for ``levels`` known to be distinct (a place touches each once).

    ``Engine.apply`` (an order resting) and ``Engine._cancel`` write this out
    for their one level (``inlined: publish_levels``): change all three together.
    """
    symbol = m.symbol
    append = events.append
    book = m.book
    bid, _, ask, _ = book.top
    moved = False
    for level in levels:
        price, side = level.price, level.side
        append(BookLevelChanged(seq, ts, symbol, side, price, level.quantity))
        # A level strictly behind the reported best cannot move the top of book.
        if not moved:
            moved = (bid is None or price >= bid) if side is _BUY else (ask is None or price <= ask)
    if moved:
        top = book.current_top()
        if top != book.top:
            book.top = top
            append(TopOfBookChanged(seq, ts, symbol, *top))


def crosses(opposite: BookSide, price: int | None) -> bool:
    """Whether an order at ``price`` (None: market) would take liquidity from ``opposite``."""
    if not opposite.keys:
        return False
    return price is None or opposite.keys[-1] >= price * opposite.sign


def fillable(
    opposite: BookSide, price: int | None, quantity: int, user: str, stp: SelfTradePrevention
) -> bool:
    """Whether a taker would fill completely right now. Reads, never mutates.

    It mirrors :func:`match`: under CANCEL_MAKER an own resting order is
    skipped (it would be cancelled), under CANCEL_TAKER or CANCEL_BOTH the
    first own order ends the fill.
    """
    limit_key = _NO_LIMIT if price is None else price * opposite.sign
    needed = quantity
    for level in opposite:
        if level.price * opposite.sign < limit_key:
            return False
        if stp is _STP_NONE:
            needed -= level.quantity
        else:
            for maker in level.live():
                if maker.user_id != user:
                    needed -= maker.remaining
                elif stp is not _STP_CANCEL_MAKER:
                    return False
                if needed <= 0:
                    return True
        if needed <= 0:
            return True
    return False
