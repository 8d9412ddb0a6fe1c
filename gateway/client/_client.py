"""The trio shell: :func:`connect`, and the :class:`Client` it yields.

Rules of this module:

* Every decision is the :class:`~gateway.client._session.Session`'s (pure);
  this shell only moves bytes and wakes tasks: it feeds the session what
  arrives and carries out its outputs.
* Tasks: ``connect()`` opens a nursery that runs one manager task for the
  client's life. The manager owns the current connection: a reader task and
  a heartbeat task in a nursery of their own, then backoff and a new
  connection when it is lost. Application tasks only send (under the
  connection's lock) and wait on their own events.
* Order of requests: the session's outputs are appended to one outbox, in
  the order the session made them, and whoever sends next sends the whole
  outbox; two tasks can never put one channel's unsubscribe and subscribe
  out of order. The outbox is emptied when a connection is lost: the session
  decides afresh what the next connection must send.
* Bounded: the outbox holds what the tasks in flight produced; order requests
  wait for a slot of ``max_in_flight`` (released by the reply, not by a caller
  who stopped waiting); subscription buffers: see ``_subscription.py``.
* Failure: when the client gives up (a final close code, a refused
  reconnect, ``Reconnect.max_attempts``), the manager raises the
  :class:`ConnectionLost` (or :class:`HandshakeRejected`), every iterator and
  waiter gets it too, and ``connect()`` raises it alone, never in a group.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import trio

from gateway.client import _session
from gateway.client._errors import (
    ClientError,
    ConnectFailed,
    ConnectionLost,
    HandshakeRejected,
    NotConnected,
)
from gateway.client._messages import (
    AllCancelled,
    MalformedMessage,
    Order,
    Subscribed,
    decode,
    encode,
)
from gateway.client._policy import Backoff, Reconnect, close_is_final, handshake_is_final
from gateway.client._requests import AmountLike, amend_fields, place_fields, target_fields
from gateway.client._session import Key, Session
from gateway.client._subscription import Book, Subscription
from gateway.client._ws import WebSocket, open_websocket, split_url

log = logging.getLogger("trade_engine.client")
_TOKEN = "token="


def endpoint_url(url: str, token: str | None, *, mask: bool = False) -> str:
    """The ``/ws`` endpoint of the server at ``url`` (``ws://HOST:PORT``, or with ``/ws``).

    With ``mask``, the token shows as ``***`` (for messages and logs).
    """
    split_url(url)  # raises ValueError with the fix for a non-WebSocket URL
    parts = urlsplit(url)
    path = parts.path.rstrip("/").removesuffix("/ws") + "/ws"
    shown = None if token is None else "***" if mask else quote(token, safe="")
    query = "&".join(q for q in (parts.query, shown and _TOKEN + shown) if q)
    return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{query}" if query else "")


def normalize_symbol(symbol: str | None) -> str | None:
    """``BTC-USDT`` and ``btc/usdt`` are ``BTC/USDT``, as the server reads them."""
    return None if symbol is None else symbol.replace("-", "/").upper()


@attrs.frozen(kw_only=True)
class _Options:
    reconnect: Reconnect
    heartbeat_interval: float
    heartbeat_timeout: float
    connect_timeout: float
    compression: bool
    ssl_context: ssl.SSLContext | None
    buffer_size: int
    max_in_flight: int


class _Waiter:
    __slots__ = ("event", "result", "slot")

    def __init__(self, slot: bool = False) -> None:
        self.event = trio.Event()
        self.result: Any = None
        self.slot = slot


class Client:
    """A connection to a trade-engine server; made by :func:`connect`."""

    def __init__(self, url: str, token: str | None, options: _Options) -> None:
        self.url = endpoint_url(url, token)
        self.shown_url = endpoint_url(url, token, mask=True)
        self._options = options
        self._session = Session(self._has_room)
        self._subs: dict[Key, Subscription] = {}
        self._waiters: dict[int, _Waiter] = {}
        self._outbox: list[dict[str, Any]] = []
        self._ws: WebSocket | None = None
        self._connected = trio.Event()
        self._slots = trio.Semaphore(options.max_in_flight)
        self._failure: ClientError | None = None
        self.reconnects = 0
        """How many times the client connected again after losing a connection."""

    # ----------------------------------------------------------- the link

    @property
    def connected(self) -> bool:
        return self._session.connected

    async def wait_connected(self) -> None:
        """Return once the client is connected (at once if it is).

        Raises:
            ClientError: the client gave up reconnecting.
        """
        while not self._session.connected:
            if self._failure is not None:
                raise self._failure
            await self._connected.wait()

    async def _open(self) -> WebSocket:
        o = self._options
        return await open_websocket(self.url, shown_url=self.shown_url,
                                    connect_timeout=o.connect_timeout,
                                    compression=o.compression, ssl_context=o.ssl_context)

    async def _manage(self, ws: WebSocket) -> None:
        """The client's life: serve a connection, reconnect when it is lost, or give up."""
        backoff = Backoff(self._options.reconnect, random.uniform)
        try:
            while True:
                lost = await self._serve(ws)
                self._apply(self._session.connection_lost(str(lost)))
                self._outbox.clear()
                self._ws, self._connected = None, trio.Event()
                if close_is_final(lost.code):
                    log.error("%s; not reconnecting", lost)
                    raise lost
                log.warning("%s: %s; reconnecting", self.shown_url, lost)
                ws = await self._reconnect(backoff, lost)
                self.reconnects += 1
        except ClientError as exc:
            self._give_up(exc)
            raise

    async def _reconnect(self, backoff: Backoff, lost: ClientError) -> WebSocket:
        while True:
            delay = backoff.next_delay()
            if delay is None:
                raise ConnectionLost(f"{lost}; gave up after {backoff.attempts} reconnect "
                                     "attempts", getattr(lost, "code", None))
            await trio.sleep(delay)
            try:
                ws = await self._open()
            except HandshakeRejected as exc:
                if handshake_is_final(exc.status):
                    log.error("%s; not reconnecting", exc)
                    raise
                if exc.retry_after:
                    await trio.sleep(min(exc.retry_after, self._options.reconnect.max_delay))
                lost = exc
            except ConnectFailed as exc:
                lost = exc
            else:
                backoff.reset()
                return ws
            log.info("reconnect attempt %d failed: %s", backoff.attempts, lost)

    async def _serve(self, ws: WebSocket) -> ConnectionLost:
        """Run one connection until it is lost; why it was."""
        o = self._options
        lost: list[ConnectionLost] = []
        self._ws = ws
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                try:
                    while True:
                        text = await ws.receive()
                        try:
                            message = decode(text)
                        except MalformedMessage as exc:
                            log.warning("ignoring a malformed message: %s", exc)
                            continue
                        self._apply(self._session.receive(message))
                        await self._flush()
                except ConnectionLost as exc:
                    lost.append(exc)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(ws.keep_alive, o.heartbeat_interval, o.heartbeat_timeout)
            self._apply(self._session.connection_made())
            self._connected.set()
            with suppress(ConnectionLost):
                await self._flush()
            nursery.start_soon(reader)
        if not lost:  # pragma: no cover - the nursery is only cancelled with a reason
            lost.append(ConnectionLost("the connection ended"))
        return lost[0]

    def _give_up(self, error: ClientError) -> None:
        self._failure = error
        self._connected.set()  # wake wait_connected(), which raises
        for waiter in self._waiters.values():
            waiter.result = error
            waiter.event.set()
        for sub in self._subs.values():
            sub._end(error)

    # ------------------------------------------- the session's outputs

    def _has_room(self, key: Key) -> bool:
        sub = self._subs.get(key)
        return sub is None or sub._has_room()

    def _apply(self, outputs: list[_session.Output]) -> None:
        for output in outputs:
            if isinstance(output, _session.Send):
                self._outbox.append(output.request)
            elif isinstance(output, _session.Deliver):
                sub = self._subs.get(output.key)
                if sub is not None:
                    sub._deliver(output.item)
            elif isinstance(output, _session.Resolve):
                waiter = self._waiters.pop(output.request_id, None)
                if waiter is not None:
                    if waiter.slot:
                        self._slots.release()
                    waiter.result = output.result
                    waiter.event.set()
            else:
                sub = self._subs.pop(output.key, None)
                if sub is not None:
                    sub._end(output.error)

    async def _flush(self) -> None:
        """Send the outbox, in order.

        Raises:
            ConnectionLost: the connection broke (the manager handles the rest).
        """
        ws = self._ws
        while self._outbox and ws is not None:
            request = self._outbox.pop(0)
            await ws.send(encode(request))

    async def _request(self, outputs: list[_session.Output], request_id: int,
                       waiter: _Waiter) -> Any:
        self._waiters[request_id] = waiter
        self._apply(outputs)
        with suppress(ConnectionLost):  # the session resolves it when the manager sees it
            await self._flush()
        try:
            await waiter.event.wait()
        except trio.Cancelled:
            if not waiter.slot:
                self._waiters.pop(request_id, None)
                self._session.forget(request_id)
            raise
        if isinstance(waiter.result, ClientError):
            raise waiter.result
        return waiter.result

    # ------------------------------------------------------ subscriptions

    @asynccontextmanager
    async def subscribe(self, stream: str, symbol: str | None = None, *,
                        buffer_size: int | None = None) -> AsyncIterator[Subscription]:
        """Subscribe to ``stream`` (``orders``, ``trades``, ``orderbook``, ``depth``).

        ``async with client.subscribe("trades", "BTC/USDT") as trades:`` then
        ``async for message in trades``. Leaving the block unsubscribes.

        Args:
            buffer_size: messages kept for a slow reader before the subscription
                pauses (default: ``connect(buffer_size=...)``, 1024).

        Raises:
            SubscriptionError: the server refused (``unknown_symbol``, ``unauthorized``...).
            ValueError: a stream or symbol that cannot be subscribed here (says why).
        """
        size = self._options.buffer_size if buffer_size is None else buffer_size
        if size < 1:
            raise ValueError("buffer_size must be 1 or more")
        sub = await self._subscribe(stream, normalize_symbol(symbol), size)
        try:
            yield sub
        finally:
            await self._unsubscribe(sub)

    @asynccontextmanager
    async def book(self, symbol: str) -> AsyncIterator[Book]:
        """Keep the local order book of ``symbol`` (a ``depth`` subscription) while open.

        The book is synced when this returns (the snapshot has arrived).
        """
        sub = await self._subscribe("depth", normalize_symbol(symbol), None)
        assert sub.book is not None
        try:
            if not sub.book.synced:
                await sub.book.wait_changed(-1)
            yield sub.book
        finally:
            await self._unsubscribe(sub)

    async def _subscribe(self, stream: str, symbol: str | None,
                         buffer_size: int | None) -> Subscription:
        if self._failure is not None:
            raise self._failure
        key, waiter_id, outputs = self._session.subscribe(stream, symbol)
        order_book = self._session.book(key)
        sub = Subscription(
            stream, symbol, buffer_size,
            paused=lambda: self._session.status(key) is _session.Status.PAUSED,
            resume=lambda: self._resume(key),
            book=None if order_book is None else Book(order_book))
        self._subs[key] = sub
        try:
            reply = await self._request(outputs, waiter_id, _Waiter())
        except BaseException:
            self._subs.pop(key, None)
            with trio.CancelScope(shield=True):
                await self._drop(key)
            raise
        assert isinstance(reply, Subscribed)
        return sub

    async def _resume(self, key: Key) -> None:
        self._apply(self._session.resume(key))
        with suppress(ConnectionLost):
            await self._flush()

    async def _unsubscribe(self, sub: Subscription) -> None:
        key = (sub.stream, sub.symbol)
        if self._subs.get(key) is not sub:
            return
        del self._subs[key]
        sub._end()
        with trio.CancelScope(shield=True):
            await self._drop(key)

    async def _drop(self, key: Key) -> None:
        """Unsubscribe without waiting for the reply (the session drops what follows)."""
        request_id, outputs = self._session.unsubscribe(key)
        if request_id is not None:
            self._session.forget(request_id)
        self._apply(outputs)
        with trio.move_on_after(self._options.connect_timeout):
            with suppress(ConnectionLost):
                await self._flush()

    # -------------------------------------------------------- order entry

    async def _order(self, action: str, fields: dict[str, Any]) -> Any:
        if self._failure is not None:
            raise self._failure
        await self._slots.acquire()
        try:
            request_id, outputs = self._session.order(action, fields)
        except NotConnected:
            self._slots.release()
            raise
        return await self._request(outputs, request_id, _Waiter(slot=True))

    async def place(
        self, symbol: str, side: str, quantity: AmountLike, price: AmountLike | None = None,
        *, order_type: str | None = None, time_in_force: str | None = None,
        post_only: bool | None = None, self_trade_prevention: str | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """Place an order; the order as the server holds it once it is durable.

        ``order_type`` is ``limit`` (the default; needs ``price``) or ``market``.
        The other options and their defaults are those of ``POST /api/v1/orders``.

        Raises:
            RequestError: refused (``price_off_tick``, ``below_min_notional``...,
                with ``field``); nothing was applied.
            OutcomeUnknown: the connection was lost before the reply.
            NotConnected: the client is reconnecting; nothing was sent.
            TypeError: a float amount (use a string or a Decimal).
        """
        reply = await self._order("place", place_fields(
            symbol, side, quantity, price, order_type=order_type, time_in_force=time_in_force,
            post_only=post_only, self_trade_prevention=self_trade_prevention,
            client_order_id=client_order_id))
        return reply.order  # type: ignore[no-any-return]

    async def amend(self, order_id: int | None = None, *, client_order_id: str | None = None,
                    price: AmountLike | None = None, quantity: AmountLike | None = None,
                    ) -> Order:
        """Change an open order's price and/or quantity (by ``order_id`` or
        ``client_order_id``); the order after the amend. Raises as :meth:`place`."""
        reply = await self._order("amend", amend_fields(order_id, client_order_id, price,
                                                        quantity))
        return reply.order  # type: ignore[no-any-return]

    async def cancel(self, order_id: int | None = None, *,
                     client_order_id: str | None = None) -> Order:
        """Cancel an open order; the order, status ``CANCELLED``. Raises as :meth:`place`."""
        reply = await self._order("cancel", target_fields(order_id, client_order_id))
        return reply.order  # type: ignore[no-any-return]

    async def cancel_all(self, symbol: str | None = None) -> list[int]:
        """Cancel every open order of yours (of ``symbol`` when given); their ids."""
        reply = await self._order("cancel_all", {} if symbol is None else {"symbol": symbol})
        assert isinstance(reply, AllCancelled)
        return reply.cancelled

    async def ping(self) -> float:
        """Round trip of an application-level ping (``{"action": "ping"}``), in seconds."""
        request_id, outputs = self._session.ping()
        start = trio.current_time()
        await self._request(outputs, request_id, _Waiter())
        return trio.current_time() - start


@asynccontextmanager
async def connect(
    url: str, token: str | None = None, *, reconnect: Reconnect | None = None,
    heartbeat_interval: float = 10.0, heartbeat_timeout: float = 10.0,
    connect_timeout: float = 10.0, compression: bool = True,
    ssl_context: ssl.SSLContext | None = None, buffer_size: int = 1024,
    max_in_flight: int = 256,
) -> AsyncIterator[Client]:
    """Connect to the server's WebSocket port; ``async with connect(url) as client:``.

    Args:
        url: the WebSocket address, ``ws://HOST:PORT`` (or the banner's
            ``ws://HOST:PORT/ws``; ``wss://`` for TLS).
        token: a JWT (``trade-engine token --user NAME``): needed for the
            ``orders`` stream and for order entry.
        reconnect: the reconnect policy (default: forever, backoff 0.1 s to 10 s).
        heartbeat_interval: seconds of silence before the client pings.
        heartbeat_timeout: seconds without an answer after that ping before
            the connection counts as dead and is replaced.
        connect_timeout: seconds for TCP, TLS and the handshake together.
        compression: offer permessage-deflate.
        buffer_size: default per-subscription buffer (see :meth:`Client.subscribe`).
        max_in_flight: order requests awaiting their reply at once; more wait.

    Raises:
        ConnectFailed, HandshakeRejected: the first connection could not be made
            (no retry: a wrong URL or token would only be retried in vain).
        ConnectionLost: the client gave up reconnecting, or a close it cannot
            recover from (token expired: 4003).
        ValueError: ``url`` is not a WebSocket URL.
    """
    options = _Options(
        reconnect=reconnect or Reconnect(), heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout, connect_timeout=connect_timeout,
        compression=compression, ssl_context=ssl_context, buffer_size=buffer_size,
        max_in_flight=max_in_flight)
    client = Client(url, token, options)
    ws = await client._open()
    closing = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._manage, ws)
            try:
                await client.wait_connected()
                yield client
            finally:
                closing = True
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        distinct = _distinct_leaves(group)
        if len(distinct) == 1:  # one error, maybe seen by both the manager and the block
            raise distinct[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True):
            current = client._ws or ws
            if closing:
                await current.aclose()
            else:
                await current.abort()
            for sub in list(client._subs.values()):
                sub._end(client._failure)


def _distinct_leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif not any(exc is seen for seen in leaves):
            leaves.append(exc)
    return leaves
