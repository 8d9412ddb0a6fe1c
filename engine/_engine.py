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

_BUY, _SELL = Side.BUY, Side.SELL
_GTC, _IOC, _FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET
_STP_NONE = SelfTradePrevention.NONE
_STP_CANCEL_TAKER = SelfTradePrevention.CANCEL_TAKER
_STP_CANCEL_MAKER = SelfTradePrevention.CANCEL_MAKER
_NEW, _PARTIAL = OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED
_FILLED, _CANCELLED = OrderStatus.FILLED, OrderStatus.CANCELLED
_MAKER, _TAKER = Liquidity.MAKER, Liquidity.TAKER

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
        self._open: dict[int, RestingOrder] = {}
        self._by_user: dict[str, dict[int, RestingOrder]] = {}
        self._client_ids: dict[tuple[str, str], int] = {}
        self._closed: dict[int, RestingOrder] = {}
        self._closed_fifo: deque[int] = deque()

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
        if kind is PlaceOrder:
            return self._place(command, seq, ts)  # type: ignore[arg-type]
        if kind is CancelOrder:
            return self._cancel(command, seq, ts)  # type: ignore[arg-type]
        if kind is AmendOrder:
            return self._amend(command, seq, ts)  # type: ignore[arg-type]
        if kind is CancelAllOrders:
            return self._cancel_all(command, seq, ts)  # type: ignore[arg-type]
        user = getattr(command, "user_id", "")
        return [
            OrderRejected(
                seq=seq, ts=ts, command="unknown", symbol=None, order_id=None,
                user_id=user if type(user) is str else "", client_order_id=None,
                reason=RejectReason.UNKNOWN_COMMAND,
            )
        ]

    def _reject_place(self, c: PlaceOrder, reason: RejectReason, seq: int, ts: int) -> list[Event]:
        return [
            OrderRejected(
                seq=seq, ts=ts, command="place",
                symbol=c.symbol if type(c.symbol) is str else None,
                order_id=c.order_id if type(c.order_id) is int else None,
                user_id=c.user_id if type(c.user_id) is str else "",
                client_order_id=c.client_order_id if type(c.client_order_id) is str else None,
                reason=reason,
            )
        ]

    def _check_place(self, c: PlaceOrder, m: _Market | None) -> RejectReason | TimeInForce:
        """The order's effective time in force, or why it is refused."""
        if m is None:
            return RejectReason.UNKNOWN_SYMBOL
        user, oid = c.user_id, c.order_id
        if type(user) is not str or not user:
            return RejectReason.INVALID_USER_ID
        if type(oid) is not int or not 0 < oid <= MAX_UNITS:
            return RejectReason.INVALID_ORDER_ID
        if oid in self._open or oid in self._closed:
            return RejectReason.DUPLICATE_ORDER_ID
        side = c.side
        if side is not _BUY and side is not _SELL:  # identity: hashing an enum runs Python code
            return RejectReason.INVALID_SIDE
        qty, price, tif = c.quantity, c.price, c.time_in_force
        if type(qty) is not int or not 0 < qty <= MAX_UNITS:
            return RejectReason.INVALID_QUANTITY
        if qty < m.min_lots:
            return RejectReason.BELOW_MIN_QUANTITY
        if c.order_type is _LIMIT:
            if type(price) is not int or not 0 < price <= MAX_UNITS:
                return RejectReason.INVALID_PRICE
            if tif is None:
                tif = _GTC
            elif tif is not _GTC and tif is not _IOC and tif is not _FOK:
                return RejectReason.INVALID_TIME_IN_FORCE
            if price * qty < m.min_notional:
                return RejectReason.BELOW_MIN_NOTIONAL
        elif c.order_type is _MARKET:
            if price is not None:
                return RejectReason.INVALID_PRICE
            if tif is None:
                tif = _IOC
            elif tif is not _IOC and tif is not _FOK:
                return RejectReason.INVALID_TIME_IN_FORCE
        else:
            return RejectReason.INVALID_ORDER_TYPE
        if c.post_only is not False and (c.post_only is not True or tif is not _GTC):
            return RejectReason.INVALID_POST_ONLY
        stp = c.self_trade_prevention
        if type(stp) is not SelfTradePrevention:
            return RejectReason.INVALID_SELF_TRADE_PREVENTION
        cid = c.client_order_id
        if cid is not None:
            if type(cid) is not str or not 0 < len(cid) <= _MAX_CLIENT_ORDER_ID:
                return RejectReason.INVALID_CLIENT_ORDER_ID
            if (user, cid) in self._client_ids:
                return RejectReason.DUPLICATE_CLIENT_ORDER_ID
        opposite = m.book.asks if side is _BUY else m.book.bids
        if c.post_only and _crosses(opposite, price):
            return RejectReason.POST_ONLY_WOULD_CROSS
        if tif is _FOK and not _fillable(opposite, price, qty, user, stp):
            return RejectReason.FOK_NOT_FILLABLE
        return tif

    def _place(self, c: PlaceOrder, seq: int, ts: int) -> list[Event]:
        m = self._markets.get(c.symbol) if type(c.symbol) is str else None
        tif = self._check_place(c, m)
        if type(tif) is RejectReason:
            return self._reject_place(c, tif, seq, ts)
        assert m is not None
        assert type(tif) is TimeInForce
        symbol, qty, price, side = m.symbol, c.quantity, c.price, c.side
        oid, user, cid, stp = c.order_id, c.user_id, c.client_order_id, c.self_trade_prevention
        # Positional: field order of RestingOrder and OrderAccepted (see _events).
        order = RestingOrder(
            oid, user, symbol, side, c.order_type, tif, c.post_only, stp, cid,
            price, qty, 0, qty, _NEW, seq, ts, seq, ts,
        )
        events: list[Event] = [
            OrderAccepted(
                seq, ts, symbol, oid, user, cid, side, c.order_type, tif, c.post_only, stp,
                price, qty,
            )
        ]
        dirty: _Dirty = []
        opposite = m.book.asks if side is _BUY else m.book.bids
        keys = opposite.keys
        stopped = False
        if keys and (price is None or keys[-1] >= price * opposite.sign):
            stopped = self._match(m, order, opposite, events, dirty, seq, ts)
        if order.remaining and not stopped and tif is _GTC:
            self._rest(m, order, dirty)
        else:
            if order.remaining:
                self._report_cancelled(
                    order, order.remaining,
                    CancelReason.SELF_TRADE if stopped else CancelReason.UNFILLED,
                    events, seq, ts,
                )
            self._remember_closed(order)
        if dirty:
            self._publish_book(m, dirty, events, seq, ts)
        return events

    def _rest(self, m: _Market, order: RestingOrder, dirty: _Dirty) -> None:
        side = m.book.bids if order.side is _BUY else m.book.asks
        # BookSide.add, inlined: this is the most frequent path of all.
        price = order.price
        level = side.levels.get(price)  # type: ignore[arg-type]
        if level is None:
            level = side.add(order)
        else:
            level.queue.append(order)
            level.quantity += order.remaining
            level.count += 1
        dirty.append(level)
        oid, user = order.order_id, order.user_id
        self._open[oid] = order
        mine = self._by_user.get(user)
        if mine is None:
            self._by_user[user] = {oid: order}
        else:
            mine[oid] = order
        if order.client_order_id is not None:
            self._client_ids[user, order.client_order_id] = oid

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
        caller then cancels what remains instead of resting it.
        """
        taker_side = order.side
        keys = opposite.keys
        price = order.price
        sign = opposite.sign
        limit_key = _NO_LIMIT if price is None else price * sign
        levels = opposite.levels
        symbol, user, taker_id = m.symbol, order.user_id, order.order_id
        taker_cid = order.client_order_id
        stp = order.self_trade_prevention
        maker_num, maker_den = m.maker_num, m.maker_den
        taker_num, taker_den = m.taker_num, m.taker_den
        trades = m.trades
        remaining, filled = order.remaining, order.filled
        stopped = False
        append = events.append
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
                if stp is not _STP_NONE and maker.user_id == user:
                    if stp is not _STP_CANCEL_TAKER:  # cancel maker, or both
                        queue.popleft()
                        level.quantity -= maker_left
                        level.count -= 1
                        maker.remaining = 0
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
                maker.remaining = maker_left
                maker_filled = maker.filled + fill
                maker.filled = maker_filled
                maker.updated_seq = seq
                maker.updated_ts = ts
                level.quantity -= fill
                notional = trade_price * fill
                maker_fee = -((-notional * maker_num) // maker_den)
                taker_fee = -((-notional * taker_num) // taker_den)
                trade_id = self._next_trade_id
                self._next_trade_id = trade_id + 1
                maker_id, maker_user = maker.order_id, maker.user_id
                # Positional: field order of TradeExecuted and OrderFilled (see _events).
                trade = TradeExecuted(
                    seq, ts, symbol, trade_id, trade_price, fill, taker_side,
                    maker_id, maker_user, taker_id, user, maker_fee, taker_fee,
                )
                append(trade)
                trades.append(trade)
                maker_status = _PARTIAL if maker_left else _FILLED
                maker.status = maker_status
                append(
                    OrderFilled(
                        seq, ts, symbol, maker_id, maker_user, maker.client_order_id,
                        maker.side, trade_id, trade_price, fill, maker_fee, _MAKER,
                        maker_filled, maker_left, maker_status, trade_price,
                    )
                )
                append(
                    OrderFilled(
                        seq, ts, symbol, taker_id, user, taker_cid, taker_side, trade_id,
                        trade_price, fill, taker_fee, _TAKER, filled, remaining,
                        _PARTIAL if remaining else _FILLED, price,
                    )
                )
                if not maker_left:
                    queue.popleft()
                    level.count -= 1
                    self._close(maker)
                if not remaining or not level.count:
                    break
            if not level.count:
                opposite.drop(level)
            if stopped:
                break
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
        del self._open[oid]
        mine = self._by_user[user]
        del mine[oid]
        if not mine:
            del self._by_user[user]
        if order.client_order_id is not None:
            del self._client_ids[user, order.client_order_id]
        self._remember_closed(order)

    def _remember_closed(self, order: RestingOrder) -> None:
        closed, fifo = self._closed, self._closed_fifo
        closed[order.order_id] = order
        fifo.append(order.order_id)
        if len(fifo) > self._order_history:
            del closed[fifo.popleft()]

    def _publish_book(
        self, m: _Market, dirty: _Dirty, events: list[Event], seq: int, ts: int
    ) -> None:
        """Report the final quantity of every touched level, then the top of book if it moved."""
        symbol = m.symbol
        if len(dirty) > 1:
            # One event per price: a level emptied and re-created by the same
            # command (an amend at the same price) is reported once, as it ends.
            dirty = list({(level.side, level.price): level for level in dirty}.values())
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

    def _find_open(
        self, order_id: object, user_id: object
    ) -> RestingOrder | RejectReason:
        if type(order_id) is not int:
            return RejectReason.INVALID_ORDER_ID
        order = self._open.get(order_id)
        if order is None:
            closed = self._closed.get(order_id)
            if closed is None:
                return RejectReason.UNKNOWN_ORDER
            return RejectReason.NOT_OWNER if closed.user_id != user_id else (
                RejectReason.ORDER_NOT_OPEN
            )
        if order.user_id != user_id:
            return RejectReason.NOT_OWNER
        return order

    def _cancel(self, c: CancelOrder, seq: int, ts: int) -> list[Event]:
        found = self._find_open(c.order_id, c.user_id)
        if type(found) is RejectReason:
            return [self._rejected("cancel", c.order_id, c.user_id, found, seq, ts)]
        assert type(found) is RestingOrder
        m = self._markets[found.symbol]
        events: list[Event] = []
        dirty: _Dirty = []
        self._cancel_open(m, found, CancelReason.USER, events, dirty, seq, ts)
        self._publish_book(m, dirty, events, seq, ts)
        return events

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

    def _rejected(
        self, command: str, order_id: object, user_id: object, reason: RejectReason,
        seq: int, ts: int, symbol: str | None = None,
    ) -> OrderRejected:
        order = self._open.get(order_id) if type(order_id) is int else None
        return OrderRejected(
            seq=seq, ts=ts, command=command,
            symbol=order.symbol if order is not None else symbol,
            order_id=order_id if type(order_id) is int else None,
            user_id=user_id if type(user_id) is str else "",
            client_order_id=None, reason=reason,
        )

    def _cancel_all(self, c: CancelAllOrders, seq: int, ts: int) -> list[Event]:
        symbol = c.symbol
        if symbol is not None and (type(symbol) is not str or symbol not in self._markets):
            return [
                self._rejected("cancel_all", None, c.user_id, RejectReason.UNKNOWN_SYMBOL, seq, ts,
                               symbol if type(symbol) is str else None)
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
        found = self._find_open(c.order_id, c.user_id)
        if type(found) is RejectReason:
            return [self._rejected("amend", c.order_id, c.user_id, found, seq, ts)]
        order = found
        assert type(order) is RestingOrder
        assert order.price is not None
        m = self._markets[order.symbol]
        reason = self._check_amend(c, order, m)
        if reason is not None:
            return [self._rejected("amend", c.order_id, c.user_id, reason, seq, ts)]
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
            self._open[order.order_id] = replacement
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
        found = self._open.get(order_id) or self._closed.get(order_id)
        return None if found is None else _view(found)

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
            closed_orders=[_view(self._closed[oid]) for oid in self._closed_fifo],
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
                engine._rest(m, _resting(view), [])
            m.book.top = m.book.current_top()
        for view in state.closed_orders:
            engine._remember_closed(_resting(view))
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

