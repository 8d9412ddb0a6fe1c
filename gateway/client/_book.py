"""The local depth book of one market, and its checksum. Pure: no trio, no I/O.

Rules of this module:

* The book holds exactly what the ``depth`` stream describes: the server's
  top-of-book window. A snapshot replaces it; an update sets each listed level
  (quantity 0 deletes it). The server lists every level that left its window
  with quantity 0, so the book never needs to know the window's size; a
  ``levels`` limit, when given, truncates each side as docs/protocol.md says.
* After every snapshot and update the book computes the checksum itself and
  compares it with the server's: a difference raises :class:`ChecksumMismatch`
  and leaves the book unusable until the next snapshot (``synced`` False).
* The checksum is written here from the algorithm in docs/protocol.md (Kraken's),
  independently of the server's code: asks from the lowest price up, then bids
  from the highest down; for each level, price and quantity *as sent*, decimal
  point removed, then leading zeros; all concatenated; CRC32 of the ASCII.
  "As sent" is kept by :class:`decimal.Decimal`, whose ``"f"`` format gives
  back the digits and exponent it was parsed from.
* Seq is checked: a snapshot sets it; an update must carry ``seq + 1``
  (:class:`SeqGap` otherwise; an update at or below ``seq`` is a duplicate).

Costs: an update of k levels on a side of n costs O(k log n + n) (the side is
re-sorted lazily, only when read); the checksum reads both sides, O(n).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from decimal import Decimal

from gateway.client._messages import DepthSnapshot, DepthUpdate, Level


class BookError(Exception):
    """Base of the reasons a local book cannot continue without a fresh snapshot."""


class ChecksumMismatch(BookError):
    """The book after a message disagrees with the server's checksum."""

    def __init__(self, seq: int, expected: int, computed: int) -> None:
        super().__init__(f"depth checksum mismatch at seq {seq}: the server says {expected}, "
                         f"the local book gives {computed}")
        self.seq, self.expected, self.computed = seq, expected, computed


class SeqGap(BookError):
    """An update that does not follow the book's seq (a message was missed)."""

    def __init__(self, have: int | None, got: int) -> None:
        super().__init__(f"depth update seq {got} does not follow {have}")
        self.have, self.got = have, got


def _part(amount: Decimal) -> str:
    return format(amount, "f").replace(".", "").lstrip("0")


def checksum(bids: Iterable[Level], asks: Iterable[Level], levels: int | None = None) -> int:
    """Kraken's CRC32 over the best ``levels`` (all when None) asks then bids."""
    best_asks = sorted(asks, key=lambda level: level[0])
    best_bids = sorted(bids, key=lambda level: level[0], reverse=True)
    if levels is not None:
        best_asks, best_bids = best_asks[:levels], best_bids[:levels]
    text = "".join(_part(price) + _part(quantity) for price, quantity in best_asks + best_bids)
    return zlib.crc32(text.encode("ascii"))


class _Side:
    """Price -> quantity, with the best-first order computed only when read.

    Each level's checksum text is made once, when the level is set: formatting
    a Decimal costs more than sorting ten prices.
    """

    def __init__(self, descending: bool) -> None:
        self.levels: dict[Decimal, Decimal] = {}
        self._parts: dict[Decimal, str] = {}
        self._descending = descending
        self._sorted: list[Level] | None = []

    def replace(self, levels: Iterable[Level]) -> None:
        self.levels, self._parts = {}, {}
        self.apply(levels)

    def apply(self, levels: Iterable[Level]) -> None:
        for price, quantity in levels:
            if quantity:
                self.levels[price] = quantity
                self._parts[price] = _part(price) + _part(quantity)
            else:
                self.levels.pop(price, None)
                self._parts.pop(price, None)
        self._sorted = None

    def truncate(self, count: int) -> None:
        if len(self.levels) > count:
            kept = self.best()[:count]
            self.levels = dict(kept)
            self._parts = {price: self._parts[price] for price, _ in kept}
            self._sorted = None

    def best(self) -> list[Level]:
        if self._sorted is None:
            self._sorted = [Level(price, quantity) for price, quantity
                            in sorted(self.levels.items(), reverse=self._descending)]
        return self._sorted

    def checksum_text(self) -> str:
        parts = self._parts
        return "".join(parts[price] for price, _ in self.best())


class OrderBook:
    """One market's book as the ``depth`` stream sends it, verified by checksum.

    Args:
        symbol: the market, e.g. ``"BTC/USDT"``.
        levels: truncate each side to this many levels after every message, as
            docs/protocol.md describes; None (the default) keeps what the server
            sent, which is already its window.
    """

    def __init__(self, symbol: str, levels: int | None = None) -> None:
        self.symbol = symbol
        self.levels = levels
        self.seq: int | None = None
        """The seq of the last snapshot or update applied; None before the first snapshot."""
        self.synced = False
        """True while the book is exact: after a snapshot, until a mismatch or a gap."""
        self._bids = _Side(descending=True)
        self._asks = _Side(descending=False)

    # -------------------------------------------------------------- reading

    @property
    def bids(self) -> list[Level]:
        """``(price, quantity)`` of every bid, best (highest) first."""
        return list(self._bids.best())

    @property
    def asks(self) -> list[Level]:
        """``(price, quantity)`` of every ask, best (lowest) first."""
        return list(self._asks.best())

    @property
    def best_bid(self) -> Level | None:
        best = self._bids.best()
        return best[0] if best else None

    @property
    def best_ask(self) -> Level | None:
        best = self._asks.best()
        return best[0] if best else None

    @property
    def spread(self) -> Decimal | None:
        """Best ask minus best bid; None when a side is empty."""
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else ask[0] - bid[0]

    def checksum(self) -> int:
        """The checksum of the book as it is (the levels kept are the window)."""
        text = self._asks.checksum_text() + self._bids.checksum_text()
        return zlib.crc32(text.encode("ascii"))

    # ------------------------------------------------------------- applying

    def apply(self, message: DepthSnapshot | DepthUpdate) -> bool:
        """Apply a snapshot or the next update; False for a duplicate (ignored).

        Raises:
            SeqGap: an update whose seq is past ``seq + 1``, or one before any snapshot.
            ChecksumMismatch: the resulting book is not the server's.
        """
        if isinstance(message, DepthSnapshot):
            self._bids.replace(message.bids)
            self._asks.replace(message.asks)
        else:
            if not self.synced or self.seq is None:
                self.synced = False
                raise SeqGap(self.seq, message.seq)
            if message.seq <= self.seq:
                return False
            if message.seq != self.seq + 1:
                self.synced = False
                raise SeqGap(self.seq, message.seq)
            self._bids.apply(message.bids)
            self._asks.apply(message.asks)
        if self.levels is not None:
            self._bids.truncate(self.levels)
            self._asks.truncate(self.levels)
        self.seq = message.seq
        computed = self.checksum()
        if computed != message.checksum:
            self.synced = False
            raise ChecksumMismatch(message.seq, message.checksum, computed)
        self.synced = True
        return True

    def clear(self) -> None:
        """Forget everything (before a fresh snapshot)."""
        self._bids.replace(())
        self._asks.replace(())
        self.seq = None
        self.synced = False
