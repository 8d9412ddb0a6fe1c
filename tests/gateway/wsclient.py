"""Helpers for the WebSocket tests: real clients on loopback, orders through the public API.

* :func:`open_ws` connects a trio-websocket client on a TCP stream the test
  owns (trio-websocket's public ``wrap_client_stream``), so the stream is
  always closed; :func:`open_client` wraps it in :class:`Client`, which speaks
  the gateway's JSON and puts a deadline (``TIMEOUT``) on every wait.
* :class:`RawClient` is a hand-written TCP client: it completes the opening
  handshake and then reads only when told to, so it can stall or ignore pings.
  Its frames are built and read by the project's one frame codec
  (``gateway._frames``, pure functions over bytes).
* :func:`place`, :func:`rest_place` and :func:`stats` drive and observe the
  gateway through ``gateway.submit`` and the REST port.

Nothing here reaches into the gateway's other private modules, nor into
trio-websocket's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from engine import CancelOrder, Event, OrderAccepted, PlaceOrder, Side
from gateway import Gateway
from gateway._frames import CLOSE, PING_OPCODE, PONG, TEXT, FrameReader, client_frame
from gateway._frames import close_code as close_payload_code

TIMEOUT = 5.0
"""Seconds any single network wait may take before the test fails."""

BTC = "BTC/USDT"
ETH = "ETH/USDT"
BTC_TICK = Decimal("0.01")
BTC_LOT = Decimal("0.00001")

Message = dict[str, Any]


class Client:
    """A connected WebSocket client that sends and receives JSON objects."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._next_id = 0

    async def send(self, message: Message | str | bytes) -> None:
        text = message if isinstance(message, (str, bytes)) else json.dumps(message)
        with trio.fail_after(TIMEOUT):
            await self.ws.send_message(text)

    async def receive(self, timeout: float = TIMEOUT) -> Message:
        """The next message, decoded; fails the test after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            text = await self.ws.get_message()
        message = json.loads(text)
        assert isinstance(message, dict), message
        return message

    async def receive_until(self, predicate: Callable[[Message], bool]) -> list[Message]:
        """Messages up to and including the first one for which ``predicate`` holds."""
        received: list[Message] = []
        with trio.fail_after(TIMEOUT):
            while True:
                received.append(await self.receive())
                if predicate(received[-1]):
                    return received

    async def collect(self, count: int, timeout: float = TIMEOUT) -> list[Message]:
        """Exactly the next ``count`` messages."""
        with trio.fail_after(timeout):
            return [await self.receive(timeout) for _ in range(count)]

    async def request(self, **fields: Any) -> Message:
        """Send a control message with a fresh ``id`` and return the reply carrying it.

        Stream messages that arrive first are skipped (they carry no ``id``).
        """
        if "id" not in fields:
            self._next_id += 1
            fields["id"] = f"req-{self._next_id}"
        await self.send(fields)
        messages = await self.receive_until(lambda m: m.get("id") == fields["id"])
        return messages[-1]

    async def subscribe(self, stream: str, symbol: str | None = None) -> Message:
        fields: dict[str, Any] = {"action": "subscribe", "stream": stream}
        if symbol is not None:
            fields["symbol"] = symbol
        reply = await self.request(**fields)
        assert reply["type"] == "subscribed", reply
        return reply

    async def unsubscribe(self, stream: str, symbol: str | None = None) -> Message:
        fields: dict[str, Any] = {"action": "unsubscribe", "stream": stream}
        if symbol is not None:
            fields["symbol"] = symbol
        reply = await self.request(**fields)
        assert reply["type"] == "unsubscribed", reply
        return reply

    async def ping(self) -> Message:
        reply = await self.request(action="ping")
        assert reply["type"] == "pong", reply
        return reply


def ws_url(gateway: Gateway, path: str = "/ws", token: str | None = None) -> str:
    url = gateway.endpoints.ws_url + path
    if token is not None:
        url += ("&" if "?" in url else "?") + "token=" + quote(token)
    return url


@asynccontextmanager
async def open_ws(url: str, **options: Any) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client for ``url`` whose TCP stream is always closed on exit.

    trio-websocket's own client (0.12.2, ``open_websocket_url``) leaves its
    socket open when the server closes first (it waits for the TCP close and
    never closes its end), and the socket of a refused handshake for the
    garbage collector; ``filterwarnings = error`` turns either into a failure
    in some later test. Owning the stream and handing it to the public
    ``wrap_client_stream`` avoids both. ``options`` go to ``wrap_client_stream``.
    A single error from inside (the block's, or the reader task's) comes out as
    itself, not in an exception group, as from ``open_websocket_url``.

    Raises:
        ConnectionRejected: the server refused the handshake (its status and body).
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    resource = parts.path + ("?" + parts.query if parts.query else "")
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:  # trio-websocket's reader task
            with trio.fail_after(TIMEOUT):
                ws = await wrap_client_stream(nursery, stream, parts.hostname, resource,
                                              **options)
            try:
                yield ws
            finally:
                with trio.move_on_after(TIMEOUT):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # one error (a refusal, a failed assert): itself
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        await stream.aclose()


@asynccontextmanager
async def open_client(
    gateway: Gateway, path: str = "/ws", token: str | None = None
) -> AsyncIterator[Client]:
    """A trio-websocket client connected to ``path`` (``?token=`` appended when given)."""
    async with open_ws(ws_url(gateway, path, token)) as ws:
        yield Client(ws)


async def rejected_handshake(
    gateway: Gateway, path: str, token: str | None = None
) -> tuple[int, Message | None]:
    """Open a trio-websocket client that the server must refuse: its status and JSON body."""
    status: int | None = None
    body: bytes | None = None
    try:
        async with open_ws(ws_url(gateway, path, token)):
            pass
    except ConnectionRejected as exc:
        status, body = exc.status_code, exc.body
    assert status is not None, f"the handshake to {path} was accepted"
    return status, None if not body else json.loads(body)


# ------------------------------------------------------------------ orders


def ticks(price: str) -> int:
    return int(Decimal(price) / BTC_TICK)


def lots(quantity: str) -> int:
    return int(Decimal(quantity) / BTC_LOT)


async def place(
    gateway: Gateway, user: str, side: str, price: str, quantity: str, symbol: str = BTC,
    **fields: Any,
) -> list[Event]:
    """Place a BTC/USDT-unit limit order through ``gateway.submit``; the gateway picks the id."""
    tick, lot = (BTC_TICK, BTC_LOT) if symbol == BTC else (Decimal("0.01"), Decimal("0.0001"))
    command = PlaceOrder(
        order_id=0, user_id=user, symbol=symbol, side=Side(side),
        price=int(Decimal(price) / tick), quantity=int(Decimal(quantity) / lot), **fields,
    )
    with trio.fail_after(TIMEOUT):
        return await gateway.submit(command)


def order_id_of(events: list[Event]) -> int:
    accepted = events[0]
    assert isinstance(accepted, OrderAccepted), events
    return accepted.order_id


async def cancel(gateway: Gateway, user: str, order_id: int) -> list[Event]:
    with trio.fail_after(TIMEOUT):
        return await gateway.submit(CancelOrder(order_id=order_id, user_id=user))


@asynccontextmanager
async def open_rest(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=TIMEOUT) as client:
        yield client


async def rest_place(http: httpx.AsyncClient, token: str, **order: Any) -> Message:
    """POST /api/v1/orders as the token's user; returns the created order."""
    order.setdefault("symbol", BTC)
    with trio.fail_after(TIMEOUT):
        response = await http.post(
            "/api/v1/orders", json=order, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.text
    body: Message = response.json()
    return body


async def stats(gateway: Gateway, http: httpx.AsyncClient | None = None) -> Message:
    """``GET /stats``, on ``http`` if given (a new client costs tens of milliseconds)."""
    if http is None:
        async with open_rest(gateway) as client:
            return await stats(gateway, client)
    with trio.fail_after(TIMEOUT):
        response = await http.get("/stats")
    assert response.status_code == 200
    body: Message = response.json()
    return body


async def wait_for_stats(gateway: Gateway, predicate: Callable[[Message], bool]) -> Message:
    """Poll ``/stats`` until ``predicate`` holds (the gateway cleans up asynchronously)."""
    async with open_rest(gateway) as http:
        with trio.fail_after(TIMEOUT):
            while True:
                current = await stats(gateway, http)
                if predicate(current):
                    return current
                await trio.sleep(0.02)


# ------------------------------------------------------------ a raw client


class RawClient:
    """A WebSocket client written by hand on a TCP stream; it reads only when asked.

    Used to be the client that stalls or never answers pings; server frames are
    split by :class:`gateway._frames.FrameReader` (they are never masked).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._reader = FrameReader()

    @classmethod
    async def connect(cls, gateway: Gateway, path: str, receive_buffer: int | None = None,
                      ) -> RawClient:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        endpoints = gateway.endpoints
        head = bytearray()
        with trio.fail_after(TIMEOUT):
            await sock.connect((endpoints.host, endpoints.ws_port))
            client = cls(trio.SocketStream(sock))
            key = base64.b64encode(os.urandom(16)).decode()
            await client.stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: {endpoints.host}:{endpoints.ws_port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            while b"\r\n\r\n" not in head:
                data = await client.stream.receive_some(65536)
                assert data, "the server closed during the handshake"
                head += data
        status, _, rest = bytes(head).partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101 "), status
        client._reader.feed(rest)
        return client

    async def _receive(self) -> bool:
        """Read more bytes into the frame reader; False at the end of the stream.

        What is read is acknowledged at once (TCP_QUICKACK), not after the kernel's
        delayed-ACK timer (40 ms or more): the server counts unacknowledged bytes
        (SIOCOUTQ) to tell a client that stopped reading, and on ``idle_clock`` a
        pong timeout can pass in less real time than that timer.
        """
        data = await self.stream.receive_some(1 << 20)
        self._reader.feed(data)
        if data:
            with contextlib.suppress(OSError):  # already reset by the server
                self.stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return bool(data)

    async def text_messages(self, count: int, pause: float = 0.0) -> list[str]:
        """The next ``count`` text messages (pings and other frames are skipped).

        With ``pause``, sleep that long after each read so that reads come in
        large batches: a cheap client, for load tests.
        """
        texts: list[str] = []
        while True:
            while (frame := self._reader.next_frame()) is not None:
                if frame[0] == TEXT:
                    texts.append(frame[2].decode())
                    if len(texts) == count:
                        return texts
            assert await self._receive(), (
                f"the server closed after {len(texts)} of {count} messages")
            if pause:
                await trio.sleep(pause)

    async def next_frame(self) -> tuple[int, bytes]:
        """The next frame of any kind as ``(opcode, payload)``."""
        with trio.fail_after(TIMEOUT):
            while (frame := self._reader.next_frame()) is None:
                assert await self._receive(), "the server closed the connection"
        return frame[0], frame[2]

    async def frames(self) -> list[tuple[int, bytes]]:
        """Every frame as ``(opcode, payload)`` up to the server's close frame or end of stream.

        Fails if the stream ends inside a frame.
        """
        frames: list[tuple[int, bytes]] = []
        with trio.fail_after(TIMEOUT):
            while True:
                while (frame := self._reader.next_frame()) is not None:
                    frames.append((frame[0], frame[2]))
                    if frame[0] == CLOSE:
                        return frames
                if not await self._receive():
                    break
        unread = self._reader.unread
        assert not unread, (
            f"the stream ended inside a frame, after {len(frames)} whole frames; "
            f"{len(unread)} bytes left: ...{unread[-48:]!r}")
        return frames

    @property
    def unread(self) -> bytes:
        """Bytes received after the last frame returned (an incomplete frame, or more)."""
        return self._reader.unread

    async def aclose(self) -> None:
        await self.stream.aclose()


PING = PING_OPCODE


def pong(payload: bytes) -> bytes:
    """A client's pong echoing a ping's payload (masked, as a client's frames must be)."""
    return client_frame(PONG, payload, key=os.urandom(4))


def close_code(frames: list[tuple[int, bytes]]) -> int:
    """The code of the (last) close frame; fails if there is none."""
    closes = [payload for opcode, payload in frames if opcode == CLOSE]
    assert closes, f"no close frame among opcodes {[opcode for opcode, _ in frames]}"
    code = close_payload_code(closes[-1])
    assert code is not None, "a close frame without a code"
    return code
