"""Server messages: engine events turned into the seed's JSON shapes, and the depth book.

Rules of this module:

* Pure: no trio, no sockets. Each function maps one engine event (integers)
  to one message (decimal strings) using the market's :class:`MarketSpec`.
* Field names follow the seed service (``order_update``, ``trade_executed``,
  ``orderbook_update``); every stream message also carries ``seq``, added by
  the fan-out because it belongs to the channel, not to the event.
* :class:`DepthBook` mirrors one market's L2 book from ``BookLevelChanged``
  events and reports what changed inside the top ``levels`` window, so a
  client that keeps only that window stays exact. Its checksum is Kraken's
  (see ``docs/protocol.md``): CRC32 over the top levels, asks best first then
  bids best first, each price and quantity with the decimal point and leading
  zeros removed, concatenated. Each :class:`DepthDiff` carries the window it
  leaves, so its message can be built later (from history) without the book.
"""

from __future__ import annotations

import functools
import zlib
from bisect import insort
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from engine import (
    BookLevelChanged,
    MarketSpec,
    Order,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    Side,
    TopOfBookChanged,
    TradeExecuted,
)

Message = dict[str, Any]

_STATUS = {
    OrderStatus.NEW: "OPEN",
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.CANCELLED: "CANCELLED",
}


def iso_time(ts: int) -> str:
    """Nanoseconds since the epoch as ``2025-11-23T10:30:45.234Z`` (UTC, milliseconds)."""
    seconds, rest = divmod(ts, 1_000_000_000)
    return f"{_second(seconds)}{rest // 1_000_000:03d}Z"


