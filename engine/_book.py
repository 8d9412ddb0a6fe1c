"""The order book of one market: two sides of price levels, each a FIFO queue.

A :class:`Market` holds a book with its recent trades and its rules as integers.

Layout
------
A side keeps ``levels: dict[price, Level]`` and ``keys``, a plain sorted
``list`` of *keys* where the best level has the largest key: the key is the
price for bids and the negated price for asks. So ``keys[-1]`` is always the
best level, "does this level cross a limit" is the single comparison
``key >= limit_key`` on both sides, and emptying the best level is a
``list.pop()``. New levels are placed with ``bisect.insort``: O(L) memmove in
C, which beats any tree in Python for the few hundred levels a book has.

A level's queue is a ``deque`` of :class:`RestingOrder`, oldest first, with
lazy deletion: cancelling an order sets its ``remaining`` to 0 and adjusts
the level's ``quantity`` and ``count`` at once; the dead entry is dropped when
it reaches the head of the queue, or with the whole level when the level's
live ``count`` falls to 0. A live resting order always has ``remaining > 0``.

=====================================  ===================
Operation                              Cost
=====================================  ===================
Add to an existing level               O(1)
Add at a new price level               O(L) memmove
Cancel (level stays)                   O(1)
Cancel (last live order of its level)  O(L) memmove
Best bid / ask                         O(1)
Fill against the head of best level    O(1) amortised
L2 depth, top ``n`` levels             O(n)
=====================================  ===================
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator

import msgspec

from engine._commands import OrderType, SelfTradePrevention, Side, TimeInForce
from engine._events import OrderStatus, TradeExecuted
from engine._markets import MarketSpec


class RestingOrder(msgspec.Struct, gc=False):
    """An order the engine knows: open on the book, or kept in the closed history.

    Mutable, owned by the engine: fills decrement ``remaining`` and raise
    ``filled`` in place. Outside the engine it is seen as an immutable
    :class:`engine.Order`. A msgspec struct because the engine builds one per
    order and a positional struct costs a tenth of a Python ``__init__``. The
    engine builds it positionally at one call site (a place) and by keyword
    elsewhere (restore, amend), all covered by field-by-name tests.

    The fields are in the order the hot paths read them, not in the order of
    :class:`engine.Order`: a cancel, a refused cancel and a fill read the first
    ones (``remaining``, ``user_id``, ...), so they share the object's first
    cache line. Views convert by field name, so the order is private.
    """

    remaining: int
    user_id: str
    symbol: str
    filled: int
    order_id: int
    price: int | None
    side: Side
    client_order_id: str | None
    quantity: int
    status: OrderStatus
    updated_seq: int
    updated_ts: int
    order_type: OrderType
    time_in_force: TimeInForce
    post_only: bool
    self_trade_prevention: SelfTradePrevention
    created_seq: int
    created_ts: int


class Level:
    """All resting orders at one price. ``quantity`` and ``count`` count live orders only."""

    __slots__ = ("count", "price", "quantity", "queue", "side")

    def __init__(self, side: Side, price: int) -> None:
        self.side = side
        self.price = price
        self.quantity = 0
        self.count = 0
        self.queue: deque[RestingOrder] = deque()

    def live(self) -> Iterator[RestingOrder]:
        """Live orders, oldest first."""
        return (o for o in self.queue if o.remaining)


class BookSide:
    __slots__ = ("keys", "levels", "side", "sign")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sign = 1 if side is Side.BUY else -1
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []

    def add(self, order: RestingOrder) -> Level:
        """Put a live order at the back of its level's queue; return the level.

        ``Engine.apply`` writes this out for a resting order (``inlined:
        BookSide.add``): change both together.
        """
        price = order.price
        assert price is not None
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = Level(self.side, price)
            insort(self.keys, price * self.sign)
        level.queue.append(order)
        level.quantity += order.remaining
        level.count += 1
        return level

    def take_out(self, order: RestingOrder) -> Level:
        """Remove a live order from its level (lazily) and return that level.

        ``Engine._cancel`` writes this out (``inlined: BookSide.take_out``).
        """
        assert order.price is not None
        level = self.levels[order.price]
        level.quantity -= order.remaining
        level.count -= 1
        order.remaining = 0
        if not level.count:
            self.drop(level)
        return level

    def drop(self, level: Level) -> None:
        """Forget an empty level."""
        del self.levels[level.price]
        keys = self.keys
        key = level.price * self.sign
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def best(self) -> Level | None:
        return self.levels[self.keys[-1] * self.sign] if self.keys else None

    def __iter__(self) -> Iterator[Level]:
        """Levels from best to worst."""
        levels, sign = self.levels, self.sign
        for key in reversed(self.keys):
            yield levels[key * sign]


class Book:
    __slots__ = ("asks", "bids", "top")

    def __init__(self) -> None:
        self.bids = BookSide(Side.BUY)
        self.asks = BookSide(Side.SELL)
        # The top of book last reported in a TopOfBookChanged event.
        self.top: tuple[int | None, int, int | None, int] = (None, 0, None, 0)

    def side(self, side: Side) -> BookSide:
        return self.bids if side is Side.BUY else self.asks

    def current_top(self) -> tuple[int | None, int, int | None, int]:
        bids, asks = self.bids, self.asks
        bid = bids.levels[bids.keys[-1]] if bids.keys else None
        ask = asks.levels[-asks.keys[-1]] if asks.keys else None
        return (
            None if bid is None else bid.price,
            0 if bid is None else bid.quantity,
            None if ask is None else ask.price,
            0 if ask is None else ask.quantity,
        )


class Market:
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
