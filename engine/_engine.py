"""The matching engine: stamped commands in, events out.

Rules of this module:

* Pure and deterministic. No clock, no randomness, no I/O: sequence numbers,
  timestamps and order ids come in with the commands, so the same stamped
  commands always produce the same events and the same :meth:`Engine.state_hash`.
* Bad input never raises and never changes state: every command is fully
  validated before the first mutation, and a refused command yields exactly
  one :class:`OrderRejected`. The only exception :meth:`Engine.apply` raises
  is :class:`SequenceError`, which is the caller's bug, not the client's.
* Matching is price-time priority; fills print at the resting order's price.
  ``docs/engine.md`` writes down every rule, and the code below follows it.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Final

import attrs
import msgspec

from engine._book import Book, BookSide, Level, RestingOrder
from engine._commands import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    OrderType,
    PlaceOrder,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from engine._events import (
    BookLevelChanged,
    CancelReason,
    Event,
    Liquidity,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    RejectReason,
    TopOfBookChanged,
    TradeExecuted,
)
from engine._markets import DEFAULT_MARKETS, MAX_UNITS, MarketSpec
from engine._views import (
    BookQueue,
    Depth,
    DepthLevel,
    EngineState,
    MarketState,
    Order,
    TopOfBook,
)

_NO_LIMIT: Final = -(1 << 64)  # a market order's limit key: crosses every level
_MAX_CLIENT_ORDER_ID: Final = 64
# The largest one-digit int. `0 < x < _COMPACT` runs on the interpreter's fast
# int comparison; `x <= MAX_UNITS` cannot (MAX_UNITS takes three digits), so the
# range checks try the first and fall back on the second only for large values.
_COMPACT: Final = (1 << 30) - 1

_BUY, _SELL = Side.BUY, Side.SELL
_GTC, _IOC, _FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET
_STP_NONE = SelfTradePrevention.NONE
_STP_CANCEL_TAKER = SelfTradePrevention.CANCEL_TAKER
_STP_CANCEL_MAKER = SelfTradePrevention.CANCEL_MAKER
_NEW, _PARTIAL = OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED
_FILLED, _CANCELLED = OrderStatus.FILLED, OrderStatus.CANCELLED
_MAKER, _TAKER = Liquidity.MAKER, Liquidity.TAKER
_USER = CancelReason.USER

_Dirty = list[Level]  # every level a command touched, in order


class SequenceError(ValueError):
    """A command was stamped with a sequence number that is not after the last one.

    This is a bug in the caller (whoever stamps commands), not bad client input.
    """


class _Market:
    """One market's book plus its rules pre-computed as integers."""

    __slots__ = (
        "book",
        "maker_den",
        "maker_num",
        "min_lots",
        "min_notional",
        "spec",
        "symbol",
        "taker_den",
        "taker_num",
        "trades",
    )

    def __init__(self, spec: MarketSpec, trade_history: int) -> None:
        self.spec = spec
        self.symbol = spec.symbol
        self.book = Book()
        self.min_lots = spec.min_lots
        self.min_notional = spec.min_notional_units
        self.maker_num, self.maker_den = spec.fee_factor(spec.maker_fee_rate)
        self.taker_num, self.taker_den = spec.fee_factor(spec.taker_fee_rate)
        self.trades: deque[TradeExecuted] = deque(maxlen=trade_history)