@functools.lru_cache(maxsize=8)
def _second(seconds: int) -> str:
    """``2025-11-23T10:30:45.``: messages of one batch share their second, and formatting
    a datetime costs more than the rest of an order's JSON."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def order_status(status: OrderStatus) -> str:
    return _STATUS[status]


def order_json(order: Order, spec: MarketSpec) -> Message:
    """An order as REST answers it and WebSocket order entry replies with (the seed's names)."""
    return {
        "order_id": order.order_id, "client_order_id": order.client_order_id,
        "user_id": order.user_id, "symbol": order.symbol, "side": order.side.upper(),
        "type": str(order.order_type), "time_in_force": str(order.time_in_force),
        "post_only": order.post_only,
        "self_trade_prevention": str(order.self_trade_prevention),
        "price": None if order.price is None else spec.format_price(order.price),
        "quantity": spec.format_quantity(order.quantity),
        "filled_quantity": spec.format_quantity(order.filled),
        "remaining_quantity": spec.format_quantity(order.remaining),
        "status": order_status(order.status),
        "created_at": iso_time(order.created_ts),
        "updated_at": iso_time(order.updated_ts),
    }


def _price(spec: MarketSpec, ticks: int | None) -> str | None:
    return None if ticks is None else spec.format_price(ticks)


OrderEvent = OrderAccepted | OrderFilled | OrderCancelled | OrderAmended | OrderRejected


def order_update(event: OrderEvent, spec: MarketSpec | None) -> Message:
    """The private ``order_update`` message for one lifecycle event."""
    if isinstance(event, OrderRejected):
        return {
            "type": "order_update", "action": "rejected", "order_id": event.order_id,
            "client_order_id": event.client_order_id, "user_id": event.user_id,
            "symbol": event.symbol, "status": "REJECTED", "command": event.command,
            "reason": str(event.reason), "timestamp": iso_time(event.ts),
        }
    assert spec is not None
    fmt_qty = spec.format_quantity
    base: Message = {
        "type": "order_update", "order_id": event.order_id,
        "client_order_id": event.client_order_id, "user_id": event.user_id,
        "symbol": event.symbol, "side": event.side.upper(),
    }
    if isinstance(event, OrderAccepted):
        base.update(
            action="created", status="OPEN", order_type=str(event.order_type),
            time_in_force=str(event.time_in_force), price=_price(spec, event.price),
            quantity=fmt_qty(event.quantity), filled_quantity=fmt_qty(0),
            remaining_quantity=fmt_qty(event.quantity),
        )
    elif isinstance(event, OrderFilled):
        base.update(
            action="filled" if event.status is OrderStatus.FILLED else "partially_filled",
            status=_STATUS[event.status], price=_price(spec, event.order_price),
            quantity=fmt_qty(event.filled + event.remaining),
            filled_quantity=fmt_qty(event.filled), remaining_quantity=fmt_qty(event.remaining),
            trade_id=event.trade_id, fill_price=spec.format_price(event.price),
            fill_quantity=fmt_qty(event.quantity), fee=spec.format_fee(event.fee),
            fee_asset=spec.quote, liquidity=str(event.liquidity),
        )
    elif isinstance(event, OrderCancelled):
        base.update(
            action="cancelled", status="CANCELLED", price=_price(spec, event.price),
            quantity=fmt_qty(event.quantity), filled_quantity=fmt_qty(event.filled),
            remaining_quantity=fmt_qty(0), cancelled_quantity=fmt_qty(event.cancelled),
            reason=str(event.reason),
        )
    else:
        base.update(
            action="amended", status=_STATUS[event.status], price=_price(spec, event.price),
            quantity=fmt_qty(event.quantity), filled_quantity=fmt_qty(event.filled),
            remaining_quantity=fmt_qty(event.remaining), priority_kept=event.priority_kept,
        )
    base["timestamp"] = iso_time(event.ts)
    return base


def trade_executed(event: TradeExecuted, spec: MarketSpec, *, with_user_ids: bool) -> Message:
    """The public ``trade_executed`` message; user ids only when the operator allows."""
    taker_buys = event.taker_side is Side.BUY
    message: Message = {
        "type": "trade_executed", "trade_id": event.trade_id, "symbol": event.symbol,
        "price": spec.format_price(event.price), "quantity": spec.format_quantity(event.quantity),
        "taker_side": event.taker_side.upper(),
        "buyer_fee": spec.format_fee(event.taker_fee if taker_buys else event.maker_fee),
        "seller_fee": spec.format_fee(event.maker_fee if taker_buys else event.taker_fee),
        "fee_asset": spec.quote, "executed_at": iso_time(event.ts),
    }
    if with_user_ids:
        message["buyer_id"] = event.taker_user_id if taker_buys else event.maker_user_id
        message["seller_id"] = event.maker_user_id if taker_buys else event.taker_user_id
    return message


def orderbook_update(event: TopOfBookChanged, spec: MarketSpec) -> Message:
    """The ``orderbook_update`` (top of book) message; ``null`` for an empty side."""
    bid, ask = event.bid_price, event.ask_price
    return {
        "type": "orderbook_update", "symbol": event.symbol,
        "best_bid": _price(spec, bid), "best_ask": _price(spec, ask),
        "bid_quantity": spec.format_quantity(event.bid_quantity),
        "ask_quantity": spec.format_quantity(event.ask_quantity),
        "spread": None if bid is None or ask is None else spec.format_price(ask - bid),
        "timestamp": iso_time(event.ts),
    }


def orderbook_snapshot(top: TopOfBookChanged, spec: MarketSpec, seq: int) -> Message:
    """The top of book right after ``subscribed``: ``orderbook_update`` at the channel's
    ``seq``, without ``timestamp`` (the last change may predate this process)."""
    message = orderbook_update(top, spec)
    del message["timestamp"]
    message["type"] = "orderbook_snapshot"
    message["seq"] = seq
    return message


def _checksum_part(text: str) -> str:
    return text.replace(".", "").lstrip("0")


@attrs.frozen
class DepthDiff:
    """One depth message's content: the levels of the window that changed, and the
    window after the change, as ``(price, quantity)`` integers, best first.

    It carries its window so that its message (checksum included) and a snapshot at
    its ``seq`` can be built later, from history or by another task, without the book.
    """

    symbol: str
    seq: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    ts: int
    bid_window: tuple[tuple[int, int], ...]
    ask_window: tuple[tuple[int, int], ...]


def depth_update(diff: DepthDiff, spec: MarketSpec) -> Message:
    """The ``depth_update`` message of a diff."""
    return {
        "type": "depth_update", "symbol": diff.symbol, "seq": diff.seq,
        "bids": _depth_levels(spec, sorted(diff.bids, reverse=True)),
        "asks": _depth_levels(spec, sorted(diff.asks)),
        "checksum": depth_checksum(spec, diff.bid_window, diff.ask_window),
        "timestamp": iso_time(diff.ts),
    }


def depth_snapshot(
    spec: MarketSpec, seq: int, bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]]
) -> Message:
    """The ``depth_snapshot`` of a window (levels best first) at ``seq``."""
    return {
        "type": "depth_snapshot", "symbol": spec.symbol, "seq": seq,
        "bids": _depth_levels(spec, bids), "asks": _depth_levels(spec, asks),
        "checksum": depth_checksum(spec, bids, asks),
    }


def depth_checksum(
    spec: MarketSpec, bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]]
) -> int:
    """Kraken's CRC32 over a window, asks best first then bids best first."""
    parts = [
        _checksum_part(spec.format_price(price)) + _checksum_part(spec.format_quantity(qty))
        for levels in (asks, bids)
        for price, qty in levels
    ]
    return zlib.crc32("".join(parts).encode("ascii"))


