"""The fan-out: engine events in, one encoded message per channel out to every subscriber.

Rules of this module:

* One fan-out task per stream (orders, trades, orderbook, depth), each fed by
  its own bounded memory channel of event batches (one per batch of commands).
  When a fan-out channel is full the engine task waits: fan-out tasks never
  wait for a client, so this only happens when fan-out CPU falls behind.
* A message is encoded once per channel, as the bytes of a whole WebSocket
  frame, and handed to each subscriber with :meth:`Subscriber.offer`, which
  never blocks. A subscriber whose queue is
  full is told to close as a slow consumer; nobody else waits for it.
* The hub owns the subscription registry and the depth books. Connection
  tasks change the registry through :meth:`Hub.subscribe` and
  :meth:`Hub.unsubscribe`, which run to completion without a checkpoint, so
  a subscriber always sees ``subscribed`` (and a depth snapshot) before the
  first message of the channel, and the snapshot is exactly the state that
  the next update applies to.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec
import trio

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
from gateway import _messages as messages
from gateway._frames import text_frame
from gateway._protocol import Channel, Stream
from gateway._stats import Stats

_encode = msgspec.json.Encoder().encode

SLOW_CONSUMER = 4008
"""Close code for a client whose send queue overflowed or whose send timed out."""

_MAX_MERGED_BATCHES = 64
"""Queued event batches one fan-out pass may merge (bounds the work between checkpoints)."""

_ORDER_EVENTS = (OrderAccepted, OrderFilled, OrderCancelled, OrderAmended, OrderRejected)


class Subscriber(Protocol):
    def offer(self, frames: bytes, count: int = 1) -> bool:
        """Send or queue ``count`` whole WebSocket frames without blocking.

        Returns False, having queued nothing, when the queue is full.
        """

    def close_soon(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code``; returns at once."""


Batch = list[Any]