class Engine:
    """A multi-market, price-time priority matching engine.

    Args:
        markets: the markets to trade; the seed's ``BTC/USDT`` and ``ETH/USDT``
            when omitted.
        order_history: how many closed (filled or cancelled) orders to keep for
            :meth:`order` lookups; the oldest is forgotten first.
        trade_history: how many recent trades to keep per market.
    """

    def __init__(
        self,
        markets: Iterable[MarketSpec] = DEFAULT_MARKETS,
        *,
        order_history: int = 100_000,
        trade_history: int = 1_000,
    ) -> None:
        self._markets: dict[str, _Market] = {}
        for spec in markets:
            if spec.symbol in self._markets:
                raise ValueError(f"market {spec.symbol!r} is configured twice")
            self._markets[spec.symbol] = _Market(spec, trade_history)
        if not self._markets:
            raise ValueError("an engine needs at least one market")
        if order_history < 0 or trade_history < 0:
            raise ValueError("history sizes must not be negative")
        self._order_history = order_history
        self._trade_history = trade_history
        self._last_seq = 0
        self._next_trade_id = 1
        # Open orders and the closed history share one index: an order is open
        # while its ``remaining`` is positive. ``_closed_fifo`` lists the closed
        # ones, oldest first, to forget them beyond ``order_history``.
        self._orders: dict[int, RestingOrder] = {}
        self._closed_fifo: deque[int] = deque()
        self._by_user: dict[str, dict[int, RestingOrder]] = {}  # open orders only
        self._client_ids: dict[tuple[str, str], int] = {}  # of open orders

    # ------------------------------------------------------------------ commands

    def apply(self, command: Command, *, seq: int, ts: int) -> list[Event]:
        """Apply one command stamped with ``seq`` and ``ts``; return everything it caused.

        Raises:
            SequenceError: ``seq`` is not greater than the last applied one.
        """
        if type(seq) is not int or seq <= self._last_seq:
            raise SequenceError(f"seq {seq!r} is not after {self._last_seq}")
        self._last_seq = seq
        kind = type(command)
        if kind is not PlaceOrder:
            if kind is CancelOrder:
                return self._cancel(command, seq, ts)  # type: ignore[arg-type]
            return self._apply_other(command, seq, ts)
        # PlaceOrder, three commands in four: written out here rather than in a
        # method of its own, which saves a call per command. In order:
        # validation, then resting (the most common case) or matching, the
        # order indexes, the closed history and the book report. Only the
        # matching loop (:meth:`_match`, shared with amend) is a call.
        # The checks run in the documented order; the first failing one is the reason.
        c: PlaceOrder = command  # type: ignore[assignment]
        symbol = c.symbol
        m = self._markets.get(symbol) if type(symbol) is str else None
        if m is None:
            return self._reject_place(c, RejectReason.UNKNOWN_SYMBOL, seq, ts)
        user, oid = c.user_id, c.order_id
        if type(user) is not str or not user:
            return self._reject_place(c, RejectReason.INVALID_USER_ID, seq, ts)
        if type(oid) is not int or not (0 < oid < _COMPACT or 0 < oid <= MAX_UNITS):
            return self._reject_place(c, RejectReason.INVALID_ORDER_ID, seq, ts)
        orders = self._orders
        if oid in orders:
            return self._reject_place(c, RejectReason.DUPLICATE_ORDER_ID, seq, ts)
        side, book = c.side, m.book
        if side is _BUY:  # identity, not `in`: hashing an enum member runs Python code
            own, opposite = book.bids, book.asks
        elif side is _SELL:
            own, opposite = book.asks, book.bids
        else:
            return self._reject_place(c, RejectReason.INVALID_SIDE, seq, ts)
        qty, price, tif, order_type = c.quantity, c.price, c.time_in_force, c.order_type
        if type(qty) is not int or not m.min_lots <= qty < _COMPACT:  # min_lots >= 1
            if type(qty) is not int or not 0 < qty <= MAX_UNITS:
                return self._reject_place(c, RejectReason.INVALID_QUANTITY, seq, ts)
            if qty < m.min_lots:
                return self._reject_place(c, RejectReason.BELOW_MIN_QUANTITY, seq, ts)
        if order_type is _LIMIT:
            if type(price) is not int or not (0 < price < _COMPACT or 0 < price <= MAX_UNITS):
                return self._reject_place(c, RejectReason.INVALID_PRICE, seq, ts)
            if tif is None:
                tif = _GTC
            elif tif is not _GTC and tif is not _IOC and tif is not _FOK:
                return self._reject_place(c, RejectReason.INVALID_TIME_IN_FORCE, seq, ts)
            if price * qty < m.min_notional:
                return self._reject_place(c, RejectReason.BELOW_MIN_NOTIONAL, seq, ts)
        elif order_type is _MARKET:
            if price is not None:
                return self._reject_place(c, RejectReason.INVALID_PRICE, seq, ts)
            if tif is None:
                tif = _IOC
            elif tif is not _IOC and tif is not _FOK:
                return self._reject_place(c, RejectReason.INVALID_TIME_IN_FORCE, seq, ts)
        else:
            return self._reject_place(c, RejectReason.INVALID_ORDER_TYPE, seq, ts)
        post_only, stp, cid = c.post_only, c.self_trade_prevention, c.client_order_id
        if post_only is not False and (post_only is not True or tif is not _GTC):
            return self._reject_place(c, RejectReason.INVALID_POST_ONLY, seq, ts)
        if type(stp) is not SelfTradePrevention:
            return self._reject_place(c, RejectReason.INVALID_SELF_TRADE_PREVENTION, seq, ts)
        if cid is not None:
            if type(cid) is not str or not 0 < len(cid) <= _MAX_CLIENT_ORDER_ID:
                return self._reject_place(c, RejectReason.INVALID_CLIENT_ORDER_ID, seq, ts)
            if (user, cid) in self._client_ids:
                return self._reject_place(c, RejectReason.DUPLICATE_CLIENT_ORDER_ID, seq, ts)
        # The book was reported after the last command, so book.top holds the
        # current best prices: crossing means reaching the opposite one.
        bid, bid_qty, ask, ask_qty = book.top
        if side is _BUY:
            crossing = ask is not None and (price is None or price >= ask)
        else:
            crossing = bid is not None and (price is None or price <= bid)
        if crossing:
            if post_only:
                return self._reject_place(c, RejectReason.POST_ONLY_WOULD_CROSS, seq, ts)
            if tif is _FOK and not _fillable(opposite, price, qty, user, stp):
                return self._reject_place(c, RejectReason.FOK_NOT_FILLABLE, seq, ts)
        elif tif is _FOK:  # nothing to cross at all
            return self._reject_place(c, RejectReason.FOK_NOT_FILLABLE, seq, ts)

        # Valid: from here on the command changes the engine.
        symbol = m.symbol
        # Positional: field order of RestingOrder (see _book) and OrderAccepted (see _events).
        order = RestingOrder(
            qty, user, symbol, 0, oid, price, side, cid, qty, _NEW, seq, ts,
            order_type, tif, post_only, stp, seq, ts,
        )
        accepted = OrderAccepted(
            seq, ts, symbol, oid, user, cid, side, order_type, tif, post_only, stp, price, qty,
        )
        if not crossing:
            if tif is not _GTC:  # IOC with nothing to cross
                events: list[Event] = [accepted]
                self._report_cancelled(order, qty, CancelReason.UNFILLED, events, seq, ts)
                self._remember_closed(order)
                return events
            # Rest, the most common command: BookSide.add and the indexes.
            assert price is not None  # a GTC order is a limit order
            level = own.levels.get(price)
            if level is None:
                level = own.add(order)
            else:
                level.queue.append(order)
                level.quantity += qty
                level.count += 1
            orders[oid] = order
            mine = self._by_user.get(user)
            if mine is None:
                self._by_user[user] = {oid: order}
            else:
                mine[oid] = order
            if cid is not None:
                self._client_ids[user, cid] = oid
            # The book report for a single level. book.top is current (above): a
            # level behind its side's best leaves it alone, and a rest at or above
            # the best always changes it.
            level_qty = level.quantity
            changed = BookLevelChanged(seq, ts, symbol, side, price, level_qty)
            if side is _BUY:
                if bid is not None and price < bid:
                    return [accepted, changed]
                book.top = (price, level_qty, ask, ask_qty)
                return [
                    accepted, changed,
                    TopOfBookChanged(seq, ts, symbol, price, level_qty, ask, ask_qty),
                ]
            if ask is not None and price > ask:
                return [accepted, changed]
            book.top = (bid, bid_qty, price, level_qty)
            return [
                accepted, changed,
                TopOfBookChanged(seq, ts, symbol, bid, bid_qty, price, level_qty),
            ]

        # Take: match, then rest or close the remainder, then report the book.
        events = [accepted]
        dirty: _Dirty = []
        stopped = self._match(m, order, opposite, events, dirty, seq, ts)
        remaining = order.remaining
        if remaining and not stopped and tif is _GTC:
            assert price is not None
            level = own.levels.get(price)
            if level is None:
                level = own.add(order)
            else:
                level.queue.append(order)
                level.quantity += remaining
                level.count += 1
            orders[oid] = order
            mine = self._by_user.get(user)
            if mine is None:
                self._by_user[user] = {oid: order}
            else:
                mine[oid] = order
            if cid is not None:
                self._client_ids[user, cid] = oid
            dirty.append(level)
        else:
            if remaining:
                self._report_cancelled(
                    order, remaining, CancelReason.SELF_TRADE if stopped else CancelReason.UNFILLED,
                    events, seq, ts,
                )
            # _remember_closed
            orders[oid] = order
            fifo = self._closed_fifo
            fifo.append(oid)
            if len(fifo) > self._order_history:
                del orders[fifo.popleft()]
        # The levels touched are distinct (each opposite level is visited once,
        # and the own level is on the other side), so no de-duplication here.
        append = events.append
        for level in dirty:
            append(BookLevelChanged(seq, ts, symbol, level.side, level.price, level.quantity))
        # Book.current_top, written out; the top is reported only if it changed.
        side_ = book.bids
        keys = side_.keys
        if keys:
            level = side_.levels[keys[-1]]
            bid, bid_qty = level.price, level.quantity
        else:
            bid, bid_qty = None, 0
        side_ = book.asks
        keys = side_.keys
        if keys:
            level = side_.levels[-keys[-1]]
            ask, ask_qty = level.price, level.quantity
        else:
            ask, ask_qty = None, 0
        top = (bid, bid_qty, ask, ask_qty)
        if top != book.top:
            book.top = top
            append(TopOfBookChanged(seq, ts, symbol, bid, bid_qty, ask, ask_qty))
        return events

    def _apply_other(self, command: Command, seq: int, ts: int) -> list[Event]:
        """:meth:`apply` for everything but a place or a cancel."""
        kind = type(command)
        if kind is AmendOrder:
            return self._amend(command, seq, ts)  # type: ignore[arg-type]
        if kind is CancelAllOrders:
            return self._cancel_all(command, seq, ts)  # type: ignore[arg-type]
        user = getattr(command, "user_id", "")
        return [_rejected(seq, ts, "unknown", None, None, user, None, RejectReason.UNKNOWN_COMMAND)]

    @staticmethod
    def _reject_place(c: PlaceOrder, reason: RejectReason, seq: int, ts: int) -> list[Event]:
        return [
            _rejected(
                seq, ts, "place", c.symbol, c.order_id, c.user_id, c.client_order_id, reason
            )
        ]

    def _rest(self, own: BookSide, order: RestingOrder) -> Level:
        """Put an open order on its side of the book and in the indexes; return its level."""
        level = own.add(order)
        oid, user = order.order_id, order.user_id
        self._orders[oid] = order
        mine = self._by_user.get(user)
        if mine is None:
            self._by_user[user] = {oid: order}
        else:
            mine[oid] = order
        if order.client_order_id is not None:
            self._client_ids[user, order.client_order_id] = oid
        return level

    def _match(
        self,
        m: _Market,
        order: RestingOrder,
        opposite: BookSide,
        events: list[Event],
        dirty: _Dirty,
        seq: int,
        ts: int,
    ) -> bool:
        """Cross ``order`` against the opposite side as the taker.

        Takes the head of the best level until the order is filled, the book
        no longer crosses its limit, or self-trade prevention stops it.
        Returns True when self-trade prevention cancelled the taker; the
        caller then cancels what remains instead of resting it. A maker that
        fills completely is closed here (:meth:`_close`, written out).
        """
        keys = opposite.keys
        if not keys:
            return False
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
        orders, by_user, client_ids = self._orders, self._by_user, self._client_ids
        fifo = self._closed_fifo
        history = self._order_history
        trade_id = self._next_trade_id
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
                        self._report_cancelled(
                            maker, maker_left, CancelReason.SELF_TRADE, events, seq, ts
                        )
                        self._close(maker)
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
                    # _close(maker)
                    mine = by_user[maker_user]
                    del mine[maker_id]
                    if not mine:
                        del by_user[maker_user]
                    if maker_cid is not None:
                        del client_ids[maker_user, maker_cid]
                    fifo.append(maker_id)
                    if len(fifo) > history:
                        del orders[fifo.popleft()]
                    if not remaining or not level.count:
                        break
                else:  # the maker is left partly filled, so the taker is filled
                    break
            if not level.count:
                opposite.drop(level)
            if stopped:
                break
        self._next_trade_id = trade_id
        order.remaining = remaining
        if filled != order.filled:
            order.filled = filled
            order.status = _PARTIAL if remaining else _FILLED
        return stopped

    @staticmethod
    def _report_cancelled(
        order: RestingOrder,
        cancelled: int,
        reason: CancelReason,
        events: list[Event],
        seq: int,
        ts: int,
    ) -> None:
        """Mark ``order`` cancelled and report it. The caller takes it off the book."""
        order.remaining = 0
        order.status = _CANCELLED
        order.updated_seq = seq
        order.updated_ts = ts
        events.append(
            OrderCancelled(
                seq, ts, order.symbol, order.order_id, order.user_id, order.client_order_id,
                order.side, order.price, order.quantity, order.filled, cancelled, reason,
            )
        )

    def _close(self, order: RestingOrder) -> None:
        """Move an order that was open to the closed history."""
        oid, user = order.order_id, order.user_id
        mine = self._by_user[user]
        del mine[oid]
        if not mine:
            del self._by_user[user]
        if order.client_order_id is not None:
            del self._client_ids[user, order.client_order_id]
        fifo = self._closed_fifo
        fifo.append(oid)
        if len(fifo) > self._order_history:
            del self._orders[fifo.popleft()]

    def _remember_closed(self, order: RestingOrder) -> None:
        """Add an order that never rested to the closed history."""
        oid = order.order_id
        self._orders[oid] = order
        fifo = self._closed_fifo
        fifo.append(oid)
        if len(fifo) > self._order_history:
            del self._orders[fifo.popleft()]

    def _publish_book(
        self, m: _Market, dirty: _Dirty, events: list[Event], seq: int, ts: int
    ) -> None:
        """Report the final quantity of every touched level, then the top of book if it moved."""
        symbol = m.symbol
        if len(dirty) > 1:
            # One event per price: a level emptied and re-created by the same
            # command (an amend at the same price) is reported once, as it ends.
            # Keyed by the signed price, not (side, price): hashing an enum member
            # runs Python code.
            dirty = list(
                {level.price if level.side is _BUY else -level.price: level for level in dirty}
                .values()
            )
        append = events.append
        book = m.book
        bid, _, ask, _ = book.top
        moved = False
        for level in dirty:
            price = level.price
            append(BookLevelChanged(seq, ts, symbol, level.side, price, level.quantity))
            # A level strictly behind the reported best cannot move the top of book.
            if level.side is _BUY:
                moved = moved or bid is None or price >= bid
            else:
                moved = moved or ask is None or price <= ask
        if moved:
            top = book.current_top()
            if top != book.top:
                book.top = top
                append(TopOfBookChanged(seq, ts, symbol, *top))

    def _refuse(
        self, command: str, order_id: object, user_id: object, found: RestingOrder | None,
        seq: int, ts: int,
    ) -> list[Event]:
        """Refuse a cancel or amend of ``order_id``, which is not an open order of ``user_id``.

        ``found`` is what the order index holds for ``order_id`` (open or closed).
        The OrderRejected is built here, as :func:`_rejected` would.
        """
        if type(order_id) is not int or not 0 < order_id <= MAX_UNITS:
            reason = RejectReason.INVALID_ORDER_ID
        elif found is None:
            reason = RejectReason.UNKNOWN_ORDER
        elif found.user_id != user_id:
            reason = RejectReason.NOT_OWNER
        else:
            reason = RejectReason.ORDER_NOT_OPEN
        return [
            OrderRejected(
                seq, ts, command,
                found.symbol if found is not None and found.remaining else None,
                order_id if type(order_id) is int and 0 < order_id <= MAX_UNITS else None,
                user_id if type(user_id) is str else "",
                None,
                reason,
            )
        ]

    def _cancel(self, c: CancelOrder, seq: int, ts: int) -> list[Event]:
        """Cancel one open order: ``_cancel_open`` and a one-level ``_publish_book``, inlined."""
        oid, user = c.order_id, c.user_id
        if c.client_order_id is not None:
            found = self._by_client_id(user, c.client_order_id)
            if found is None:
                return self._unknown_client_id("cancel", c.client_order_id, user, seq, ts)
            oid = found
        orders = self._orders
        order = orders.get(oid) if type(oid) is int else None
        if order is None or not order.remaining or order.user_id != user:
            return self._refuse("cancel", oid, user, order, seq, ts)
        # From here on, the order's own fields: ``user`` may be an equal str of another type.
        symbol, user = order.symbol, order.user_id
        book = self._markets[symbol].book
        side, price, cancelled = order.side, order.price, order.remaining
        assert price is not None  # only limit orders rest
        own = book.bids if side is _BUY else book.asks
        # BookSide.take_out
        level = own.levels[price]
        level_qty = level.quantity - cancelled
        level.quantity = level_qty
        level.count -= 1
        if not level.count:
            own.drop(level)
        # _report_cancelled
        order.remaining = 0
        order.status = _CANCELLED
        order.updated_seq = seq
        order.updated_ts = ts
        cid = order.client_order_id
        # Positional: field order of OrderCancelled (see _events); status is its default.
        report = OrderCancelled(
            seq, ts, symbol, oid, user, cid, side, price, order.quantity, order.filled,
            cancelled, _USER,
        )
        # _close
        by_user = self._by_user
        mine = by_user[user]
        del mine[oid]
        if not mine:
            del by_user[user]
        if cid is not None:
            del self._client_ids[user, cid]
        fifo = self._closed_fifo
        fifo.append(oid)
        if len(fifo) > self._order_history:
            del orders[fifo.popleft()]
        changed = BookLevelChanged(seq, ts, symbol, side, price, level_qty)
        # book.top is current (see apply). A resting order is never better than
        # its side's best, so it is either behind it, or at it and moves it.
        top = book.top
        if price != (top[0] if side is _BUY else top[2]):
            return [report, changed]
        top = book.top = book.current_top()
        return [report, changed, TopOfBookChanged(seq, ts, symbol, *top)]

    def _by_client_id(self, user_id: object, client_order_id: object) -> int | None:
        """The id of ``user_id``'s open order with ``client_order_id``, if there is one."""
        if type(user_id) is not str or type(client_order_id) is not str:
            return None
        return self._client_ids.get((user_id, client_order_id))

    @staticmethod
    def _unknown_client_id(
        command: str, client_order_id: object, user_id: object, seq: int, ts: int
    ) -> list[Event]:
        return [_rejected(seq, ts, command, None, None, user_id, client_order_id,
                          RejectReason.UNKNOWN_ORDER)]

    def _cancel_open(
        self, m: _Market, order: RestingOrder, reason: CancelReason,
        events: list[Event], dirty: _Dirty, seq: int, ts: int,
    ) -> None:
        """Take an open order off the book, report it cancelled and close it."""
        side = m.book.bids if order.side is _BUY else m.book.asks
        cancelled = order.remaining
        dirty.append(side.take_out(order))
        self._report_cancelled(order, cancelled, reason, events, seq, ts)
        self._close(order)

    def _cancel_all(self, c: CancelAllOrders, seq: int, ts: int) -> list[Event]:
        symbol = c.symbol
        if symbol is not None and (type(symbol) is not str or symbol not in self._markets):
            return [
                _rejected(
                    seq, ts, "cancel_all", symbol, None, c.user_id, None,
                    RejectReason.UNKNOWN_SYMBOL,
                )
            ]
        user = c.user_id
        mine = self._by_user.get(user) if type(user) is str else None
        if not mine:
            return []
        events: list[Event] = []
        dirty_by_market: dict[str, _Dirty] = {}
        for order in list(mine.values()):
            if symbol is not None and order.symbol != symbol:
                continue
            m = self._markets[order.symbol]
            dirty = dirty_by_market.setdefault(m.symbol, [])
            self._cancel_open(m, order, CancelReason.USER, events, dirty, seq, ts)
        for market_symbol, dirty in dirty_by_market.items():
            self._publish_book(self._markets[market_symbol], dirty, events, seq, ts)
        return events

    def _amend(self, c: AmendOrder, seq: int, ts: int) -> list[Event]:
        oid, user = c.order_id, c.user_id
        if c.client_order_id is not None:
            found = self._by_client_id(user, c.client_order_id)
            if found is None:
                return self._unknown_client_id("amend", c.client_order_id, user, seq, ts)
            oid = found
        order = self._orders.get(oid) if type(oid) is int else None
        if order is None or not order.remaining or order.user_id != user:
            return self._refuse("amend", oid, user, order, seq, ts)
        assert order.price is not None
        m = self._markets[order.symbol]
        reason = self._check_amend(c, order, m)
        if reason is not None:
            return [_rejected(seq, ts, "amend", order.symbol, oid, user, None, reason)]
        price = order.price if c.price is None else c.price
        quantity = order.quantity if c.quantity is None else c.quantity
        events: list[Event] = []
        dirty: _Dirty = []
        keep_priority = price == order.price and quantity <= order.quantity
        if keep_priority:
            shrink = order.quantity - quantity
            side = m.book.bids if order.side is _BUY else m.book.asks
            level = side.levels[price]
            level.quantity -= shrink
            order.remaining -= shrink
            order.quantity = quantity
            order.updated_seq, order.updated_ts = seq, ts
            dirty.append(level)
            events.append(self._amended(order, True, seq, ts))
        else:
            # The old queue entry stays behind, dead; a new object takes its place.
            replacement = msgspec.structs.replace(
                order, price=price, quantity=quantity, remaining=quantity - order.filled,
                updated_seq=seq, updated_ts=ts,
            )
            side = m.book.bids if order.side is _BUY else m.book.asks
            dirty.append(side.take_out(order))
            self._orders[order.order_id] = replacement
            self._by_user[order.user_id][order.order_id] = replacement
            events.append(self._amended(replacement, False, seq, ts))
            opposite = m.book.asks if order.side is _BUY else m.book.bids
            stopped = _crosses(opposite, price) and self._match(
                m, replacement, opposite, events, dirty, seq, ts
            )
            if replacement.remaining and not stopped:
                dirty.append(side.add(replacement))
            else:
                if replacement.remaining:
                    self._report_cancelled(
                        replacement, replacement.remaining, CancelReason.SELF_TRADE,
                        events, seq, ts,
                    )
                self._close(replacement)
        self._publish_book(m, dirty, events, seq, ts)
        return events

    def _check_amend(self, c: AmendOrder, order: RestingOrder, m: _Market) -> RejectReason | None:
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
        if order.post_only and price != order.price and _crosses(opposite, price):
            return RejectReason.POST_ONLY_WOULD_CROSS
        return None

    @staticmethod
    def _amended(order: RestingOrder, priority_kept: bool, seq: int, ts: int) -> OrderAmended:
        assert order.price is not None
        return OrderAmended(
            seq, ts, order.symbol, order.order_id, order.user_id, order.client_order_id,
            order.side, order.price, order.quantity, order.filled, order.remaining,
            order.status, priority_kept,
        )

    # ------------------------------------------------------------------- queries

    @property
    def last_seq(self) -> int:
        """The sequence number of the last applied command (0 before the first)."""
        return self._last_seq

    @property
    def markets(self) -> Mapping[str, MarketSpec]:
        return {symbol: m.spec for symbol, m in self._markets.items()}

    def order(self, order_id: int) -> Order | None:
        """An open order, or a closed one still in the history; None otherwise."""
        found = self._orders.get(order_id)
        return None if found is None else _view(found)

    def open_order_by_client_id(self, user_id: str, client_order_id: str) -> Order | None:
        """``user_id``'s open order with ``client_order_id``; None if there is none."""
        found = self._by_client_id(user_id, client_order_id)
        return None if found is None else _view(self._orders[found])

    def open_orders(self, user_id: str, symbol: str | None = None) -> list[Order]:
        """A user's open orders, oldest first."""
        mine = self._by_user.get(user_id, {})
        return [_view(o) for o in mine.values() if symbol is None or o.symbol == symbol]

    def depth(self, symbol: str, levels: int | None = None) -> Depth:
        """L2: aggregated levels, best first, at most ``levels`` per side.

        Raises:
            KeyError: unknown ``symbol``.
        """
        book = self._markets[symbol].book
        return Depth(symbol=symbol, bids=_aggregate(book.bids, levels),
                     asks=_aggregate(book.asks, levels))

    def queue(self, symbol: str) -> BookQueue:
        """L3: every resting order in priority order. Raises KeyError for an unknown symbol."""
        book = self._markets[symbol].book
        return BookQueue(
            symbol=symbol,
            bids=[_view(o) for level in book.bids for o in level.live()],
            asks=[_view(o) for level in book.asks for o in level.live()],
        )

    def top_of_book(self, symbol: str) -> TopOfBook:
        """Best bid and ask. Raises KeyError for an unknown symbol."""
        bid, bid_qty, ask, ask_qty = self._markets[symbol].book.current_top()
        return TopOfBook(symbol=symbol, bid_price=bid, bid_quantity=bid_qty,
                         ask_price=ask, ask_quantity=ask_qty)

    def recent_trades(self, symbol: str, limit: int | None = None) -> list[TradeExecuted]:
        """The market's most recent trades, newest first. Raises KeyError for an unknown symbol."""
        trades = self._markets[symbol].trades
        return list(islice(reversed(trades), None if limit is None else max(0, limit)))

    # ----------------------------------------------------------- state and hash

    def export_state(self) -> EngineState:
        """Everything needed by :meth:`restore`, as plain immutable values."""
        return EngineState(
            last_seq=self._last_seq,
            next_trade_id=self._next_trade_id,
            order_history=self._order_history,
            trade_history=self._trade_history,
            markets=[
                MarketState(
                    spec=_spec_fields(m.spec),
                    book=self.queue(symbol),
                    trades=list(m.trades),
                )
                for symbol, m in self._markets.items()
            ],
            closed_orders=[_view(self._orders[oid]) for oid in self._closed_fifo],
            user_orders=[oid for user in sorted(self._by_user) for oid in self._by_user[user]],
        )

    @classmethod
    def restore(cls, state: EngineState) -> Engine:
        """Rebuild an engine from :meth:`export_state`, queue positions included."""
        engine = cls(
            (MarketSpec(**ms.spec) for ms in state.markets),  # type: ignore[arg-type]
            order_history=state.order_history,
            trade_history=state.trade_history,
        )
        engine._last_seq = state.last_seq
        engine._next_trade_id = state.next_trade_id
        for ms in state.markets:
            m = engine._markets[ms.book.symbol]
            m.trades.extend(ms.trades)
            for view in (*ms.book.bids, *ms.book.asks):
                order = _resting(view)
                engine._rest(m.book.bids if order.side is _BUY else m.book.asks, order)
            m.book.top = m.book.current_top()
        for view in state.closed_orders:
            engine._remember_closed(_resting(view))
        by_user: dict[str, dict[int, RestingOrder]] = {}
        for oid in state.user_orders:
            order = engine._orders[oid]
            by_user.setdefault(order.user_id, {})[oid] = order
        engine._by_user = by_user
        return engine

    def state_hash(self) -> str:
        """A fingerprint of the whole state: equal states, equal hashes.

        It covers the books with queue order, every field of every known
        order, recent trades and the counters, so two engines with the same
        hash answer every query alike and react alike to any future command.
        """
        encoded = msgspec.msgpack.encode(self.export_state())
        return hashlib.blake2b(encoded, digest_size=32).hexdigest()