def _depth_levels(spec: MarketSpec, levels: Sequence[tuple[int, int]]) -> list[list[str]]:
    """``[price, quantity]`` strings; a level that left the window has quantity ``"0"``."""
    return [[spec.format_price(p), spec.format_quantity(q) if q else "0"] for p, q in levels]


class DepthBook:
    """One market's L2 book as the depth stream sees it. Owned by the depth fan-out task.

    ``seq`` counts depth messages: it rises by one each time the top
    ``levels`` window changes, so a snapshot taken at ``seq`` plus the
    updates numbered after it is always exactly this book's window.
    """

    def __init__(self, spec: MarketSpec, levels: int) -> None:
        self.spec = spec
        self.levels = levels
        self.seq = 0
        self._qty: dict[Side, dict[int, int]] = {Side.BUY: {}, Side.SELL: {}}
        # Sorted so that the best price is last: bids by price, asks by -price.
        self._keys: dict[Side, list[int]] = {Side.BUY: [], Side.SELL: []}

    def load(self, bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> None:
        """Start from an existing book (after recovery); ``seq`` stays where it is."""
        for side, levels in ((Side.BUY, bids), (Side.SELL, asks)):
            for price, quantity in levels:
                self._set(side, price, quantity)

    def top(self, side: Side, levels: int | None = None) -> list[tuple[int, int]]:
        """``(price, quantity)`` of the best levels of a side, best first."""
        count = self.levels if levels is None else levels
        keys, qty = self._keys[side], self._qty[side]
        sign = 1 if side is Side.BUY else -1
        return [(k * sign, qty[k * sign]) for k in reversed(keys[-count:] if count else [])]

    def apply(self, changes: list[BookLevelChanged]) -> DepthDiff | None:
        """Apply one command's level changes; what moved in the window, if anything.

        Integers only, and cheap when the change is outside the window: this
        runs for every command, subscribed or not, because it keeps ``seq``.
        The diff lists every level of the window whose quantity changed, with
        0 for a level that left the window (removed, or pushed out by a better
        one), so a client can apply it and truncate to ``levels``.
        """
        before: dict[Side, list[tuple[int, int]]] = {}
        window, keys_of = self.levels, self._keys
        for change in changes:
            side = change.side
            if side not in before:
                keys = keys_of[side]
                key = change.price if side is Side.BUY else -change.price
                if len(keys) >= window and key < keys[-window]:
                    # Worse than the window's last level: the window cannot change.
                    self._set(side, change.price, change.quantity)
                    continue
                before[side] = self.top(side)
            self._set(side, change.price, change.quantity)
        if not before:
            return None
        after = {side: self.top(side) for side in before}
        diff: dict[Side, list[tuple[int, int]]] = {Side.BUY: [], Side.SELL: []}
        for side, old_levels in before.items():
            new_levels = after[side]
            if new_levels == old_levels:
                continue
            old, new = dict(old_levels), dict(new_levels)
            diff[side] = [(p, q) for p, q in new_levels if old.get(p) != q] + [
                (p, 0) for p in old if p not in new]
        if not diff[Side.BUY] and not diff[Side.SELL]:
            return None
        self.seq += 1
        bids = after[Side.BUY] if Side.BUY in after else self.top(Side.BUY)
        asks = after[Side.SELL] if Side.SELL in after else self.top(Side.SELL)
        return DepthDiff(self.spec.symbol, self.seq, diff[Side.BUY], diff[Side.SELL],
                         changes[-1].ts, tuple(bids), tuple(asks))

    def update_message(self, diff: DepthDiff) -> Message:
        """The ``depth_update`` for a diff that :meth:`apply` returned."""
        return depth_update(diff, self.spec)

    def snapshot(self) -> Message:
        return depth_snapshot(self.spec, self.seq, self.top(Side.BUY), self.top(Side.SELL))

    def checksum(self) -> int:
        return depth_checksum(self.spec, self.top(Side.BUY), self.top(Side.SELL))

    def levels_of(self, side: Side) -> list[tuple[int, int]]:
        """Every level of a side, best first (the whole book, not only the window)."""
        return self.top(side, len(self._keys[side]))

    def _set(self, side: Side, price: int, quantity: int) -> None:
        qty, keys = self._qty[side], self._keys[side]
        key = price if side is Side.BUY else -price
        if quantity:
            if price not in qty:
                insort(keys, key)
            qty[price] = quantity
        elif price in qty:
            del qty[price]
            keys.remove(key)