class Hub:
    """Subscriptions, depth books and the per-stream fan-out tasks.

    Args:
        markets: the engine's markets, to format amounts.
        depth_levels: levels per side in depth snapshots, updates and checksums.
        public_trade_user_ids: put ``buyer_id``/``seller_id`` on public trades.
        publish_timestamps: put ``published_ns`` (this machine's monotonic clock when
            the message was encoded) on every stream message, for latency benchmarks.
        queue_size: bound of each fan-out task's input channel, in batches.
        stats: counters to bump.
    """

    def __init__(
        self,
        markets: Mapping[str, MarketSpec],
        *,
        depth_levels: int,
        public_trade_user_ids: bool,
        queue_size: int,
        stats: Stats,
        publish_timestamps: bool = False,
    ) -> None:
        self._markets = dict(markets)
        self._public_ids = public_trade_user_ids
        self._stamp = publish_timestamps
        self._stats = stats
        self._subscribers: dict[Channel, dict[Subscriber, None]] = {}
        self._seq: dict[Channel, int] = {}
        self._outbox: dict[Channel, list[bytes]] = {}  # frames of the batch being fanned out
        self.depth = {s: messages.DepthBook(spec, depth_levels) for s, spec in markets.items()}
        self._inputs: dict[Stream, trio.MemorySendChannel[Batch]] = {}
        self._outputs: dict[Stream, trio.MemoryReceiveChannel[Batch]] = {}
        for stream in Stream:
            send, receive = trio.open_memory_channel[Batch](queue_size)
            self._inputs[stream], self._outputs[stream] = send, receive

    # ----------------------------------------------------------- the tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the four fan-out tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fan_out, Stream.ORDERS, self._orders)
            nursery.start_soon(self._fan_out, Stream.TRADES, self._trades)
            nursery.start_soon(self._fan_out, Stream.ORDERBOOK, self._orderbook)
            nursery.start_soon(self._fan_out, Stream.DEPTH, self._depth)
            task_status.started()

    async def publish(self, events: Sequence[Event]) -> None:
        """Hand a batch's events to the fan-out tasks that care (the engine task calls this).

        Events keep their order; a depth update covers the whole batch.
        """
        batches: dict[Stream, Batch] = defaultdict(list)
        for event in events:
            if isinstance(event, _ORDER_EVENTS):
                batches[Stream.ORDERS].append(event)
            elif isinstance(event, TradeExecuted):
                batches[Stream.TRADES].append(event)
            elif isinstance(event, BookLevelChanged):
                batches[Stream.DEPTH].append(event)
            elif isinstance(event, TopOfBookChanged):
                batches[Stream.ORDERBOOK].append(event)
        for stream, batch in batches.items():
            await self._inputs[stream].send(batch)

    async def _fan_out(self, stream: Stream, handle: Any) -> None:
        receive = self._outputs[stream]
        async with receive:
            async for first in receive:
                # Batches that queued while the last went out go out together: under
                # load that means fewer, larger writes per client, not more latency.
                merged = first
                for _ in range(_MAX_MERGED_BATCHES):
                    try:
                        merged += receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                handle(merged)
                self._flush()

    def _orders(self, batch: Batch) -> None:
        for event in batch:
            channel = (Stream.ORDERS, event.user_id)
            if channel in self._subscribers:
                spec = self._markets.get(event.symbol) if event.symbol else None
                self._deliver(channel, messages.order_update(event, spec))

    def _trades(self, batch: Batch) -> None:
        for event in batch:
            for channel in ((Stream.TRADES, event.symbol), (Stream.TRADES, None)):
                if channel in self._subscribers:
                    spec = self._markets[event.symbol]
                    self._deliver(
                        channel,
                        messages.trade_executed(event, spec, with_user_ids=self._public_ids),
                    )

    def _orderbook(self, batch: Batch) -> None:
        for event in batch:
            channel = (Stream.ORDERBOOK, event.symbol)
            if channel in self._subscribers:
                spec = self._markets[event.symbol]
                self._deliver(channel, messages.orderbook_update(event, spec))

    def _depth(self, batch: Batch) -> None:
        by_symbol: dict[str, list[BookLevelChanged]] = defaultdict(list)
        for event in batch:
            by_symbol[event.symbol].append(event)
        for symbol, changes in by_symbol.items():
            book = self.depth[symbol]
            diff = book.apply(changes)  # always: REST reads these books
            channel = (Stream.DEPTH, symbol)
            if diff is not None and channel in self._subscribers:
                self._send(channel, book.update_message(diff))

    def _deliver(self, channel: Channel, message: dict[str, Any]) -> None:
        seq = self._seq[channel] = self._seq[channel] + 1
        message["seq"] = seq
        self._send(channel, message)

    def _send(self, channel: Channel, message: dict[str, Any]) -> None:
        """Encode once into the channel's outbox; :meth:`_flush` hands it out."""
        if self._stamp:
            message["published_ns"] = time.monotonic_ns()
        frame = text_frame(_encode(message))
        frames = self._outbox.get(channel)
        if frames is None:
            self._outbox[channel] = [frame]
        else:
            frames.append(frame)

    def _flush(self) -> None:
        """Give each subscriber its channels' frames of the batch, in one piece each.

        Runs right after the batch was encoded, without a checkpoint in between,
        so the subscribers are exactly those the sequence numbers were counted for.
        """
        stats = self._stats
        for channel, frames in self._outbox.items():
            count = len(frames)
            data = frames[0] if count == 1 else b"".join(frames)
            subscribers = self._subscribers.get(channel, {})
            for subscriber in subscribers:
                if not subscriber.offer(data, count):
                    stats.messages_dropped += count
                    subscriber.close_soon(SLOW_CONSUMER, "slow consumer")
            stats.messages_sent[channel[0]] += count * len(subscribers)
        self._outbox.clear()

    # ------------------------------------------------- the registry (sync)

    def subscribe(self, subscriber: Subscriber, channel: Channel, request_id: Any) -> None:
        """Register and queue the ``subscribed`` reply (and a depth snapshot) atomically."""
        subscribers = self._subscribers.get(channel)
        stream, key = channel
        if subscribers is None:
            subscribers = self._subscribers[channel] = {}
            if stream is not Stream.DEPTH:  # a depth channel counts with its DepthBook
                self._seq[channel] = 0
        reply: dict[str, Any] = {"type": "subscribed", "id": request_id, "stream": stream}
        if stream is not Stream.ORDERS:
            reply["symbol"] = key
        if stream is Stream.DEPTH:
            assert key is not None
            book = self.depth[key]
            reply["seq"] = book.seq
            ok = subscriber.offer(text_frame(_encode(reply))) and subscriber.offer(
                text_frame(_encode(book.snapshot()))
            )
        else:
            reply["seq"] = self._seq[channel]
            ok = subscriber.offer(text_frame(_encode(reply)))
        subscribers[subscriber] = None
        if not ok:
            subscriber.close_soon(SLOW_CONSUMER, "slow consumer")

    def unsubscribe(self, subscriber: Subscriber, channel: Channel) -> None:
        subscribers = self._subscribers.get(channel)
        if subscribers is None:
            return
        subscribers.pop(subscriber, None)
        if not subscribers:
            del self._subscribers[channel]
            if channel[0] is not Stream.DEPTH:
                del self._seq[channel]

    def subscription_counts(self) -> dict[str, int]:
        counts = {str(stream): 0 for stream in Stream}
        for (stream, _), subscribers in self._subscribers.items():
            counts[str(stream)] += len(subscribers)
        return counts

    def depth_view(self, symbol: str, levels: int) -> dict[str, Any]:
        """The depth stream's book for REST: top ``levels`` per side and its ``seq``."""
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
