"""The engine: stamped commands in, events out.

Rules of this module:

* Pure and deterministic. No clock, no randomness, no I/O: sequence numbers,
  timestamps and order ids come in with the commands, so the same stamped
  commands always produce the same events and the same :meth:`Engine.state_hash`.
* Bad input never raises and never changes state: every command is fully
  validated (``engine._validate``) before the first mutation, and a refused
  command yields exactly one :class:`OrderRejected`. The only exception
  :meth:`Engine.apply` raises is :class:`SequenceError`, which is the caller's
  bug, not the client's.
* This module only sequences each command: validate, change, report. The rules
  live in one place each: what is refused in ``_validate``, how orders trade
  and what the book reports in ``_matching``, the order index in ``_orders``,
  export, restore and hash in ``_state``. ``docs/engine.md`` writes them down.
* Except on the hot paths, a place and a cancel, which carry copies of a few
  of those functions written out, each marked ``# inlined: <function>``,
  because the call costs more than the engine may lose (bench/README.md,
  "Engine", lists each with its price). A copy changes with its function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice

from engine import _state
from engine._book import Market, RestingOrder
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
    OrderAccepted,
    OrderCancelled,
    OrderStatus,
    RejectReason,
    TopOfBookChanged,
    TradeExecuted,
)
from engine._markets import DEFAULT_MARKETS, MarketSpec
from engine._matching import Dirty, amend, cancel_open, publish_book, take
from engine._orders import OrderIndex
from engine._validate import (
    COMPACT,
    MAX_CLIENT_ORDER_ID,
    amend_rejection,
    place_rejection,
    refused,
    rejected,
)
from engine._views import BookQueue, Depth, EngineState, Order, TopOfBook

_BUY, _SELL = Side.BUY, Side.SELL
_GTC, _IOC = TimeInForce.GTC, TimeInForce.IOC
_LIMIT, _MARKET = OrderType.LIMIT, OrderType.MARKET
_NEW, _CANCELLED = OrderStatus.NEW, OrderStatus.CANCELLED
_USER = CancelReason.USER


class SequenceError(ValueError):
    """A command was stamped with a sequence number that is not after the last one.

    This is a bug in the caller (whoever stamps commands), not bad client input.
    """


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
        self._markets: dict[str, Market] = {}
        for spec in markets:
            if spec.symbol in self._markets:
                raise ValueError(f"market {spec.symbol!r} is configured twice")
            self._markets[spec.symbol] = Market(spec, trade_history)
        if not self._markets:
            raise ValueError("an engine needs at least one market")
        if order_history < 0 or trade_history < 0:
            raise ValueError("history sizes must not be negative")
        self._order_history = order_history
        self._trade_history = trade_history
        self._last_seq = 0
        self._next_trade_id = 1
        self._index = OrderIndex(order_history)

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
            if kind is AmendOrder:
                return self._amend(command, seq, ts)  # type: ignore[arg-type]
            if kind is CancelAllOrders:
                return self._cancel_all(command, seq, ts)  # type: ignore[arg-type]
            user = getattr(command, "user_id", "")
            return [
                rejected(seq, ts, "unknown", None, None, user, None, RejectReason.UNKNOWN_COMMAND)
            ]
        # PlaceOrder, three commands in four, is handled here rather than in a
        # method of its own, which saves a call per command (bench/README.md,
        # "Engine"): validate, then rest (the most common case) or take.
        c: PlaceOrder = command  # type: ignore[assignment]
        symbol = c.symbol
        m = self._markets.get(symbol) if type(symbol) is str else None
        index = self._index
        oid, user, side = c.order_id, c.user_id, c.side
        qty, price, order_type = c.quantity, c.price, c.order_type
        tif, post_only, stp = c.time_in_force, c.post_only, c.self_trade_prevention
        cid = c.client_order_id
        if tif is None:
            tif = _GTC if order_type is _LIMIT else _IOC
        # inlined: place_rejection(c, m, index) is None, for the common orders
        # only: GTC or IOC limit orders and IOC market orders, not post-only,
        # with amounts and ids below 2**30. Whatever this does not pass goes
        # to place_rejection, which applies every rule and names the first
        # that fails, if any: this copy may only be stricter than the rules.
        if (
            m is None
            or type(user) is not str or not user
            or type(oid) is not int or not 0 < oid < COMPACT or oid in index.by_id
            or (side is not _BUY and side is not _SELL)
            or type(qty) is not int or not m.min_lots <= qty < COMPACT
            or (
                type(price) is not int or not 0 < price < COMPACT
                or (tif is not _GTC and tif is not _IOC)
                or price * qty < m.min_notional
                if order_type is _LIMIT
                else order_type is not _MARKET or price is not None or tif is not _IOC
            )
            or post_only is not False
            or type(stp) is not SelfTradePrevention
            or (cid is not None and (
                type(cid) is not str or not 0 < len(cid) <= MAX_CLIENT_ORDER_ID
                or (user, cid) in index.client_ids
            ))
        ):
            reason = place_rejection(c, m, index)
            if reason is not None:
                return [rejected(seq, ts, "place", symbol, oid, user, cid, reason)]
        assert m is not None
        # Valid: from here on the command changes the engine.
        symbol, book = m.symbol, m.book
        # The book was reported after the last command, so book.top holds the
        # current best prices: crossing means reaching the opposite one.
        bid, bid_qty, ask, ask_qty = book.top
        if side is _BUY:
            own, opposite = book.bids, book.asks
            crossing = ask is not None and (price is None or price >= ask)
        else:
            own, opposite = book.asks, book.bids
            crossing = bid is not None and (price is None or price <= bid)
        # Positional: field order of RestingOrder (see _book) and OrderAccepted (see _events).
        order = RestingOrder(
            qty, user, symbol, 0, oid, price, side, cid, qty, _NEW, seq, ts,
            order_type, tif, post_only, stp, seq, ts,
        )
        accepted = OrderAccepted(
            seq, ts, symbol, oid, user, cid, side, order_type, tif, post_only, stp, price, qty,
        )
        if crossing or tif is not _GTC:
            events: list[Event] = [accepted]
            self._next_trade_id = take(
                m, order, own, opposite, index, self._next_trade_id, events, seq, ts
            )
            return events
        # Rest, the most common command.
        assert price is not None  # a GTC order is a limit order
        # inlined: BookSide.add(own, order), where the level exists
        level = own.levels.get(price)
        if level is None:
            level = own.add(order)
        else:
            level.queue.append(order)
            level.quantity += qty
            level.count += 1
        # inlined: OrderIndex.open(index, order)
        index.by_id[oid] = order
        mine = index.by_user.get(user)
        if mine is None:
            index.by_user[user] = {oid: order}
        else:
            mine[oid] = order
        if cid is not None:
            index.client_ids[user, cid] = oid
        # inlined: publish_levels(m, [level], ...). book.top is current (above):
        # a level behind its side's best leaves it alone, and a rest at or
        # above the best always changes it.
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

    def _cancel(self, c: CancelOrder, seq: int, ts: int) -> list[Event]:
        """Cancel one open order: ``cancel_open`` and ``publish_levels``, written out."""
        user, cid, index = c.user_id, c.client_order_id, self._index
        oid = c.order_id if cid is None else index.by_client_id(user, cid)
        if oid is None and cid is not None:
            return _unknown_client_id("cancel", cid, user, seq, ts)
        # inlined: OrderIndex.get(index, oid)
        order = index.by_id.get(oid) if type(oid) is int else None
        if order is None or not order.remaining or order.user_id != user:
            return refused("cancel", oid, user, order, seq, ts)
        # From here on, the order's own fields: ``user`` may be an equal str of another type.
        symbol, user = order.symbol, order.user_id
        book = self._markets[symbol].book
        side, price, cancelled = order.side, order.price, order.remaining
        assert price is not None  # only limit orders rest
        own = book.bids if side is _BUY else book.asks
        # inlined: BookSide.take_out(own, order)
        level = own.levels[price]
        level_qty = level.quantity - cancelled
        level.quantity = level_qty
        level.count -= 1
        if not level.count:
            own.drop(level)
        # inlined: report_cancelled(order, cancelled, CancelReason.USER, ...)
        order.remaining = 0
        order.status = _CANCELLED
        order.updated_seq = seq
        order.updated_ts = ts
        cid = order.client_order_id
        # Positional: field order of OrderCancelled (see _events); status is its default.
        report = OrderCancelled(
            seq, ts, symbol, order.order_id, user, cid, side, price, order.quantity,
            order.filled, cancelled, _USER,
        )
        index.close(order)
        # inlined: publish_levels for this one level. book.top is current (see
        # apply). A resting order is never better than its side's best, so it
        # is either behind it, or at it and moves it.
        changed = BookLevelChanged(seq, ts, symbol, side, price, level_qty)
        top = book.top
        if price != (top[0] if side is _BUY else top[2]):
            return [report, changed]
        top = book.top = book.current_top()
        return [report, changed, TopOfBookChanged(seq, ts, symbol, *top)]

    def _cancel_all(self, c: CancelAllOrders, seq: int, ts: int) -> list[Event]:
        symbol = c.symbol
        if symbol is not None and (type(symbol) is not str or symbol not in self._markets):
            reason = RejectReason.UNKNOWN_SYMBOL
            return [rejected(seq, ts, "cancel_all", symbol, None, c.user_id, None, reason)]
        user = c.user_id
        if type(user) is not str:
            return []
        events: list[Event] = []
        dirty_by_market: dict[str, Dirty] = {}
        for order in list(self._index.open_orders(user)):
            if symbol is not None and order.symbol != symbol:
                continue
            m = self._markets[order.symbol]
            dirty = dirty_by_market.setdefault(m.symbol, [])
            cancel_open(m, order, CancelReason.USER, self._index, events, dirty, seq, ts)
        for market_symbol, dirty in dirty_by_market.items():
            publish_book(self._markets[market_symbol], dirty, events, seq, ts)
        return events

    def _amend(self, c: AmendOrder, seq: int, ts: int) -> list[Event]:
        user, cid, index = c.user_id, c.client_order_id, self._index
        oid = c.order_id if cid is None else index.by_client_id(user, cid)
        if oid is None and cid is not None:
            return _unknown_client_id("amend", cid, user, seq, ts)
        order = index.get(oid)
        if order is None or not order.remaining or order.user_id != user:
            return refused("amend", oid, user, order, seq, ts)
        assert order.price is not None
        m = self._markets[order.symbol]
        reason = amend_rejection(c, order, m)
        if reason is not None:
            return [rejected(seq, ts, "amend", order.symbol, oid, user, None, reason)]
        price = order.price if c.price is None else c.price
        quantity = order.quantity if c.quantity is None else c.quantity
        events: list[Event] = []
        dirty: Dirty = []
        self._next_trade_id = amend(
            m, order, price, quantity, index, self._next_trade_id, events, dirty, seq, ts
        )
        publish_book(m, dirty, events, seq, ts)
        return events

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
        found = self._index.by_id.get(order_id)
        return None if found is None else _state.view(found)

    def open_order_by_client_id(self, user_id: str, client_order_id: str) -> Order | None:
        """``user_id``'s open order with ``client_order_id``; None if there is none."""
        found = self._index.by_client_id(user_id, client_order_id)
        return None if found is None else _state.view(self._index.by_id[found])

    def open_orders(self, user_id: str, symbol: str | None = None) -> list[Order]:
        """A user's open orders, oldest first."""
        mine = self._index.open_orders(user_id)
        return [_state.view(o) for o in mine if symbol is None or o.symbol == symbol]

    def depth(self, symbol: str, levels: int | None = None) -> Depth:
        """L2: aggregated levels, best first, at most ``levels`` per side.

        Raises:
            KeyError: unknown ``symbol``.
        """
        return _state.depth(symbol, self._markets[symbol].book, levels)

    def queue(self, symbol: str) -> BookQueue:
        """L3: every resting order in priority order. Raises KeyError for an unknown symbol."""
        return _state.book_queue(symbol, self._markets[symbol].book)

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
        return _state.export_state(
            self._markets, self._index, last_seq=self._last_seq,
            next_trade_id=self._next_trade_id, order_history=self._order_history,
            trade_history=self._trade_history,
        )

    @classmethod
    def restore(cls, state: EngineState) -> Engine:
        """Rebuild an engine from :meth:`export_state`, queue positions included."""
        engine = cls(
            _state.market_specs(state),
            order_history=state.order_history,
            trade_history=state.trade_history,
        )
        engine._last_seq = state.last_seq
        engine._next_trade_id = state.next_trade_id
        _state.load_state(state, engine._markets, engine._index)
        return engine

    def state_hash(self) -> str:
        """A fingerprint of the whole state: equal states, equal hashes.

        It covers the books with queue order, every field of every known
        order, recent trades and the counters, so two engines with the same
        hash answer every query alike and react alike to any future command.
        """
        return _state.state_hash(self.export_state())


def _unknown_client_id(
    command: str, client_order_id: object, user_id: object, seq: int, ts: int
) -> list[Event]:
    """A cancel or amend naming a client order id that no open order of the user has."""
    return [rejected(seq, ts, command, None, None, user_id, client_order_id,
                     RejectReason.UNKNOWN_ORDER)]