def _spec_fields(spec: MarketSpec) -> dict[str, str | int]:
    """A market spec as plain values: decimals as strings, exactly as configured."""
    return {
        a.name: v if isinstance(v := getattr(spec, a.name), int) else str(v)
        for a in attrs.fields(MarketSpec)
    }


def _rejected(
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


def _crosses(opposite: BookSide, price: int | None) -> bool:
    """Whether an order at ``price`` (None: market) would take liquidity from ``opposite``."""
    if not opposite.keys:
        return False
    return price is None or opposite.keys[-1] >= price * opposite.sign


def _fillable(
    opposite: BookSide, price: int | None, quantity: int, user: str, stp: SelfTradePrevention
) -> bool:
    """Whether a taker would fill completely right now. Reads, never mutates.

    It mirrors the matching loop: under CANCEL_MAKER an own resting order is
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


def _aggregate(side: BookSide, limit: int | None) -> list[DepthLevel]:
    out: list[DepthLevel] = []
    if limit is not None and limit <= 0:
        return out
    for level in side:
        out.append(DepthLevel(level.price, level.quantity, level.count))
        if limit is not None and len(out) >= limit:
            break
    return out


def _view(o: RestingOrder) -> Order:
    return Order(**msgspec.structs.asdict(o))


def _resting(v: Order) -> RestingOrder:
    return RestingOrder(**msgspec.structs.asdict(v))

