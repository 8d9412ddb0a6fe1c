"""Helpers for the WebSocket tests: real clients on loopback, orders through the public API.

* :func:`open_client` connects a trio-websocket client (``open_websocket_url``)
  and wraps it in :class:`Client`, which speaks the gateway's JSON and puts a
  deadline (``TIMEOUT``) on every wait.
* :class:`RawClient` is a hand-written TCP client: it completes the opening
  handshake and then reads only when told to, so it can stall or ignore pings.
* :func:`place`, :func:`rest_place` and :func:`stats` drive and observe the
  gateway through ``gateway.submit`` and the REST port.

Nothing here reaches into the gateway's private modules.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import socket
import struct
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, open_websocket_url

from engine import CancelOrder, Event, OrderAccepted, PlaceOrder, Side
from gateway import Gateway

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
async def open_client(
    gateway: Gateway, path: str = "/ws", token: str | None = None, **options: Any
) -> AsyncIterator[Client]:
    """A trio-websocket client connected to ``path`` (``?token=`` appended when given)."""
    options.setdefault("connect_timeout", TIMEOUT)
    options.setdefault("disconnect_timeout", TIMEOUT)
    ws = None
    try:
        async with open_websocket_url(ws_url(gateway, path, token), **options) as ws:
            yield Client(ws)
    finally:
        # trio-websocket 0.12 never closes a client's TCP stream when the server
        # closed first (its aclose returns early once a close reason is set), which
        # filterwarnings=error turns into a ResourceWarning in some later test.
        if ws is not None:
            await ws._stream.aclose()


async def rejected_handshake(
    gateway: Gateway, path: str, token: str | None = None
) -> tuple[int, Message | None]:
    """Open a trio-websocket client that the server must refuse: its status and JSON body.

    trio-websocket 0.12 leaves the client socket of a refused handshake for the
    garbage collector; it is collected here, with its ResourceWarning silenced,
    so that ``filterwarnings = error`` does not blame a later test.
    """
    status: int | None = None
    body: bytes | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            with trio.fail_after(TIMEOUT):
                async with open_websocket_url(ws_url(gateway, path, token)):
                    pass
        except ConnectionRejected as exc:
            status, body = exc.status_code, exc.body
        gc.collect()
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


async def stats(gateway: Gateway) -> Message:
    async with open_rest(gateway) as http:
        with trio.fail_after(TIMEOUT):
            response = await http.get("/stats")
    assert response.status_code == 200
    body: Message = response.json()
    return body


async def wait_for_stats(gateway: Gateway, predicate: Callable[[Message], bool]) -> Message:
    """Poll ``/stats`` until ``predicate`` holds (the gateway cleans up asynchronously)."""
    with trio.fail_after(TIMEOUT):
        while True:
            current = await stats(gateway)
            if predicate(current):
                return current
            await trio.sleep(0.02)


# ------------------------------------------------------------ a raw client


class RawClient:
    """A WebSocket client written by hand on a TCP stream; it reads only when asked.

    Used to be the client that stalls or never answers pings; server frames are
    parsed here (they are never masked).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, gateway: Gateway, path: str, receive_buffer: int | None = None,
                      ) -> RawClient:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        endpoints = gateway.endpoints
        with trio.fail_after(TIMEOUT):
            await sock.connect((endpoints.host, endpoints.ws_port))
            client = cls(trio.SocketStream(sock))
            key = base64.b64encode(os.urandom(16)).decode()
            await client.stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: {endpoints.host}:{endpoints.ws_port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            while b"\r\n\r\n" not in client._buffer:
                data = await client.stream.receive_some(65536)
                assert data, "the server closed during the handshake"
                client._buffer += data
        head, _, rest = bytes(client._buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        client._buffer = bytearray(rest)
        return client

    async def text_messages(self, count: int, pause: float = 0.0) -> list[str]:
        """The next ``count`` text messages (pings and other frames are skipped).

        With ``pause``, sleep that long after each read so that reads come in
        large batches: a cheap client, for load tests.
        """
        texts: list[str] = []
        while True:
            while (frame := self._next_frame()) is not None:
                if frame[0] == TEXT:
                    texts.append(frame[1].decode())
                    if len(texts) == count:
                        return texts
            data = await self.stream.receive_some(1 << 20)
            assert data, f"the server closed after {len(texts)} of {count} messages"
            self._buffer += data
            if pause:
                await trio.sleep(pause)

    async def next_frame(self) -> tuple[int, bytes]:
        """The next frame of any kind as ``(opcode, payload)``."""
        with trio.fail_after(TIMEOUT):
            while (frame := self._next_frame()) is None:
                data = await self.stream.receive_some(1 << 20)
                assert data, "the server closed the connection"
                self._buffer += data
        return frame

    def _next_frame(self) -> tuple[int, bytes] | None:
        data = self._buffer
        if len(data) < 2:
            return None
        opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                return None
            (length,), offset = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            if len(data) < 10:
                return None
            (length,), offset = struct.unpack("!Q", data[2:10]), 10
        if len(data) < offset + length:
            return None
        payload = bytes(data[offset:offset + length])
        del data[:offset + length]
        return opcode, payload

    async def frames(self) -> list[tuple[int, bytes]]:
        """Every frame as ``(opcode, payload)`` up to the server's close frame or end of stream.

        Fails if the stream ends inside a frame.
        """
        frames: list[tuple[int, bytes]] = []
        with trio.fail_after(TIMEOUT):
            while True:
                while (frame := self._next_frame()) is not None:
                    frames.append(frame)
                    if frame[0] == CLOSE:
                        return frames
                data = await self.stream.receive_some(1 << 20)
                if not data:
                    break
                self._buffer += data
        assert not self._buffer, (
            f"the stream ended inside a frame, after {len(frames)} whole frames; "
            f"{len(self._buffer)} bytes left: ...{bytes(self._buffer[-48:])!r}")
        return frames

    async def aclose(self) -> None:
        await self.stream.aclose()


TEXT, CLOSE, PING = 0x1, 0x8, 0x9


def pong(payload: bytes) -> bytes:
    """A client's pong echoing a ping's payload (masked, as a client's frames must be)."""
    assert len(payload) < 126
    key = b"\x01\x02\x03\x04"
    return bytes([0x8A, 0x80 | len(payload)]) + key + bytes(
        byte ^ key[i % 4] for i, byte in enumerate(payload))


def close_code(frames: list[tuple[int, bytes]]) -> int:
    """The code of the (last) close frame; fails if there is none."""
    closes = [payload for opcode, payload in frames if opcode == CLOSE]
    assert closes, f"no close frame among opcodes {[opcode for opcode, _ in frames]}"
    code: int = struct.unpack("!H", closes[-1][:2])[0]
    return code
