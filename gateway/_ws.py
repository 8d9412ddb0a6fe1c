"""The real-time WebSocket listener (trio-websocket) and its connections.

Rules of this module:

* Each connection runs in its own nursery with three tasks: the reader
  (control messages), the writer (drains the connection's bounded queue) and
  the heartbeat (ping, then close when no pong comes back in time). When any
  of them ends the connection, the nursery is cancelled and the connection
  leaves every channel in ``finally``: cancellation is the only way out.
* The fan-out hands each connection pre-built frames through
  :meth:`Connection.offer`, which writes them straight to the socket or queues
  them (``gateway/_transport.py``) and never waits. When the queue is full the
  connection is closed with 4008 (slow consumer); nobody waits for it.
* Close codes: 1000 normal, 1001 server shutdown (after a ``shutdown``
  message), 1002 protocol error, 1007 invalid data (UTF-8, compression), 1009
  message too big, 4003 token expired, 4008 slow consumer, 4009 heartbeat
  timeout, 4029 message rate limit. A protocol error always gets its close
  frame before TCP closes (``CoalescingStream.finish``).
* permessage-deflate (``gateway/_deflate.py``) is agreed before ``accept``:
  the answer goes out as a response header (trio-websocket's public
  ``extra_headers``), the transport inflates what the client compresses, and
  the hub picks each subscriber's frame by ``deflate_window_bits``. wsproto is
  never told: trio-websocket's ``accept`` passes it no extension.
* Before accepting, the handshake checks, in order: the ``Origin`` list, the
  new-connection rate and the connection count of the client's IP, the token,
  the endpoint, and the connection count of the token's user.
* Nothing a client sends can escape the handler: an exception there would
  stop trio-websocket's server for everyone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from gateway._auth import AuthError, Identity, TokenVerifier
from gateway._config import LimitSettings, WebSocketSettings
from gateway._deflate import HEADER as EXTENSIONS_HEADER
from gateway._deflate import Inflater, negotiate
from gateway._frames import PING, text_frame
from gateway._hub import SLOW_CONSUMER, Hub
from gateway._limits import Counts, KeyedBuckets, OrderRate, TokenBucket
from gateway._listener import Listener
from gateway._order_entry import OrderEntry
from gateway._protocol import (
    ErrorCode,
    OrderRequest,
    Ping,
    ProtocolError,
    Request,
    Stream,
    Subscribe,
    Subscriptions,
    Unsubscribe,
    channel_of,
    error_reply,
    parse_request,
    reply,
)
from gateway._runtime import EngineRuntime
from gateway._schema import normalize_symbol
from gateway._stats import Stats
from gateway._transport import CoalescingStream

log = logging.getLogger("trade_engine.gateway")

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
MESSAGE_TOO_BIG = 1009
TOKEN_EXPIRED = 4003
HEARTBEAT_TIMEOUT = 4009
RATE_LIMITED = 4029
# Past this multiple of max_message_size a message closes the connection with 1009;
# between the two limits the client gets a ``message_too_large`` error and stays
# connected. trio-websocket enforces the multiple in characters while a message
# arrives; the reader enforces it in bytes (a character is up to 4 bytes).
_HARD_SIZE_FACTOR = 4
_CLOSE_TIMEOUT = 2.0
# When a connection is told to close, a write in progress gets this long to finish
# its frames; after that a frame is torn and the TCP connection is aborted.
_SEND_GRACE = 0.5

_encode = msgspec.json.Encoder().encode


def _frame(message: dict[str, Any]) -> bytes:
    return text_frame(_encode(message))


class Connection:
    """One client connection. It alone owns its transport queue and its subscriptions."""

    # Thousands of these live at once: slots instead of a __dict__ save ~1 KiB each.
    __slots__ = (
        "_bucket", "_closing", "_farewell", "_hub", "_identity",
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
        runtime: EngineRuntime,
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
        self._closing: tuple[int, str] | None = None
        self._farewell: bytes | None = None
        self._sending: trio.CancelScope | None = None  # the writer's flush in progress, if any

    # ---------------------------------------------- called by other tasks

    def offer(self, frames: bytes, count: int = 1) -> bool:
        """Send or queue ``count`` pre-built frames without blocking; False when full."""
        if self._closing is not None:
            return True  # on its way out: nothing more is delivered
        return self._transport.write_nowait(frames, count)

    def close_soon(self, code: int, reason: str, farewell: bytes | None = None) -> None:
        if self._closing is not None:
            return
        self._closing = (code, reason)
        self._farewell = farewell
        if self._sending is not None:
            self._sending.deadline = min(self._sending.deadline,
                                         trio.current_time() + _SEND_GRACE)
        if code == SLOW_CONSUMER:
            self._stats.slow_consumer_disconnects += 1
            self._transport.discard_pending()  # it will never read them
        elif code == RATE_LIMITED:
            self._stats.rate_limit_disconnects += 1
        elif code == TOKEN_EXPIRED:
            self._stats.token_expirations += 1
        self._scope.cancel()

    # --------------------------------------------------------- lifetime

    async def run(self, auto_subscribe: list[tuple[Stream, str | None]]) -> None:
        """Serve the client until it leaves, misbehaves, or the server shuts down."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    # Constant names: a generated one costs ~250 bytes per task.
                    nursery.start_soon(self._reader, name="ws-reader")
                    nursery.start_soon(self._writer, name="ws-writer")
                    nursery.start_soon(self._heartbeat, name="ws-heartbeat")
                    if self._identity is not None:
                        nursery.start_soon(self._expire, self._identity.expires_at,
                                           name="ws-token-expiry")
                    for stream, symbol in auto_subscribe:
                        self._subscribe(stream, symbol, None)
        finally:
            for channel in self.subscriptions:
                self._hub.unsubscribe(self, channel)
            await self._close()

    async def _close(self) -> None:
        """Say goodbye with the close code, then close TCP; nothing after a torn frame.

        When the client broke the protocol, trio-websocket recorded the close code
        wsproto asked for (1002, 1007, 1009) without sending it: the transport's
        ``finish`` sends it (see ``gateway/_transport.py``).
        """
        code, reason = self._closing or (NORMAL_CLOSURE, "")
        transport = self._transport
        with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
            scope.shield = True
            if not transport.torn:  # a close frame would land inside the torn frame
                try:
                    if self._farewell is not None:
                        await transport.send_all(self._farewell)
                    await self._ws.aclose(code, reason)  # flushes what is queued first
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            closed = self._ws.closed
            if closed is None:
                await transport.finish()
            else:
                await transport.finish(closed.code, closed.reason or "")
        await transport.abort()  # when the close timed out

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
            if size > limit * _HARD_SIZE_FACTOR:
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
                self.offer(_frame(reply("pong", request.request_id)))
            elif isinstance(request, Subscribe):
                self._subscribe(request.stream, request.symbol, request.request_id)
            elif isinstance(request, Unsubscribe):
                channel = channel_of(request.stream, request.symbol, self.user_id,
                                     request.request_id)
                self.subscriptions.remove(channel, request.request_id)
                self._hub.unsubscribe(self, channel)
                answer = reply("unsubscribed", request.request_id, stream=str(request.stream))
                if request.stream is not Stream.ORDERS:
                    answer["symbol"] = request.symbol
                self.offer(_frame(answer))
        except ProtocolError as error:
            self._refuse(error)

    def _subscribe(self, stream: Stream, symbol: str | None, request_id: Any) -> None:
        channel = channel_of(stream, symbol, self.user_id, request_id)
        self.subscriptions.add(channel, request_id)
        self._hub.subscribe(self, channel, request_id)

    def _refuse(self, error: ProtocolError) -> None:
        self._stats.protocol_errors += 1
        self.offer(_frame(error_reply(error)))

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
            if self._closing is not None:
                return

    async def _expire(self, expires_at: float) -> None:
        """Close the connection when its token expires: it may hold a private stream."""
        await trio.sleep(max(0.0, expires_at - time.time()))
        self.close_soon(TOKEN_EXPIRED, "token expired")

    async def _heartbeat(self) -> None:
        """Ping every ``ping_interval``; close when nothing comes back in time.

        Pings are pre-built frames written like any message, and the evidence of
        life is any bytes from the client since the ping (its pong, usually), as
        the transport records them: no task waits for a particular pong, which
        keeps a heartbeat to thousands of idle clients cheap.
        """
        settings, transport = self._settings, self._transport
        next_ping = trio.current_time() + settings.ping_interval
        pinged_at = pong_due = math.inf
        while True:
            await trio.sleep_until(min(next_ping, pong_due))
            now = trio.current_time()
            heard = transport.last_received
            if now >= pong_due:
                if heard < pinged_at:
                    self._no_pong()
                    return
                pong_due = math.inf
            if now < next_ping:
                continue
            if now - heard > settings.read_timeout:
                self._heartbeat_failed("read timeout")
                return
            if not self.offer(PING):
                self.close_soon(SLOW_CONSUMER, "slow consumer")
                return
            elif pong_due == math.inf:  # an earlier ping still waiting keeps its deadline
                pinged_at, pong_due = now, now + settings.pong_timeout
            next_ping = now + settings.ping_interval

    def _no_pong(self) -> None:
        """Close a client whose pong is late: slow if our bytes are stuck, else dead."""
        if self._transport.backlogged():  # the ping waits behind what it does not read
            self.close_soon(SLOW_CONSUMER, "slow consumer: not reading")
        else:
            self._heartbeat_failed("no pong")

    def _heartbeat_failed(self, reason: str) -> None:
        self._stats.heartbeat_timeouts += 1
        self.close_soon(HEARTBEAT_TIMEOUT, reason)


