"""State export, restore and hash, and the query views: the engine as plain values.

Rules of this module:

* :func:`export_state` gives everything :func:`load_state` needs to rebuild an
  engine that answers every query and every future command alike: the
  counters, the history limits, the market specs, the books in queue order,
  the retained trades, the retained closed orders oldest first, and each
  user's open orders in the user's own order (the books alone do not hold it).
* Restoring an export gives the same :func:`state_hash`; the hash is the
  BLAKE2b-256 of the export's MessagePack, so equal hashes mean equal states.
* Nothing exported or answered to a query refers to the engine's mutable
  objects: orders are copied into :class:`engine.Order` views by field name
  (:func:`view`), and back (:func:`resting`); depth and queues are new lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import attrs
import msgspec

from engine._book import Book, BookSide, Market, RestingOrder
from engine._commands import Side
from engine._markets import MarketSpec
from engine._orders import OrderIndex
from engine._views import BookQueue, Depth, DepthLevel, EngineState, MarketState, Order


def export_state(
    markets: Mapping[str, Market], index: OrderIndex, *, last_seq: int, next_trade_id: int,
    order_history: int, trade_history: int,
) -> EngineState:
    """The engine's whole state as plain immutable values."""
    return EngineState(
        last_seq=last_seq,
        next_trade_id=next_trade_id,
        order_history=order_history,
        trade_history=trade_history,
        markets=[
            MarketState(
                spec=spec_fields(m.spec),
                book=book_queue(symbol, m.book),
                trades=list(m.trades),
            )
            for symbol, m in markets.items()
        ],
        closed_orders=[view(o) for o in index.closed_orders()],
        user_orders=index.user_order_ids(),
    )


def state_hash(state: EngineState) -> str:
    """A fingerprint of a state: equal states, equal hashes."""
    return hashlib.blake2b(msgspec.msgpack.encode(state), digest_size=32).hexdigest()


def market_specs(state: EngineState) -> Iterable[MarketSpec]:
    """The markets of an exported state, in their order, to build the engine with."""
    return (MarketSpec(**ms.spec) for ms in state.markets)  # type: ignore[arg-type]


def load_state(state: EngineState, markets: Mapping[str, Market], index: OrderIndex) -> None:
    """Fill a new engine's ``markets`` (built from :func:`market_specs`) and ``index``.

    Orders go back on their levels in queue order, and into the index in each
    user's own order, so that both come out of the next export as they went in.
    """
    resting_by_id: dict[int, RestingOrder] = {}
    for ms in state.markets:
        m = markets[ms.book.symbol]
        m.trades.extend(ms.trades)
        book = m.book
        for order_view in (*ms.book.bids, *ms.book.asks):
            order = resting(order_view)
            (book.bids if order.side is Side.BUY else book.asks).add(order)
            resting_by_id[order.order_id] = order
        book.top = book.current_top()
    for order_view in state.closed_orders:
        index.remember_closed(resting(order_view))
    for oid in state.user_orders:
        index.open(resting_by_id[oid])


def book_queue(symbol: str, book: Book) -> BookQueue:
    """L3: every resting order in priority order, as views."""
    return BookQueue(
        symbol=symbol,
        bids=[view(o) for level in book.bids for o in level.live()],
        asks=[view(o) for level in book.asks for o in level.live()],
    )


def depth(symbol: str, book: Book, levels: int | None) -> Depth:
    """L2: aggregated levels, best first, at most ``levels`` per side (None: all)."""
    return Depth(symbol=symbol, bids=_aggregate(book.bids, levels),
                 asks=_aggregate(book.asks, levels))


def _aggregate(side: BookSide, limit: int | None) -> list[DepthLevel]:
    out: list[DepthLevel] = []
    if limit is not None and limit <= 0:
        return out
    for level in side:
        out.append(DepthLevel(level.price, level.quantity, level.count))
        if limit is not None and len(out) >= limit:
            break
    return out


def spec_fields(spec: MarketSpec) -> dict[str, str | int]:
    """A market spec as plain values: decimals as strings, exactly as configured."""
    return {
        a.name: v if isinstance(v := getattr(spec, a.name), int) else str(v)
        for a in attrs.fields(MarketSpec)
    }


def view(o: RestingOrder) -> Order:
    """The immutable copy of an order that leaves the engine."""
    return Order(**msgspec.structs.asdict(o))


def resting(v: Order) -> RestingOrder:
    """The engine's own, mutable order for a view (restore)."""
    return RestingOrder(**msgspec.structs.asdict(v))
