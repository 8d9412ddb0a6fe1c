"""One WebSocket connection, as a trio shell: its reader, writer and heartbeat tasks.

Rules of this module:

* Each connection runs in its own nursery with three tasks: the reader
  (control messages and order entry), the writer (drains the connection's
  bounded queue) and the heartbeat (pings, and the token's expiry: one timer,
  ``gateway/_heartbeat.py``). When any of them ends the connection, the
  nursery is cancelled and the connection leaves every channel in
  ``finally``: cancellation is the only way out.
* How and whether the connection closes is one state machine,
  :class:`gateway._closing.CloseState`: the first close requested wins, and
  nothing is delivered after it.
* The fan-out hands each connection pre-built frames through
  :meth:`Connection.offer`, which writes them straight to the socket or queues
  them (``gateway/_transport.py``) and never waits. When the queue is full the
  connection is closed with 4008 (slow consumer); nobody waits for it.
* Close codes (``gateway/_closing.py``): 1000 normal, 1001 server shutdown
  (after a ``shutdown`` message), 1002 protocol error, 1007 invalid data
  (UTF-8, compression), 1009 message too big, 4003 token expired, 4008 slow
  consumer, 4009 heartbeat timeout, 4029 message rate limit. A protocol error
  always gets its close frame before TCP closes (``CoalescingStream.finish``).
* A frame is never cut by the connection's cancellation (the close frame must
  follow whole frames), only by ``write_timeout``, or by :data:`SEND_GRACE`
  once a close was requested.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from gateway._admission import Subscription
from gateway._auth import Identity
from gateway._closing import (
    CLOSE_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    MESSAGE_TOO_BIG,
    OPEN,
    RATE_LIMITED,
    SEND_GRACE,
    SLOW_CONSUMER,
    TOKEN_EXPIRED,
    CloseState,
)
from gateway._config import LimitSettings, WebSocketSettings
from gateway._frames import PING, text_frame
from gateway._heartbeat import Beat, Heartbeat
from gateway._hub import Hub
from gateway._limits import OrderRate, TokenBucket
from gateway._order_entry import OrderEntry
from gateway._protocol import (
    ErrorCode,
    OrderRequest,
    Ping,
    ProtocolError,
    Request,
    Since,
    Stream,
    Subscribe,
    Subscriptions,
    Unsubscribe,
    channel_of,
    error_reply,
    parse_request,
    reply,
)
from gateway._runtime import Runtime
from gateway._stats import Stats
from gateway._transport import CoalescingStream

HARD_SIZE_FACTOR = 4
"""Past this multiple of max_message_size a message closes the connection with 1009;
between the two limits the client gets a ``message_too_large`` error and stays
connected. trio-websocket enforces the multiple in characters while a message
arrives; the reader enforces it in bytes (a character is up to 4 bytes)."""

_encode = msgspec.json.Encoder().encode


def message_frame(message: dict[str, Any]) -> bytes:
    return text_frame(_encode(message))


class Connection:
    """One client connection. It alone owns its transport queue and its subscriptions."""

    # Thousands of these live at once: slots instead of a __dict__ save ~1 KiB each.
    __slots__ = (
        "_bucket", "_close", "_hub", "_identity",
        "_max_refused", "_order_entry", "_order_rate", "_refused_in_a_row", "_room",
        "_runtime", "_scope", "_sending", "_settings", "_stats",
        "_symbols", "_transport", "_ws", "deflate_window_bits", "subscriptions", "user_id",
    )

    def __init__(
        self,
        ws: WebSocketConnection,
        identity: Identity | None,
        *,
        transport: CoalescingStream,
        deflate_window_bits: int = 0,
        hub: Hub,
        runtime: Runtime,
        order_rate: OrderRate,
        settings: WebSocketSettings,
        limits: LimitSettings,
        stats: Stats,
        symbols: Collection[str],
    ) -> None:
        self._ws = ws
        self._runtime = runtime
        self._order_rate = order_rate
        self._order_entry: OrderEntry | None = None  # made on the first order request
        self._room: trio.Event | None = None  # the reader waits on it while order entry is full
        self._transport = transport
        self.deflate_window_bits = deflate_window_bits
        """permessage-deflate's server window agreed with this client; 0: not compressed."""
        self._identity = identity
        self.user_id = None if identity is None else identity.user_id
        self._bucket = TokenBucket(limits.messages_per_second, limits.message_burst,
                                   trio.current_time())
        self._refused_in_a_row = 0
        self._max_refused = limits.message_burst
        self._hub = hub
        self._settings = settings
        self._stats = stats
        self._symbols = symbols
        self.subscriptions = Subscriptions(settings.max_subscriptions)
        self._scope = trio.CancelScope()
        self._close = CloseState()
        self._sending: trio.CancelScope | None = None  # the writer's flush in progress, if any

    # ---------------------------------------------- called by other tasks

    def offer(self, frames: bytes, count: int = 1) -> bool:
        """Send or queue ``count`` pre-built frames without blocking; False when full."""
        if self._close.phase is not OPEN:
            return True  # on its way out: nothing more is delivered
        return self._transport.write_nowait(frames, count)

    def close_soon(self, code: int, reason: str, farewell: bytes | None = None) -> None:
        if not self._close.request(code, reason, farewell):
            return
        if self._sending is not None:
            self._sending.deadline = min(self._sending.deadline,
                                         trio.current_time() + SEND_GRACE)
        if code == SLOW_CONSUMER:
            self._stats.slow_consumer_disconnects += 1
            self._transport.discard_pending()  # it will never read them
        elif code == RATE_LIMITED:
            self._stats.rate_limit_disconnects += 1
        elif code == TOKEN_EXPIRED:
            self._stats.token_expirations += 1
        elif code == HEARTBEAT_TIMEOUT:
            self._stats.heartbeat_timeouts += 1
        self._scope.cancel()

    # --------------------------------------------------------- lifetime

    async def run(self, auto_subscribe: list[Subscription]) -> None:
        """Serve the client until it leaves, misbehaves, or the server shuts down."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    # Constant names: a generated one costs ~250 bytes per task.
                    nursery.start_soon(self._reader, name="ws-reader")
                    nursery.start_soon(self._writer, name="ws-writer")
                    nursery.start_soon(self._heartbeat, name="ws-heartbeat")
                    for stream, symbol in auto_subscribe:
                        self._subscribe(stream, symbol, None)
        finally:
            for channel in self.subscriptions:
                self._hub.unsubscribe(self, channel)
            await self._goodbye()

    async def _goodbye(self) -> None:
        """Say goodbye with the close code, then close TCP; nothing after a torn frame.

        When the client broke the protocol, trio-websocket recorded the close code
        wsproto asked for (1002, 1007, 1009) without sending it: the transport's
        ``finish`` sends it (see ``gateway/_transport.py``).
        """
        code, reason, farewell = self._close.goodbye()
        transport = self._transport
        try:
            with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                scope.shield = True
                if not transport.torn:  # a close frame would land inside the torn frame
                    try:
                        if farewell is not None:
                            await transport.send_all(farewell)
                        await self._ws.aclose(code, reason)  # flushes what is queued first
                    except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                closed = self._ws.closed
                if closed is None:
                    await transport.finish()
                else:
                    await transport.finish(closed.code, closed.reason or "")
            await transport.abort()  # when the close timed out
        finally:
            self._close.closed()

    async def _reader(self) -> None:
        limit = self._settings.max_message_size
        while True:
            try:
                message = await self._ws.get_message()
            except ConnectionClosed:
                self._scope.cancel()
                return
            now = trio.current_time()
            size = len(message) if isinstance(message, bytes) else len(message.encode())
            if size > limit * HARD_SIZE_FACTOR:
                self.close_soon(MESSAGE_TOO_BIG, "message too big")
                return
            request: Request | ProtocolError | None = None
            if size <= limit:
                try:
                    request = parse_request(message, symbols=self._symbols)
                except ProtocolError as error:
                    request = error
            if isinstance(request, OrderRequest):
                # Order entry has its own budget, per user (OrderRate), not the
                # per-connection message rate of control messages.
                await self._enter_order(request, now)
                continue
            if not self._bucket.take(now):
                self._stats.messages_rate_limited += 1
                self._refused_in_a_row += 1
                if self._refused_in_a_row > self._max_refused:
                    self.close_soon(RATE_LIMITED, "message rate limit exceeded")
                    return
                self._refuse(ProtocolError(ErrorCode.RATE_LIMITED, "too many messages; slow down"))
                continue
            self._refused_in_a_row = 0
            if request is None:
                self._refuse(ProtocolError(
                    ErrorCode.MESSAGE_TOO_LARGE, f"messages are limited to {limit} bytes"))
                continue
            self._handle(request)

    async def _enter_order(self, request: OrderRequest, now: float) -> None:
        """Hand an order request to order entry; wait while its replies are all pending."""
        entry = self._order_entry
        if entry is None:
            entry = self._order_entry = OrderEntry(
                user_id=self.user_id, runtime=self._runtime, rate=self._order_rate,
                stats=self._stats, send=self._send_reply, room=self._wake_reader,
                max_in_flight=self._settings.max_orders_in_flight,
            )
        entry.handle(request, now)
        while entry.full:
            self._room = trio.Event()
            await self._room.wait()

    def _send_reply(self, frame: bytes) -> None:
        if not self.offer(frame):
            self.close_soon(SLOW_CONSUMER, "slow consumer")

    def _wake_reader(self) -> None:
        if self._room is not None:
            self._room.set()

    def _handle(self, request: Request | ProtocolError) -> None:
        try:
            if isinstance(request, ProtocolError):
                raise request
            if isinstance(request, Ping):
                self.offer(message_frame(reply("pong", request.request_id)))
            elif isinstance(request, Subscribe):
                self._subscribe(request.stream, request.symbol, request.request_id,
                                request.since)
            elif isinstance(request, Unsubscribe):
                channel = channel_of(request.stream, request.symbol, self.user_id,
                                     request.request_id)
                self.subscriptions.remove(channel, request.request_id)
                self._hub.unsubscribe(self, channel)
                answer = reply("unsubscribed", request.request_id, stream=str(request.stream))
                if request.stream is not Stream.ORDERS:
                    answer["symbol"] = request.symbol
                self.offer(message_frame(answer))
        except ProtocolError as error:
            self._refuse(error)

    def _subscribe(
        self, stream: Stream, symbol: str | None, request_id: Any, since: Since | None = None
    ) -> None:
        channel = channel_of(stream, symbol, self.user_id, request_id)
        self.subscriptions.add(channel, request_id)
        try:
            self._hub.subscribe(self, channel, request_id, since)
        except ProtocolError:  # resume_unavailable: the subscription was not made
            self.subscriptions.remove(channel)
            raise

    def _refuse(self, error: ProtocolError) -> None:
        self._stats.protocol_errors += 1
        self.offer(message_frame(error_reply(error)))

    async def _writer(self) -> None:
        """Send whatever the socket did not take at once, coalesced into one write."""
        transport = self._transport
        timeout = self._settings.write_timeout
        while True:
            await transport.wait_pending()
            # A frame is never cut by the connection's cancellation (the close
            # frame must follow whole frames), only by write_timeout.
            with trio.CancelScope(shield=True), trio.move_on_after(timeout) as scope:
                self._sending = scope
                try:
                    await transport.flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._scope.cancel()
                    return
                finally:
                    self._sending = None
            if scope.cancelled_caught:
                self.close_soon(SLOW_CONSUMER, "write timeout")
                return
            if self._close.phase is not OPEN:
                return

    async def _heartbeat(self) -> None:
        """Wake at each deadline of the connection's :class:`Heartbeat` and do what is due.

        Pings are pre-built frames written like any message, and the evidence of
        life is any bytes from the client, as the transport records them
        (``last_received``): no task waits for a particular pong.
        """
        settings, transport = self._settings, self._transport
        now = trio.current_time()
        expires_at = math.inf
        if self._identity is not None:  # the token's wall-clock expiry, on trio's clock
            expires_at = now + max(0.0, self._identity.expires_at - time.time())
        heartbeat = Heartbeat(
            now, ping_interval=settings.ping_interval, pong_timeout=settings.pong_timeout,
            read_timeout=settings.read_timeout, expires_at=expires_at)
        while True:
            await trio.sleep_until(heartbeat.deadline)
            beat = heartbeat.due(trio.current_time(), transport.last_received,
                                 transport.backlogged)
            if beat is Beat.WAIT:
                continue
            if beat is Beat.PING:
                if self.offer(PING):
                    continue
                self.close_soon(SLOW_CONSUMER, "slow consumer")
            else:
                self.close_soon(beat.close_code, beat.value)
            return
