"""What the application holds: :func:`connect`, and the :class:`Client` it yields.

Rules of this module:

* A thin surface over ``_link.Link`` (the trio shell that keeps the
  connection) and ``_session.Session`` (the pure protocol state): each method
  asks the session for the request, hands it to the link, and waits.
* ``connect()`` runs the link in its own nursery and raises one meaningful
  error, never an exception group: the first connection's failure
  (:class:`ConnectFailed`, :class:`HandshakeRejected`), the link's final
  :class:`ConnectionLost`, or the block's own exception.
* Leaving ``subscribe()``/``book()`` unsubscribes without waiting for the
  reply (shielded, bounded by ``connect_timeout``): the session ignores what
  still arrives for it. Leaving ``connect()`` closes the WebSocket properly.
* Subscription buffers and their overflow policy: ``_subscription.py``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from gateway.client._errors import ConnectionLost, NotConnected
from gateway.client._link import Link, Options, Waiter
from gateway.client._messages import AllCancelled, Order, Subscribed
from gateway.client._policy import Reconnect
from gateway.client._requests import AmountLike, amend_fields, place_fields, target_fields
from gateway.client._session import Key, Status
from gateway.client._subscription import Book, Subscription


def normalize_symbol(symbol: str | None) -> str | None:
    """``BTC-USDT`` and ``btc/usdt`` are ``BTC/USDT``, as the server reads them."""
    return None if symbol is None else symbol.replace("-", "/").upper()


class Client:
    """A connection to a trade-engine server; made by :func:`connect`.

    It reconnects by itself (see :class:`Reconnect`) and resumes every
    subscription; ``connected`` says whether a connection is up right now.
    """

    def __init__(self, link: Link) -> None:
        self._link = link
        self._session = link.session

    @property
    def url(self) -> str:
        """The server's ``/ws`` endpoint, with the token masked."""
        return self._link.shown_url

    @property
    def connected(self) -> bool:
        return self._session.connected

    @property
    def reconnects(self) -> int:
        """How many times the client connected again after losing a connection."""
        return self._link.reconnects

    async def wait_connected(self) -> None:
        """Return once the client is connected (at once if it is).

        Raises:
            ClientError: the client gave up reconnecting.
        """
        await self._link.wait_connected()

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
        size = self._link.options.buffer_size if buffer_size is None else buffer_size
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
        if self._link.failure is not None:
            raise self._link.failure
        key, waiter_id, outputs = self._session.subscribe(stream, symbol)
        order_book = self._session.book(key)
        sub = Subscription(
            stream, symbol, buffer_size,
            paused=lambda: self._session.status(key) is Status.PAUSED,
            resume=lambda: self._resume(key),
            book=None if order_book is None else Book(order_book))
        self._link.subs[key] = sub
        try:
            reply = await self._link.request(outputs, waiter_id, Waiter())
        except BaseException:
            self._link.subs.pop(key, None)
            with trio.CancelScope(shield=True):
                await self._drop(key)
            raise
        assert isinstance(reply, Subscribed)
        return sub

    async def _resume(self, key: Key) -> None:
        self._link.apply(self._session.resume(key))
        with suppress(ConnectionLost):
            await self._link.flush()

    async def _unsubscribe(self, sub: Subscription) -> None:
        key = (sub.stream, sub.symbol)
        if self._link.subs.get(key) is not sub:
            return
        del self._link.subs[key]
        sub._end()
        with trio.CancelScope(shield=True):
            await self._drop(key)

    async def _drop(self, key: Key) -> None:
        """Unsubscribe without waiting for the reply (the session drops what follows)."""
        request_id, outputs = self._session.unsubscribe(key)
        if request_id is not None:
            self._session.forget(request_id)
        self._link.apply(outputs)
        with trio.move_on_after(self._link.options.connect_timeout):
            with suppress(ConnectionLost):
                await self._link.flush()

    # -------------------------------------------------------- order entry

    async def _order(self, action: str, fields: dict[str, Any]) -> Any:
        if self._link.failure is not None:
            raise self._link.failure
        await self._link.slots.acquire()
        try:
            request_id, outputs = self._session.order(action, fields)
        except NotConnected:
            self._link.slots.release()
            raise
        return await self._link.request(outputs, request_id, Waiter(slot=True))

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
        await self._link.request(outputs, request_id, Waiter())
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
    options = Options(
        reconnect=reconnect or Reconnect(), heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout, connect_timeout=connect_timeout,
        compression=compression, ssl_context=ssl_context, buffer_size=buffer_size,
        max_in_flight=max_in_flight)
    link = Link(url, token, options)
    ws = await link.open()
    closing = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.run, ws)
            try:
                await link.wait_connected()
                yield Client(link)
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
            current = link.ws or ws
            if closing:
                await current.aclose()
            else:
                await current.abort()
            for sub in list(link.subs.values()):
                sub._end(link.failure)


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
