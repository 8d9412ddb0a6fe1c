"""The hub's routing: who is subscribed to what, each channel's seq, where each event goes.

Rules of this module:

* The registry maps each channel to its subscribers, each with the
  permessage-deflate window it agreed (0: plain frames). A channel exists
  while it has a subscriber; a channel with none is forgotten, and with it
  its seq, so the next first subscriber starts again at 0.
* Every message of an ``orders``, ``trades`` or ``orderbook`` channel gets the
  channel's next seq (1, 2, ...): the routes of a batch carry it. A ``depth``
  channel's seq is its depth book's (``gateway/_messages.py``), counted
  whether or not anyone listens, because REST reads those books.
* Where events go: an order event to its user's ``orders`` channel; a trade
  to its symbol's ``trades`` channel and to the all-symbols one; a top of
  book change to its symbol's ``orderbook`` channel; book level changes, per
  symbol, to its ``depth`` channel. Only channels with a subscriber get a
  route: nothing is built for nobody.
* :func:`split` cuts an engine batch into one batch per stream, keeping the
  events' order, and lists the streams in the order of their first event (the
  order the fan-out tasks are handed them).
* Pure: no trio, no clock, no sockets (``tests/gateway/test_gateway_purity.py``).
  The shell (``gateway/_hub.py``) builds the messages and frames and hands
  them out; it reads :attr:`Routing.subscribers` directly on its hot path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from engine import (
    BookLevelChanged,
    Event,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    TopOfBookChanged,
    TradeExecuted,
)
from gateway._messages import OrderEvent
from gateway._protocol import Channel, Stream

ORDER_EVENTS = (OrderAccepted, OrderFilled, OrderCancelled, OrderAmended, OrderRejected)


class Subscriber(Protocol):
    deflate_window_bits: int
    """permessage-deflate's server window agreed with this subscriber; 0: plain frames."""

    def offer(self, frames: bytes, count: int = 1) -> bool:
        """Send or queue ``count`` whole WebSocket frames without blocking.

        Returns False, having queued nothing, when the queue is full.
        """

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code``; returns at once."""


class StreamBatches:
    """One engine batch's events, per stream, in their order."""

    __slots__ = ("levels", "orders", "streams", "tops", "trades")

    def __init__(self) -> None:
        self.orders: list[OrderEvent] = []
        self.trades: list[TradeExecuted] = []
        self.tops: list[TopOfBookChanged] = []
        self.levels: list[BookLevelChanged] = []
        self.streams: list[Stream] = []
        """The streams with events, in the order of their first event."""


def split(events: Iterable[Event]) -> StreamBatches:
    """Sort a batch's events by stream; events the streams do not carry are left out."""
    batches = StreamBatches()
    streams = batches.streams
    for event in events:
        if isinstance(event, ORDER_EVENTS):
            if not batches.orders:
                streams.append(Stream.ORDERS)
            batches.orders.append(event)
        elif isinstance(event, TradeExecuted):
            if not batches.trades:
                streams.append(Stream.TRADES)
            batches.trades.append(event)
        elif isinstance(event, BookLevelChanged):
            if not batches.levels:
                streams.append(Stream.DEPTH)
            batches.levels.append(event)
        elif isinstance(event, TopOfBookChanged):
            if not batches.tops:
                streams.append(Stream.ORDERBOOK)
            batches.tops.append(event)
    return batches


def by_symbol(levels: Iterable[BookLevelChanged]) -> dict[str, list[BookLevelChanged]]:
    """A depth batch's changes per symbol, each in order (one depth update per symbol)."""
    grouped: dict[str, list[BookLevelChanged]] = {}
    for event in levels:
        changes = grouped.get(event.symbol)
        if changes is None:
            grouped[event.symbol] = [event]
        else:
            changes.append(event)
    return grouped


class Routing:
    """The subscription registry and the seq of each channel. Owned by the hub."""

    __slots__ = ("_seq", "subscribers")

    def __init__(self) -> None:
        self.subscribers: dict[Channel, dict[Subscriber, int]] = {}
        """Each channel's subscribers with their deflate window; read-only outside this class."""
        self._seq: dict[Channel, int] = {}

    # ------------------------------------------------------------ registry

    def add(self, subscriber: Subscriber, channel: Channel) -> None:
        """Register ``subscriber`` (a connection's own :class:`Subscriptions` refuses doubles)."""
        subscribers = self.subscribers.get(channel)
        if subscribers is None:
            subscribers = self.subscribers[channel] = {}
            if channel[0] is not Stream.DEPTH:  # a depth channel counts with its DepthBook
                self._seq[channel] = 0
        subscribers[subscriber] = subscriber.deflate_window_bits

    def remove(self, subscriber: Subscriber, channel: Channel) -> None:
        subscribers = self.subscribers.get(channel)
        if subscribers is None:
            return
        subscribers.pop(subscriber, None)
        if not subscribers:
            del self.subscribers[channel]
            if channel[0] is not Stream.DEPTH:
                del self._seq[channel]

    def seq(self, channel: Channel) -> int:
        """The seq of the channel's last message (0: none yet); not for depth channels."""
        return self._seq[channel]

    def counts(self) -> dict[str, int]:
        """Subscriptions per stream."""
        counts = {str(stream): 0 for stream in Stream}
        for (stream, _), subscribers in self.subscribers.items():
            counts[str(stream)] += len(subscribers)
        return counts

    # -------------------------------------------------------------- routes

    def _next(self, channel: Channel) -> int:
        seq = self._seq[channel] = self._seq[channel] + 1
        return seq

    def orders(self, batch: Iterable[OrderEvent]) -> list[tuple[Channel, int, OrderEvent]]:
        """Each order event to its user's channel, with that channel's next seq."""
        subscribers = self.subscribers
        routes: list[tuple[Channel, int, OrderEvent]] = []
        for event in batch:
            channel: Channel = (Stream.ORDERS, event.user_id)
            if channel in subscribers:
                routes.append((channel, self._next(channel), event))
        return routes

    def trades(self, batch: Iterable[TradeExecuted]) -> list[tuple[Channel, int, TradeExecuted]]:
        """Each trade to its symbol's channel and to the all-symbols channel."""
        subscribers = self.subscribers
        routes: list[tuple[Channel, int, TradeExecuted]] = []
        for event in batch:
            channel: Channel
            for channel in ((Stream.TRADES, event.symbol), (Stream.TRADES, None)):
                if channel in subscribers:
                    routes.append((channel, self._next(channel), event))
        return routes

    def orderbook(
        self, batch: Iterable[TopOfBookChanged]
    ) -> list[tuple[Channel, int, TopOfBookChanged]]:
        """Each top of book change to its symbol's channel."""
        subscribers = self.subscribers
        routes: list[tuple[Channel, int, TopOfBookChanged]] = []
        for event in batch:
            channel: Channel = (Stream.ORDERBOOK, event.symbol)
            if channel in subscribers:
                routes.append((channel, self._next(channel), event))
        return routes

    def depth_channel(self, symbol: str) -> Channel | None:
        """The symbol's depth channel if anyone is subscribed to it."""
        channel: Channel = (Stream.DEPTH, symbol)
        return channel if channel in self.subscribers else None
