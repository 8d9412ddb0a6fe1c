"""The fan-out: numbered stream items in, one encoded message per channel out to every subscriber.

Rules of this module:

* One fan-out task per stream (orders, trades, orderbook, depth), each fed by
  its own bounded memory channel of numbered items (``gateway/_streams.py``;
  one list per batch of commands). When a fan-out channel is full the engine
  task waits: fan-out tasks never wait for a client, so this only happens
  when fan-out CPU falls behind.
* Every item is recorded in the history (``gateway/_history.py``), whether or
  not anyone listens; a message is built and encoded only for a channel with
  a subscriber, once per channel, as the bytes of a whole WebSocket frame,
  and handed to each subscriber with :meth:`Subscriber.offer`, which never
  blocks. A subscriber whose queue is full is told to close as a slow
  consumer; nobody else waits for it.
* permessage-deflate: a message is compressed at most once per window size
  (in practice once: browsers leave the server's window at 15), lazily, when
  the first subscriber that agreed to it is reached; the same compressed frame
  then serves every such subscriber. Never per subscriber.
* The hub owns the subscription registry (:class:`gateway._routing.Routing`),
  the history, and what a new subscriber's snapshot shows: each market's
  depth window and top of book as the last item handed out left them.
  Connection tasks change the registry through :meth:`Hub.subscribe` and
  :meth:`Hub.unsubscribe`, which run to completion without a checkpoint, so
  a subscriber always gets ``subscribed`` and then the snapshot (depth, top
  of book) or, on a resume, the backlog from history, before the channel's
  next live message, whose seq continues theirs without a gap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import msgspec
import trio

from engine import MarketSpec, Side, TopOfBookChanged, TradeExecuted
from gateway import _messages as messages
from gateway._closing import SLOW_CONSUMER
from gateway._deflate import MessageDeflater
from gateway._frames import deflated_text_frame, text_frame
from gateway._history import History
from gateway._messages import DepthDiff, OrderEvent
from gateway._protocol import Channel, ErrorCode, ProtocolError, Since, Stream
from gateway._routing import Routing, Subscriber
from gateway._stats import Stats
from gateway._streams import ORDER_EVENTS, Item, Numbered, Payload, StreamState

_encode = msgspec.json.Encoder().encode

_MAX_MERGED_BATCHES = 64
"""Queued event batches one fan-out pass may merge (bounds the work between checkpoints)."""

_NOBODY: dict[Subscriber, int] = {}

class Hub:
    """Subscriptions, history and the per-stream fan-out tasks.

    Args:
        markets: the engine's markets, to format amounts.
        streams: the stream state at the engine's current seq (after recovery):
            the hub starts its seqs, depth windows and tops of book from it.
        history: the resume history (``gateway/_history.py``), perhaps refilled
            from the journal already; owned by the hub from now on.
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
        streams: StreamState,
        history: History,
        public_trade_user_ids: bool,
        queue_size: int,
        stats: Stats,
        publish_timestamps: bool = False,
    ) -> None:
        self._markets = dict(markets)
        self._public_ids = public_trade_user_ids
        self._stamp = publish_timestamps
        self._stats = stats
        self.epoch = streams.epoch
        self._history = history
        self._routing = Routing()
        self._outbox: dict[Channel, list[bytes]] = {}  # payloads of the batch being fanned out
        self._deflaters: dict[int, MessageDeflater] = {}  # by window bits, made when first needed
        # What a new subscriber's snapshot shows: the state the last item handed out left.
        self._windows: dict[str, tuple[int, Window, Window]] = {
            symbol: (book.seq, tuple(book.top(Side.BUY)), tuple(book.top(Side.SELL)))
            for symbol, book in streams.depth.items()}
        self._tops = {symbol: _top_of(symbol, bids, asks)
                      for symbol, (_, bids, asks) in self._windows.items()}
        # Each fan-out task's input, bounded: publish() waits when one is full.
        self._orders_in, self._orders_out = trio.open_memory_channel[list[Item]](queue_size)
        self._trades_in, self._trades_out = trio.open_memory_channel[list[Item]](queue_size)
        self._tops_in, self._tops_out = trio.open_memory_channel[list[Item]](queue_size)
        self._depth_in, self._depth_out = trio.open_memory_channel[list[Item]](queue_size)

    # ----------------------------------------------------------- the tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the four fan-out tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fan_out, self._orders_out, self._orders)
            nursery.start_soon(self._fan_out, self._trades_out, self._trades)
            nursery.start_soon(self._fan_out, self._tops_out, self._orderbook)
            nursery.start_soon(self._fan_out, self._depth_out, self._depth)
            task_status.started()

    async def publish(self, numbered: Numbered) -> None:
        """Hand a batch's numbered items to the fan-out tasks (the engine task calls this)."""
        if numbered.orders:
            await self._orders_in.send(numbered.orders)
        if numbered.trades:
            await self._trades_in.send(numbered.trades)
        if numbered.depth:
            await self._depth_in.send(numbered.depth)
        if numbered.orderbook:
            await self._tops_in.send(numbered.orderbook)

    async def _fan_out(
        self, receive: trio.MemoryReceiveChannel[list[Item]], handle: Callable[[list[Item]], None]
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

    def _orders(self, items: list[Item]) -> None:
        record, subscribers = self._history.record, self._routing.subscribers
        markets = self._markets
        for channel, seq, event in cast(list[tuple[Channel, int, OrderEvent]], items):
            record(channel, seq, event.ts, event)
            if channel in subscribers:
                spec = markets.get(event.symbol) if event.symbol else None
                self._deliver(channel, seq, messages.order_update(event, spec))

    def _trades(self, items: list[Item]) -> None:
        record, subscribers = self._history.record, self._routing.subscribers
        for channel, seq, event in cast(list[tuple[Channel, int, TradeExecuted]], items):
            record(channel, seq, event.ts, event)
            if channel in subscribers:
                spec = self._markets[event.symbol]
                self._deliver(channel, seq, messages.trade_executed(
                    event, spec, with_user_ids=self._public_ids))

    def _orderbook(self, items: list[Item]) -> None:
        record, subscribers, tops = self._history.record, self._routing.subscribers, self._tops
        for channel, seq, event in cast(list[tuple[Channel, int, TopOfBookChanged]], items):
            record(channel, seq, event.ts, event)
            tops[event.symbol] = event  # always: the next subscriber's snapshot
            if channel in subscribers:
                self._deliver(channel, seq, messages.orderbook_update(
                    event, self._markets[event.symbol]))

    def _depth(self, items: list[Item]) -> None:
        record, subscribers = self._history.record, self._routing.subscribers
        windows = self._windows
        for channel, seq, diff in cast(list[tuple[Channel, int, DepthDiff]], items):
            record(channel, seq, diff.ts, diff)
            windows[diff.symbol] = (seq, diff.bid_window, diff.ask_window)
            if channel in subscribers:
                self._send(channel, messages.depth_update(diff, self._markets[diff.symbol]))

    def _message(self, channel: Channel, seq: int, payload: Payload) -> dict[str, Any]:
        """The message of one item, as its live delivery built it (for a resume)."""
        stream = channel[0]
        if stream is Stream.DEPTH:
            assert isinstance(payload, DepthDiff)
            return messages.depth_update(payload, self._markets[payload.symbol])
        if stream is Stream.ORDERS:
            assert isinstance(payload, ORDER_EVENTS)
            message = messages.order_update(
                payload, self._markets.get(payload.symbol) if payload.symbol else None)
        elif stream is Stream.TRADES:
            assert isinstance(payload, TradeExecuted)
            message = messages.trade_executed(
                payload, self._markets[payload.symbol], with_user_ids=self._public_ids)
        else:
            assert isinstance(payload, TopOfBookChanged)
            message = messages.orderbook_update(payload, self._markets[payload.symbol])
        message["seq"] = seq
        return message

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
        so the subscribers are exactly those the batch was built for.
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

    def _frames(self, payloads: list[bytes], bits: int) -> bytes:
        """Frames for one subscriber (replies, snapshots, a resume's backlog)."""
        if bits:
            return self._compress(payloads, bits)
        return b"".join(map(text_frame, payloads))

    # ------------------------------------------------- the registry (sync)

    def subscribe(
        self, subscriber: Subscriber, channel: Channel, request_id: Any,
        since: Since | None = None,
    ) -> None:
        """Register and queue ``subscribed`` and what must come before the live stream.

        Without ``since``: the snapshot (depth, top of book), taken at the
        channel's seq. With ``since``: every message after it, from history.
        Either way atomically, so the next live message continues the seq.

        Raises:
            ProtocolError: ``resume_unavailable``; nothing was registered.
        """
        stream, key = channel
        bits = subscriber.deflate_window_bits
        seq = self._history.seq(channel)
        reply: dict[str, Any] = {"type": "subscribed", "id": request_id, "stream": stream}
        if stream is not Stream.ORDERS:
            reply["symbol"] = key
        reply["epoch"] = self.epoch
        payloads: list[bytes] = []
        if since is not None:
            backlog = self._backlog(channel, since, request_id)
            reply["seq"] = since.seq
            reply["resumed"] = True
            payloads = [_encode(self._message(channel, s, item)) for s, item in backlog]
        else:
            reply["seq"] = seq
            if stream is Stream.DEPTH:
                assert key is not None
                _, bids, asks = self._windows[key]
                payloads = [_encode(messages.depth_snapshot(self._markets[key], seq, bids, asks))]
            elif stream is Stream.ORDERBOOK:
                assert key is not None
                payloads = [_encode(messages.orderbook_snapshot(
                    self._tops[key], self._markets[key], seq))]
        self._routing.add(subscriber, channel)
        ok = subscriber.offer(text_frame(_encode(reply))) and (
            not payloads or subscriber.offer(self._frames(payloads, bits), len(payloads)))
        if not ok:
            subscriber.close_soon(SLOW_CONSUMER, "slow consumer")

    def _backlog(
        self, channel: Channel, since: Since, request_id: Any
    ) -> list[tuple[int, Payload]]:
        if since.epoch != self.epoch:
            raise ProtocolError(
                ErrorCode.RESUME_UNAVAILABLE,
                f"epoch {since.epoch} is over (its history was lost, e.g. a new data "
                f"directory); the current epoch is {self.epoch}: subscribe again without since",
                request_id, "since")
        backlog = self._history.since(channel, since.seq)
        if backlog is None:
            raise ProtocolError(
                ErrorCode.RESUME_UNAVAILABLE,
                f"the messages after seq {since.seq} are no longer held (this channel is at "
                f"seq {self._history.seq(channel)}; the server keeps history.messages per "
                "channel for history.seconds): subscribe again without since",
                request_id, "since")
        return backlog

    def unsubscribe(self, subscriber: Subscriber, channel: Channel) -> None:
        self._routing.remove(subscriber, channel)

    def subscription_counts(self) -> dict[str, int]:
        return self._routing.counts()


Window = tuple[tuple[int, int], ...]


def _top_of(symbol: str, bids: Window, asks: Window) -> TopOfBookChanged:
    """The top of book a depth window shows (before the first change this process sees)."""
    return TopOfBookChanged(
        seq=0, ts=0, symbol=symbol,
        bid_price=bids[0][0] if bids else None, bid_quantity=bids[0][1] if bids else 0,
        ask_price=asks[0][0] if asks else None, ask_quantity=asks[0][1] if asks else 0)
