"""The trio shell under :class:`~gateway.client.Client`: one link to the server, kept alive.

Rules of this module:

* Every decision is the :class:`~gateway.client._session.Session`'s (pure);
  this shell only moves bytes and wakes tasks: it feeds the session what
  arrives and carries out its outputs.
* Tasks: ``connect()`` runs :meth:`Link.run` in its nursery for the client's
  life. It owns the current connection: a reader task and the heartbeat in a
  nursery of their own; when the connection is lost, backoff and a new one
  (or, when the loss is final, the error). Application tasks only send
  (under the connection's lock) and wait on their own events.
* Order of requests: the session's outputs are appended to one outbox, in
  the order the session made them, and whoever sends next sends the whole
  outbox; two tasks can never put one channel's unsubscribe and subscribe
  out of order. The outbox is emptied when a connection is lost: the session
  decides afresh what the next connection must send.
* Bounded: the outbox holds what the tasks in flight produced; order requests
  wait for a slot of ``max_in_flight``, released by the reply (or the loss of
  the connection), not by a caller who stopped waiting.
* Failure: when the link gives up (a final close code, a refused reconnect,
  ``Reconnect.max_attempts``), :meth:`Link.run` raises the error, and every
  waiter and subscription gets the same error.
"""

from __future__ import annotations

import logging
import random
import ssl
from contextlib import suppress
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
import trio

from gateway.client import _session
from gateway.client._errors import ClientError, ConnectFailed, ConnectionLost, HandshakeRejected
from gateway.client._messages import MalformedMessage, decode, encode
from gateway.client._policy import Backoff, Reconnect, close_is_final, handshake_is_final
from gateway.client._session import Key, Session
from gateway.client._subscription import Subscription
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


@attrs.frozen(kw_only=True)
class Options:
    reconnect: Reconnect
    heartbeat_interval: float
    heartbeat_timeout: float
    connect_timeout: float
    compression: bool
    ssl_context: ssl.SSLContext | None
    buffer_size: int
    max_in_flight: int


class Waiter:
    __slots__ = ("event", "result", "slot")

    def __init__(self, slot: bool = False) -> None:
        self.event = trio.Event()
        self.result: Any = None
        self.slot = slot


class Link:
    """The connection to the server, across reconnects, and the session it feeds."""

    def __init__(self, url: str, token: str | None, options: Options) -> None:
        self.url = endpoint_url(url, token)
        self.shown_url = endpoint_url(url, token, mask=True)
        self.options = options
        self.session = Session(self.has_room)
        self.subs: dict[Key, Subscription] = {}
        self.ws: WebSocket | None = None
        self.failure: ClientError | None = None
        self.reconnects = 0
        self._waiters: dict[int, Waiter] = {}
        self._outbox: list[dict[str, Any]] = []
        self._connected = trio.Event()
        self.slots = trio.Semaphore(options.max_in_flight)

    @property
    def connected(self) -> bool:
        return self.session.connected

    async def wait_connected(self) -> None:
        """Return once the client is connected (at once if it is).

        Raises:
            ClientError: the client gave up reconnecting.
        """
        while not self.session.connected:
            if self.failure is not None:
                raise self.failure
            await self._connected.wait()

    async def open(self) -> WebSocket:
        o = self.options
        return await open_websocket(self.url, shown_url=self.shown_url,
                                    connect_timeout=o.connect_timeout,
                                    compression=o.compression, ssl_context=o.ssl_context)

    async def run(self, ws: WebSocket) -> None:
        """The client's life: serve a connection, reconnect when it is lost, or give up."""
        backoff = Backoff(self.options.reconnect, random.uniform)
        try:
            while True:
                lost = await self._serve(ws)
                self.apply(self.session.connection_lost(str(lost)))
                self._outbox.clear()
                self.ws, self._connected = None, trio.Event()
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
                ws = await self.open()
            except HandshakeRejected as exc:
                if handshake_is_final(exc.status):
                    log.error("%s; not reconnecting", exc)
                    raise
                if exc.retry_after:
                    await trio.sleep(min(exc.retry_after, self.options.reconnect.max_delay))
                lost = exc
            except ConnectFailed as exc:
                lost = exc
            else:
                backoff.reset()
                return ws
            log.info("reconnect attempt %d failed: %s", backoff.attempts, lost)

    async def _serve(self, ws: WebSocket) -> ConnectionLost:
        """Run one connection until it is lost; why it was."""
        o = self.options
        lost: list[ConnectionLost] = []
        self.ws = ws
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
                        self.apply(self.session.receive(message))
                        await self.flush()
                except ConnectionLost as exc:
                    lost.append(exc)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(ws.keep_alive, o.heartbeat_interval, o.heartbeat_timeout)
            self.apply(self.session.connection_made())
            self._connected.set()
            with suppress(ConnectionLost):
                await self.flush()
            nursery.start_soon(reader)
        if not lost:  # pragma: no cover - the nursery is only cancelled with a reason
            lost.append(ConnectionLost("the connection ended"))
        return lost[0]

    def _give_up(self, error: ClientError) -> None:
        self.failure = error
        self._connected.set()  # wake wait_connected(), which raises
        for waiter in self._waiters.values():
            waiter.result = error
            waiter.event.set()
        for sub in self.subs.values():
            sub._end(error)

    # ------------------------------------------- the session's outputs

    def has_room(self, key: Key) -> bool:
        sub = self.subs.get(key)
        return sub is None or sub._has_room()

    def apply(self, outputs: list[_session.Output]) -> None:
        for output in outputs:
            if isinstance(output, _session.Send):
                self._outbox.append(output.request)
            elif isinstance(output, _session.Deliver):
                sub = self.subs.get(output.key)
                if sub is not None:
                    sub._deliver(output.item)
            elif isinstance(output, _session.Resolve):
                waiter = self._waiters.pop(output.request_id, None)
                if waiter is not None:
                    if waiter.slot:
                        self.slots.release()
                    waiter.result = output.result
                    waiter.event.set()
            else:
                sub = self.subs.pop(output.key, None)
                if sub is not None:
                    sub._end(output.error)

    async def flush(self) -> None:
        """Send the outbox, in order.

        Raises:
            ConnectionLost: the connection broke (the manager handles the rest).
        """
        ws = self.ws
        while self._outbox and ws is not None:
            request = self._outbox.pop(0)
            await ws.send(encode(request))

    async def request(self, outputs: list[_session.Output], request_id: int,
                       waiter: Waiter) -> Any:
        self._waiters[request_id] = waiter
        self.apply(outputs)
        with suppress(ConnectionLost):  # the session resolves it when the manager sees it
            await self.flush()
        try:
            await waiter.event.wait()
        except trio.Cancelled:
            if not waiter.slot:
                self._waiters.pop(request_id, None)
                self.session.forget(request_id)
            raise
        if isinstance(waiter.result, ClientError):
            raise waiter.result
        return waiter.result