@attrs.frozen
class _Refusal:
    status: int
    code: str
    message: str
    retry_after: float | None = None


class WebSocketGateway:
    """Routes upgrade requests to connections and keeps the set of live ones.

    Endpoints: ``/ws`` (subscribe by message), ``/ws/orders`` (your orders; a
    token is required), ``/ws/trades[?symbol=]`` and ``/ws/markets/{symbol}``
    (top of book; ``BTC/USDT``, ``BTC-USDT`` or ``BTC%2FUSDT``). A token, when
    given, goes in ``?token=``.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        runtime: EngineRuntime,
        order_rate: OrderRate,
        settings: WebSocketSettings,
        limits: LimitSettings,
        verifier: TokenVerifier,
        stats: Stats,
        symbols: Collection[str],
    ) -> None:
        self._hub = hub
        self._runtime = runtime
        self._order_rate = order_rate
        self._settings = settings
        self._limits = limits
        self._origins = frozenset(limits.allowed_origins)
        self._new_connections = KeyedBuckets(
            limits.connections_per_second_per_ip, limits.connection_burst_per_ip)
        self._per_ip = Counts()
        self._per_user = Counts()
        self._verifier = verifier
        self._stats = stats
        self._symbols = frozenset(symbols)
        self._connections: set[Connection] = set()
        self._accepting = True
        self._drained = trio.Event()  # set once shut down and every connection has closed

    async def serve(
        self, host: str, port: int, *, rest_port: int | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; ``task_status.started`` gets the bound port.

        ``rest_port`` is named to plain HTTP requests that reach this port.
        """
        listener = Listener(
            self._handle, max_pending=self._settings.send_queue_size,
            max_message_size=self._settings.max_message_size * _HARD_SIZE_FACTOR,
            handshake_timeout=self._settings.handshake_timeout, rest_port=rest_port,
        )
        await listener.serve(host, port, task_status=task_status)

    def shutdown(self) -> None:
        """Refuse new connections; close open ones with 1001 after a ``shutdown`` message."""
        self._accepting = False
        farewell = _frame({"type": "shutdown", "reason": "server shutting down"})
        for connection in list(self._connections):
            connection.close_soon(GOING_AWAY, "server shutting down", farewell)
        self._check_drained()

    async def wait_drained(self) -> None:
        """Return once :meth:`shutdown` was called and the last connection has closed."""
        await self._drained.wait()

    def _check_drained(self) -> None:
        if not self._accepting and not self._connections:
            self._drained.set()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _route(
        self, target: str
    ) -> tuple[list[tuple[Stream, str | None]], Identity | None] | _Refusal:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        path = unquote(parts.path).rstrip("/")
        identity = None
        tokens = query.get("token")
        if tokens:
            try:
                identity = self._verifier.verify(tokens[0])
            except AuthError as exc:
                return _Refusal(401, "unauthorized", str(exc))
        if path == "/ws":
            return [], identity
        if path == "/ws/orders":
            if identity is None:
                return _Refusal(401, "unauthorized", "a token is required: /ws/orders?token=...")
            return [(Stream.ORDERS, None)], identity
        if path == "/ws/trades":
            symbol = query.get("symbol", [None])[0]
            if symbol is not None:
                symbol = normalize_symbol(symbol)
                if symbol not in self._symbols:
                    return _Refusal(404, "unknown_symbol", f"unknown symbol {symbol}")
            return [(Stream.TRADES, symbol)], identity
        if path.startswith("/ws/markets/"):
            symbol = normalize_symbol(path.removeprefix("/ws/markets/"))
            if symbol not in self._symbols:
                return _Refusal(404, "unknown_symbol", f"unknown symbol {symbol}")
            return [(Stream.ORDERBOOK, symbol)], identity
        return _Refusal(404, "not_found", f"no WebSocket endpoint at {parts.path}")

    async def _handle(self, request: WebSocketRequest, transport: CoalescingStream,
                      headers: list[tuple[bytes, bytes]]) -> None:
        try:
            await self._handle_request(request, transport, headers)
        except ConnectionClosed:
            pass
        except Exception:  # one client must never stop the listener for everyone
            log.exception("WebSocket handler failed")

    def _admit(self, request: WebSocketRequest, ip: str) -> _Refusal | None:
        """The per-IP checks made before the request is even routed."""
        if not self._accepting:
            return _Refusal(503, "shutting_down", "the server is shutting down")
        if self._origins:
            origin = dict(request.headers).get(b"origin", b"").decode("latin-1")
            if origin not in self._origins:
                return _Refusal(403, "origin_not_allowed", f"origin {origin!r} is not allowed")
        now = trio.current_time()
        if not self._new_connections.take(ip, now):
            return _Refusal(429, "rate_limited", "too many new connections; slow down",
                            self._new_connections.retry_after(ip, now))
        if self._per_ip.get(ip) >= self._limits.max_connections_per_ip:
            return _Refusal(429, "too_many_connections", "too many connections from this address")
        return None

    async def _handle_request(self, request: WebSocketRequest, transport: CoalescingStream,
                              headers: list[tuple[bytes, bytes]]) -> None:
        ip = transport.peer_ip
        route = self._admit(request, ip) or self._route(request.path)
        if isinstance(route, tuple) and route[1] is not None and (
            self._per_user.get(route[1].user_id) >= self._limits.max_connections_per_user
        ):
            route = _Refusal(429, "too_many_connections", "too many connections for this user")
        if isinstance(route, _Refusal):
            self._stats.handshakes_rejected += 1
            self._stats.connections_refused[route.code] += 1
            headers = [(b"content-type", b"application/json")]
            if route.retry_after is not None:
                headers.append((b"retry-after", str(max(1, round(route.retry_after))).encode()))
            body = _encode({"error": {"code": route.code, "message": route.message}})
            await request.reject(route.status, extra_headers=headers, body=body)
            return
        auto_subscribe, identity = route
        user = None if identity is None else identity.user_id
        # Counted before the handshake completes, so a burst cannot slip past the limits.
        self._per_ip.add(ip)
        if user is not None:
            self._per_user.add(user)
        try:
            deflate = negotiate(headers) if self._settings.compression else None
            extensions = [] if deflate is None else [(EXTENSIONS_HEADER, deflate.response)]
            if deflate is not None:  # before the 101: the client may compress right after it
                transport.inflate_with(
                    Inflater(self._settings.max_message_size * _HARD_SIZE_FACTOR))
            ws = await request.accept(extra_headers=extensions)
            connection = Connection(
                ws, identity, transport=transport,
                deflate_window_bits=0 if deflate is None else deflate.window_bits,
                hub=self._hub, runtime=self._runtime, order_rate=self._order_rate,
                settings=self._settings, limits=self._limits, stats=self._stats,
                symbols=self._symbols,
            )
            self._connections.add(connection)
            self._stats.connections += 1
            self._stats.connections_total += 1
            try:
                await connection.run(auto_subscribe)
            finally:
                self._connections.discard(connection)
                self._stats.connections -= 1
                self._check_drained()
        finally:
            self._per_ip.remove(ip)
            if user is not None:
                self._per_user.remove(user)
