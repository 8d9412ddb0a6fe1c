"""Stream numbering: each command's events become numbered items, one per channel message.

Rules of this module:

* Every channel is numbered **always**, whether or not anyone subscribes:
  ``seq`` rises by exactly one per message from the start of the epoch and
  never resets inside it. That is what lets a client resume after a
  disconnect (``gateway/_history.py``) and what makes two processes agree.
* Numbering is per **command**, never per batch: :meth:`StreamState.number`
  takes one command's events, and a depth message covers one command's level
  changes of one market. So the numbers depend only on the journal's
  commands, not on timing or batching: every process that applies the same
  commands (an all-in-one server after any number of restarts, or a
  scale-out gateway's replica) produces the very same messages, ``seq`` and
  checksums.
* Where events go: an order event to its user's ``orders`` channel; a trade
  to its symbol's ``trades`` channel and to the all-symbols one (two items,
  each numbered by its channel); a top of book change to its symbol's
  ``orderbook`` channel; a command's book level changes, per market, to a
  ``depth`` message when they moved the top ``depth_levels`` window (its
  ``seq`` is the market's :class:`DepthBook`'s).
* The owner is the engine task (``gateway/_runtime.py``): it numbers each
  command right after ``engine.apply``, so at a snapshot's seq
  :meth:`StreamState.export` is exactly the state that seq leaves, and the
  journal stores it beside the engine snapshot (``gateway/_stream_files.py``).
* Pure: no trio, no clock, no sockets (``tests/gateway/test_gateway_purity.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import msgspec

from engine import (
    BookLevelChanged,
    Event,
    MarketSpec,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    Side,
    TopOfBookChanged,
    TradeExecuted,
)
from gateway._messages import DepthBook, DepthDiff, OrderEvent
from gateway._protocol import Channel, Stream

ORDER_EVENTS = (OrderAccepted, OrderFilled, OrderCancelled, OrderAmended, OrderRejected)
_ORDER_KINDS = frozenset(ORDER_EVENTS)

Payload = OrderEvent | TradeExecuted | TopOfBookChanged | DepthDiff
Item = tuple[Channel, int, Payload]
"""One message of one channel: the channel, its ``seq``, and what it is built from."""


class Numbered:
    """A batch's items per stream, each list in order; one fan-out task takes each."""

    __slots__ = ("depth", "orderbook", "orders", "trades")

    def __init__(self) -> None:
        self.orders: list[Item] = []
        self.trades: list[Item] = []
        self.orderbook: list[Item] = []
        self.depth: list[Item] = []

    def __bool__(self) -> bool:
        return bool(self.orders or self.trades or self.orderbook or self.depth)


class _DepthExport(msgspec.Struct, frozen=True, array_like=True):
    symbol: str
    seq: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class _CounterExport(msgspec.Struct, frozen=True, array_like=True):
    stream: str
    key: str | None
    seq: int


class StreamExport(msgspec.Struct, frozen=True):
    """A :class:`StreamState` at one engine seq: immutable, shares nothing with it."""

    epoch: str
    engine_seq: int
    depth_levels: int
    counters: list[_CounterExport]
    depth: list[_DepthExport]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(StreamExport).decode


def encode_export(export: StreamExport) -> bytes:
    return _encode(export)


def decode_export(data: bytes) -> StreamExport:
    """Raises: msgspec.DecodeError (or ValidationError) for bytes that are not an export."""
    return _decode(data)


