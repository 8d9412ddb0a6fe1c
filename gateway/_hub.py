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
* permessage-deflate: a message is compressed at most once per window size
  (in practice once: browsers leave the server's window at 15), lazily, when
  the first subscriber that agreed to it is reached; the same compressed frame
  then serves every such subscriber. Never per subscriber.
* The hub owns the subscription registry and the depth books. Who is
  subscribed, each channel's seq and where each event goes are decided by
  :class:`gateway._routing.Routing` (pure); this module builds the messages,
  frames them and hands them out. Connection tasks change the registry
  through :meth:`Hub.subscribe` and
  :meth:`Hub.unsubscribe`, which run to completion without a checkpoint, so
  a subscriber always sees ``subscribed`` (and a depth or top-of-book
  snapshot) before the first message of the channel, and the snapshot is
  exactly the state that the next update applies to. The top of book comes
  from the last ``TopOfBookChanged`` the orderbook task handled (from the
  depth book loaded before :meth:`Hub.run` until the first one), so its
  ``seq`` and the next update's are consecutive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import trio

from engine import BookLevelChanged, Event, MarketSpec, Side, TopOfBookChanged, TradeExecuted
from gateway import _messages as messages
from gateway._closing import SLOW_CONSUMER
from gateway._deflate import MessageDeflater
from gateway._frames import deflated_text_frame, text_frame
from gateway._messages import OrderEvent
from gateway._protocol import Channel, Stream
from gateway._routing import Routing, Subscriber, by_symbol, split
from gateway._stats import Stats

_encode = msgspec.json.Encoder().encode

_MAX_MERGED_BATCHES = 64
"""Queued event batches one fan-out pass may merge (bounds the work between checkpoints)."""

_NOBODY: dict[Subscriber, int] = {}

E = TypeVar("E", OrderEvent, TradeExecuted, TopOfBookChanged, BookLevelChanged)
"""The events of one stream: each fan-out task's batches are lists of one of these."""


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
        self._routing = Routing()
        self._outbox: dict[Channel, list[bytes]] = {}  # payloads of the batch being fanned out
        self._deflaters: dict[int, MessageDeflater] = {}  # by window bits, made when first needed
        self._tops: dict[str, TopOfBookChanged] = {}  # the orderbook stream's view, by symbol
        self.depth = {s: messages.DepthBook(spec, depth_levels) for s, spec in markets.items()}
        # Each fan-out task's input, bounded: publish() waits when one is full.
        self._orders_in, self._orders_out = trio.open_memory_channel[list[OrderEvent]](queue_size)
        self._trades_in, self._trades_out = trio.open_memory_channel[list[TradeExecuted]](
            queue_size)
        self._tops_in, self._tops_out = trio.open_memory_channel[list[TopOfBookChanged]](
            queue_size)
        self._levels_in, self._levels_out = trio.open_memory_channel[list[BookLevelChanged]](
            queue_size)

    # ----------------------------------------------------------- the tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the four fan-out tasks until cancelled."""
        for symbol in self.depth:  # the books loaded (after recovery) before any event
            self._tops[symbol] = self._top_from_depth(symbol)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fan_out, self._orders_out, self._orders)
            nursery.start_soon(self._fan_out, self._trades_out, self._trades)
            nursery.start_soon(self._fan_out, self._tops_out, self._orderbook)
            nursery.start_soon(self._fan_out, self._levels_out, self._depth)
            task_status.started()

    async def publish(self, events: Sequence[Event]) -> None:
        """Hand a batch's events to the fan-out tasks that care (the engine task calls this).

        Events keep their order; a depth update covers the whole batch.
        """
        batches = split(events)
        for stream in batches.streams:
            if stream is Stream.ORDERS:
                await self._orders_in.send(batches.orders)
            elif stream is Stream.TRADES:
                await self._trades_in.send(batches.trades)
            elif stream is Stream.DEPTH:
                await self._levels_in.send(batches.levels)
            else:
                await self._tops_in.send(batches.tops)

    async def _fan_out(
        self, receive: trio.MemoryReceiveChannel[list[E]], handle: Callable[[list[E]], None]
    ) -> None:
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

    def _orders(self, batch: list[OrderEvent]) -> None:
        markets = self._markets
        for channel, seq, event in self._routing.orders(batch):
            spec = markets.get(event.symbol) if event.symbol else None
            self._deliver(channel, seq, messages.order_update(event, spec))

    def _trades(self, batch: list[TradeExecuted]) -> None:
        for channel, seq, event in self._routing.trades(batch):
            spec = self._markets[event.symbol]
            self._deliver(
                channel, seq, messages.trade_executed(event, spec, with_user_ids=self._public_ids))

    def _orderbook(self, batch: list[TopOfBookChanged]) -> None:
        tops = self._tops
        for event in batch:
            tops[event.symbol] = event  # always: the next subscriber's snapshot
        for channel, seq, event in self._routing.orderbook(batch):
            spec = self._markets[event.symbol]
            self._deliver(channel, seq, messages.orderbook_update(event, spec))

    def _depth(self, batch: list[BookLevelChanged]) -> None:
        for symbol, changes in by_symbol(batch).items():
            book = self.depth[symbol]
            diff = book.apply(changes)  # always: REST reads these books
            channel = self._routing.depth_channel(symbol)
            if diff is not None and channel is not None:
                self._send(channel, book.update_message(diff))

    def _deliver(self, channel: Channel, seq: int, message: dict[str, Any]) -> None:
        message["seq"] = seq
        self._send(channel, message)

    def _send(self, channel: Channel, message: dict[str, Any]) -> None:
        """Encode once into the channel's outbox; :meth:`_flush` frames and hands it out."""
        if self._stamp:
            message["published_ns"] = time.monotonic_ns()
        payload = _encode(message)
        payloads = self._outbox.get(channel)
        if payloads is None:
            self._outbox[channel] = [payload]
        else:
            payloads.append(payload)

    def _flush(self) -> None:
        """Give each subscriber its channels' frames of the batch, in one piece each.

        Runs right after the batch was encoded, without a checkpoint in between,
        so the subscribers are exactly those the sequence numbers were counted for.
        """
        stats = self._stats
        registry = self._routing.subscribers
        for channel, payloads in self._outbox.items():
            count = len(payloads)
            plain = text_frame(payloads[0]) if count == 1 else b"".join(map(text_frame, payloads))
            compressed: dict[int, bytes] | None = None  # by window bits, built when first needed
            subscribers = registry.get(channel, _NOBODY)
            for subscriber, bits in subscribers.items():
                if bits:
                    if compressed is None:
                        compressed = {}
                    data = compressed.get(bits)
                    if data is None:
                        data = compressed[bits] = self._compress(payloads, bits)
                else:
                    data = plain
                if not subscriber.offer(data, count):
                    stats.messages_dropped += count
                    subscriber.close_soon(SLOW_CONSUMER, "slow consumer")
            stats.messages_sent[channel[0]] += count * len(subscribers)
        self._outbox.clear()

    def _compress(self, payloads: list[bytes], bits: int) -> bytes:
        """The frames of ``payloads`` for permessage-deflate clients with window ``bits``."""
        deflater = self._deflaters.get(bits)
        if deflater is None:
            deflater = self._deflaters[bits] = MessageDeflater(bits)
        self._stats.messages_compressed += len(payloads)
        frames = []
        for payload in payloads:
            data = deflater.compress(payload)
            frames.append(text_frame(payload) if data is None else deflated_text_frame(data))
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _frame(self, message: dict[str, Any], bits: int) -> bytes:
        """One message's frame for one subscriber (replies and snapshots)."""
        payload = _encode(message)
        return self._compress([payload], bits) if bits else text_frame(payload)

    def _top_from_depth(self, symbol: str) -> TopOfBookChanged:
        book = self.depth[symbol]
        bids, asks = book.top(Side.BUY, 1), book.top(Side.SELL, 1)
        return TopOfBookChanged(
            seq=0, ts=0, symbol=symbol,
            bid_price=bids[0][0] if bids else None, bid_quantity=bids[0][1] if bids else 0,
            ask_price=asks[0][0] if asks else None, ask_quantity=asks[0][1] if asks else 0)

    # ------------------------------------------------- the registry (sync)

    def subscribe(self, subscriber: Subscriber, channel: Channel, request_id: Any) -> None:
        """Register and queue ``subscribed`` and the snapshot (depth, top of book) atomically."""
        self._routing.add(subscriber, channel)
        stream, key = channel
        bits = subscriber.deflate_window_bits
        reply: dict[str, Any] = {"type": "subscribed", "id": request_id, "stream": stream}
        if stream is not Stream.ORDERS:
            reply["symbol"] = key
        snapshot: dict[str, Any] | None = None
        if stream is Stream.DEPTH:
            assert key is not None
            book = self.depth[key]
            reply["seq"] = book.seq
            snapshot = book.snapshot()
        else:
            reply["seq"] = self._routing.seq(channel)
        if stream is Stream.ORDERBOOK:
            assert key is not None
            top = self._tops.get(key) or self._top_from_depth(key)  # before run(): the book
            snapshot = messages.orderbook_snapshot(top, self._markets[key], reply["seq"])
        ok = subscriber.offer(text_frame(_encode(reply))) and (
            snapshot is None or subscriber.offer(self._frame(snapshot, bits)))
        if not ok:
            subscriber.close_soon(SLOW_CONSUMER, "slow consumer")

    def unsubscribe(self, subscriber: Subscriber, channel: Channel) -> None:
        self._routing.remove(subscriber, channel)

    def subscription_counts(self) -> dict[str, int]:
        return self._routing.counts()

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
