"""The client's local depth book and checksum, without a network.

The checksum is checked against the two things a user has: the JSON example in
docs/protocol.md (a message the live server really sent, see
test_protocol_doc.py) and the reference function printed there, run here on
random books. The book is driven by a small model of the server's depth window
written in this file: after any sequence of level changes, applying the diffs
of the window gives exactly the window, and every checksum agrees.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.client import OrderBook, checksum
from gateway.client._book import ChecksumMismatch, SeqGap
from gateway.client._messages import DepthSnapshot, DepthUpdate, decode

PROTOCOL = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text("utf-8")
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def doc_example(name: str) -> dict[str, Any]:
    match = re.search(rf"```json example: {name}\n(.*?)```", PROTOCOL, re.S)
    assert match, name
    example: dict[str, Any] = json.loads(match.group(1))
    return example


def reference_checksum() -> Any:
    """The ``checksum`` function docs/protocol.md prints, as a reader would paste it."""
    match = re.search(r"\*\*Checksum\*\*.*?```python\n(.*?)```", PROTOCOL, re.S)
    assert match
    namespace: dict[str, Any] = {}
    exec(match.group(1), namespace)
    return namespace["checksum"]


def levels(pairs: list[tuple[str, str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(q)) for p, q in pairs]


def snapshot(seq: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> DepthSnapshot:
    return DepthSnapshot(symbol="BTC/USDT", seq=seq, bids=levels(bids), asks=levels(asks),
                         checksum=checksum(levels(bids), levels(asks)))


def update(seq: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]],
           check: int) -> DepthUpdate:
    return DepthUpdate(symbol="BTC/USDT", seq=seq, bids=levels(bids), asks=levels(asks),
                       checksum=check, timestamp=NOW)


def test_the_documented_snapshot_and_update_check_out():
    message = decode(json.dumps(doc_example("depth_snapshot")))
    assert isinstance(message, DepthSnapshot)
    book = OrderBook("BTC/USDT")
    assert book.apply(message)
    assert book.checksum() == message.checksum == 3804679936
    assert book.best_bid == (Decimal("50000.00"), Decimal("0.00600"))
    assert book.best_ask is None
    assert book.spread is None
    emptied = decode(json.dumps(doc_example("depth_update")))
    assert isinstance(emptied, DepthUpdate)
    assert emptied.seq == message.seq + 1
    assert book.apply(emptied)
    assert (book.bids, book.asks, book.checksum()) == ([], [], 0)  # crc32("") = 0


def test_amounts_keep_the_digits_the_server_sent():
    # "0.00600" -> "600" and "50000.00" -> "5000000": the trailing zeros count, so a
    # float (or a normalised Decimal) would give another checksum.
    bids = levels([("50000.00", "0.00600")])
    assert checksum(bids, []) == 3804679936
    assert checksum(levels([("50000", "0.006")]), []) != 3804679936
    tiny = levels([("0.00001000", "0.0000001")])
    assert checksum(tiny, []) == reference_checksum()([["0.00001000", "0.0000001"]], [])


decimals = st.integers(min_value=1, max_value=10**9)


@st.composite
def books(draw: st.DrawFn) -> tuple[list[list[str]], list[list[str]], int]:
    price_places = draw(st.integers(0, 8))
    qty_places = draw(st.integers(0, 8))
    depth = draw(st.integers(1, 12))

    def side() -> list[list[str]]:
        prices = draw(st.lists(decimals, max_size=20, unique=True))
        return [[f"{Decimal(p).scaleb(-price_places):f}",
                 f"{Decimal(draw(decimals)).scaleb(-qty_places):f}"] for p in prices]

    return side(), side(), depth


@settings(max_examples=300, deadline=None)
@given(books())
def test_checksum_equals_the_documented_reference(book: tuple[list[list[str]], list[list[str]],
                                                              int]):
    bids, asks, depth = book
    ours = checksum([(Decimal(p), Decimal(q)) for p, q in bids],
                    [(Decimal(p), Decimal(q)) for p, q in asks], depth)
    assert ours == reference_checksum()(bids, asks, depth)


def test_levels_are_set_deleted_and_read_best_first():
    book = OrderBook("BTC/USDT")
    book.apply(snapshot(5, [("100.00", "1.0"), ("101.00", "2.0")], [("103.00", "3.0")]))
    assert book.best_bid == (Decimal("101.00"), Decimal("2.0"))
    assert book.spread == Decimal("2.00")
    after = OrderBook("x")
    after.apply(snapshot(0, [("100.00", "1.0"), ("99.00", "4.0")],
                         [("102.00", "5.0"), ("103.00", "3.0")]))
    assert book.apply(update(6, [("101.00", "0"), ("99.00", "4.0")], [("102.00", "5.0")],
                             after.checksum()))
    assert book.bids == levels([("100.00", "1.0"), ("99.00", "4.0")])
    assert book.asks == levels([("102.00", "5.0"), ("103.00", "3.0")])
    assert (book.seq, book.synced) == (6, True)


def test_a_duplicate_is_ignored_and_a_gap_or_a_bad_checksum_unsyncs():
    book = OrderBook("BTC/USDT")
    with pytest.raises(SeqGap):  # an update before any snapshot
        book.apply(update(1, [], [], 0))
    book.apply(snapshot(3, [("100.00", "1.0")], []))
    assert not book.apply(update(3, [("100.00", "0")], [], 0))  # seq 3 again: dropped
    assert book.bids == levels([("100.00", "1.0")])
    with pytest.raises(SeqGap, match="seq 5 does not follow 3"):
        book.apply(update(5, [], [], 0))
    assert not book.synced
    book.apply(snapshot(7, [("100.00", "1.0")], []))
    with pytest.raises(ChecksumMismatch, match="at seq 8: the server says 12345"):
        book.apply(update(8, [("100.00", "2.0")], [], 12345))
    assert not book.synced
    with pytest.raises(SeqGap):  # nothing continues an unsynced book but a snapshot
        book.apply(update(9, [], [], 0))


def test_a_levels_limit_truncates_each_side():
    book = OrderBook("BTC/USDT", levels=2)
    bids = [("100.00", "1"), ("99.00", "1"), ("98.00", "1")]
    message = DepthSnapshot(symbol="BTC/USDT", seq=1, bids=levels(bids), asks=[],
                            checksum=checksum(levels(bids), [], 2))
    book.apply(message)
    assert [price for price, _ in book.bids] == [Decimal("100.00"), Decimal("99.00")]


# ------------------------------------------------- a model of the server's window


class ServerWindow:
    """The server's rule, restated: full book in, top-``depth`` window diffs out."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.full: dict[str, dict[int, int]] = {"bids": {}, "asks": {}}
        self.seq = 0

    def window(self, side: str) -> list[tuple[int, int]]:
        ordered = sorted(self.full[side].items(), reverse=side == "bids")
        return ordered[:self.depth]

    @staticmethod
    def text(levels_: list[tuple[int, int]]) -> list[tuple[Decimal, Decimal]]:
        return [(Decimal(p).scaleb(-2), Decimal(q).scaleb(-3) if q else Decimal(0))
                for p, q in levels_]

    def snapshot(self) -> DepthSnapshot:
        bids, asks = self.text(self.window("bids")), self.text(self.window("asks"))
        return DepthSnapshot(symbol="T", seq=self.seq, bids=bids, asks=asks,
                             checksum=checksum(bids, asks))

    def change(self, side: str, price: int, quantity: int) -> DepthUpdate | None:
        before = dict(self.window(side))
        if quantity:
            self.full[side][price] = quantity
        else:
            self.full[side].pop(price, None)
        after = dict(self.window(side))
        diff = [(p, q) for p, q in after.items() if before.get(p) != q]
        diff += [(p, 0) for p in before if p not in after]
        if not diff:
            return None
        self.seq += 1
        empty: list[tuple[Decimal, Decimal]] = []
        snap = self.snapshot()
        return DepthUpdate(symbol="T", seq=self.seq, timestamp=NOW, checksum=snap.checksum,
                           bids=self.text(diff) if side == "bids" else empty,
                           asks=self.text(diff) if side == "asks" else empty)


changes = st.lists(st.tuples(st.sampled_from(["bids", "asks"]), st.integers(1, 30),
                             st.integers(0, 5)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), changes, changes)
def test_applying_window_diffs_keeps_the_window_exactly(depth: int, before: list[Any],
                                                        after: list[Any]):
    server = ServerWindow(depth)
    for side, price, quantity in before:
        server.change(side, price, quantity)
    book = OrderBook("T")
    book.apply(server.snapshot())
    for side, price, quantity in after:
        message = server.change(side, price, quantity)
        if message is not None:
            assert book.apply(message)  # raises on any checksum mismatch
    final = server.snapshot()
    assert (book.bids, book.asks, book.seq) == (final.bids, final.asks, final.seq)