class StreamState:
    """Each channel's seq and each market's depth book. Owned by the engine task.

    Args:
        markets: the engine's markets.
        depth_levels: levels per side of the depth window (``websocket.depth_levels``).
        epoch: the numbering's identity (``gateway/_stream_files.py``).
    """

    def __init__(self, markets: Mapping[str, MarketSpec], depth_levels: int, epoch: str) -> None:
        self.epoch = epoch
        self.depth_levels = depth_levels
        self._counters: dict[Channel, int] = {}
        self.depth = {symbol: DepthBook(spec, depth_levels) for symbol, spec in markets.items()}
        # The channels of each symbol, made once: the hot path only looks them up.
        self._trades = {s: (Stream.TRADES, s) for s in markets}
        self._orderbook = {s: (Stream.ORDERBOOK, s) for s in markets}
        self._depth = {s: (Stream.DEPTH, s) for s in markets}

    def seq(self, channel: Channel) -> int:
        """The seq of the channel's last message (0: none yet in this epoch)."""
        if channel[0] is Stream.DEPTH:
            return self.depth[channel[1]].seq if channel[1] in self.depth else 0
        return self._counters.get(channel, 0)

    def counters(self) -> dict[Channel, int]:
        """Every channel's seq (depth channels included), a copy."""
        seqs = dict(self._counters)
        for symbol, book in self.depth.items():
            seqs[self._depth[symbol]] = book.seq
        return seqs

    def depth_view(self, symbol: str, levels: int) -> dict[str, Any]:
        """The depth stream's book for REST: top ``levels`` per side and its ``seq``.

        The engine task's view, which may be a few items ahead of what the hub
        handed out: the ``seq`` always names exactly this book.
        """
        book = self.depth[symbol]
        spec = book.spec
        return {
            "symbol": symbol,
            "seq": book.seq,
            "bids": [[spec.format_price(p), spec.format_quantity(q)]
                     for p, q in book.top(Side.BUY, levels)],
            "asks": [[spec.format_price(p), spec.format_quantity(q)]
                     for p, q in book.top(Side.SELL, levels)],
        }

    def number(self, events: Sequence[Event], out: Numbered) -> None:
        """Number one command's events into ``out``, channel by channel, in order."""
        counters = self._counters
        levels: list[BookLevelChanged] | None = None
        for event in events:
            # Dispatch on the exact type: isinstance() on msgspec classes costs ~0.3 us a miss.
            kind = type(event)
            if kind in _ORDER_KINDS:
                order = cast(OrderEvent, event)
                channel: Channel = (_ORDERS, order.user_id)
                seq = counters[channel] = counters.get(channel, 0) + 1
                out.orders.append((channel, seq, order))
            elif kind is BookLevelChanged:
                if levels is None:
                    levels = [cast(BookLevelChanged, event)]
                else:
                    levels.append(cast(BookLevelChanged, event))
            elif kind is TopOfBookChanged:
                top = cast(TopOfBookChanged, event)
                channel = self._orderbook[top.symbol]
                seq = counters[channel] = counters.get(channel, 0) + 1
                out.orderbook.append((channel, seq, top))
            elif kind is TradeExecuted:
                trade = cast(TradeExecuted, event)
                for channel in (self._trades[trade.symbol], _ALL_TRADES):
                    seq = counters[channel] = counters.get(channel, 0) + 1
                    out.trades.append((channel, seq, trade))
        if levels is not None:
            self._number_depth(levels, out)

    def _number_depth(self, levels: list[BookLevelChanged], out: Numbered) -> None:
        symbol = levels[0].symbol
        if all(change.symbol == symbol for change in levels):  # nearly always: one market
            groups = {symbol: levels}
        else:  # a cancel-all across markets: one depth message per market, in first-seen order
            groups = {}
            for change in levels:
                groups.setdefault(change.symbol, []).append(change)
        for symbol, changes in groups.items():
            diff = self.depth[symbol].apply(changes)
            if diff is not None:
                out.depth.append((self._depth[symbol], diff.seq, diff))

    # --------------------------------------------------------- persistence

    def export(self, engine_seq: int) -> StreamExport:
        """An immutable copy at ``engine_seq`` (the engine's ``last_seq`` right now)."""
        return StreamExport(
            self.epoch, engine_seq, self.depth_levels,
            [_CounterExport(str(stream), key, seq)
             for (stream, key), seq in self._counters.items()],
            [_DepthExport(symbol, book.seq, book.levels_of(Side.BUY), book.levels_of(Side.SELL))
             for symbol, book in self.depth.items()],
        )

    @classmethod
    def restore(
        cls, export: StreamExport, markets: Mapping[str, MarketSpec], depth_levels: int
    ) -> StreamState:
        """The state an :meth:`export` holds (markets it does not know start empty).

        Raises:
            ValueError: the export's depth window is not ``depth_levels``: the
                depth messages would change, so the caller must start a new epoch.
        """
        if export.depth_levels != depth_levels:
            raise ValueError(f"depth window changed from {export.depth_levels} "
                             f"to {depth_levels} levels")
        state = cls(markets, depth_levels, export.epoch)
        for counter in export.counters:
            state._counters[(Stream(counter.stream), counter.key)] = counter.seq
        for depth in export.depth:
            book = state.depth.get(depth.symbol)
            if book is not None:
                book.load(depth.bids, depth.asks)
                book.seq = depth.seq
        return state

    def load_books(self, books: Mapping[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]]
                   ) -> None:
        """Start the depth books from an existing engine's (bids, asks), seq unchanged."""
        for symbol, (bids, asks) in books.items():
            self.depth[symbol].load(bids, asks)


_ORDERS = Stream.ORDERS  # a module global: an Enum class attribute lookup is slow
_ALL_TRADES: Channel = (Stream.TRADES, None)
