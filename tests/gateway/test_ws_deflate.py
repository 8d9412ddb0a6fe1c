"""permessage-deflate end to end: real clients on loopback that negotiate it.

trio-websocket cannot offer the extension, so the compressing client here is
wsproto itself over a trio socket (:class:`DeflateClient`): it offers
permessage-deflate, compresses what it sends and inflates what it receives
with wsproto's own implementation, and keeps the raw bytes so a test can see
which frames really were compressed.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from typing import Any

import pytest
import trio
from wsclient import BTC, TIMEOUT, Client, open_client, place, stats, wait_for_stats
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from gateway import Gateway
from gateway._frames import RSV1, TEXT, client_frame, frame_header, read_header, unmask

Message = dict[str, Any]


class DeflateClient:
    """A wsproto client connection; ``offer`` is what goes into Sec-WebSocket-Extensions."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.head = b""  # the server's handshake answer
        self.accepted: AcceptConnection | None = None
        self.raw = bytearray()  # every byte received after the handshake
        self.sent = bytearray()  # every byte sent after the handshake
        self._parts: list[str] = []
        self._events: list[Event] = []

    @classmethod
    async def connect(cls, gateway: Gateway, path: str = "/ws",
                      extension: PerMessageDeflate | None = None,
                      offer: bytes | None = None) -> DeflateClient:
        endpoints = gateway.endpoints
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream(endpoints.host, endpoints.ws_port)
            client = cls(stream, WSConnection(ConnectionType.CLIENT))
            headers = [] if offer is None else [(b"Sec-WebSocket-Extensions", offer)]
            await stream.send_all(client.ws.send(Request(
                host=f"{endpoints.host}:{endpoints.ws_port}", target=path,
                extensions=[] if extension is None else [extension], extra_headers=headers)))
            received = b""
            while client.accepted is None:
                data = await stream.receive_some(65536)
                assert data, "the server closed during the handshake"
                received += data
                client.ws.receive_data(data)
                for event in client.ws.events():
                    assert isinstance(event, AcceptConnection), event
                    client.accepted = event
            client.head, _, rest = received.partition(b"\r\n\r\n")
            client.raw += rest
        return client

    @property
    def extension_header(self) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-extensions":
                return value.strip()
        return None

    async def send(self, message: Message, *, fragments: int = 1) -> None:
        text = json.dumps(message)
        size = -(-len(text) // fragments)
        data = b""
        for start in range(0, len(text), size):
            data += self.ws.send(TextMessage(data=text[start:start + size],
                                             message_finished=start + size >= len(text)))
        self.sent += data
        with trio.fail_after(TIMEOUT):
            await self.stream.send_all(data)

    async def receive(self) -> Message:
        with trio.fail_after(TIMEOUT):
            while True:
                while self._events:
                    event = self._events.pop(0)
                    if isinstance(event, Ping):
                        await self.stream.send_all(self.ws.send(event.response()))
                    elif isinstance(event, TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            text, self._parts = "".join(self._parts), []
                            message: Message = json.loads(text)
                            return message
                    else:
                        raise AssertionError(f"unexpected {event!r}")
                data = await self.stream.receive_some(65536)
                assert data, "the server closed the connection"
                self.raw += data
                self.ws.receive_data(data)
                self._events.extend(self.ws.events())

    async def request(self, **fields: Any) -> Message:
        await self.send(fields)
        while True:
            message = await self.receive()
            if message.get("id") == fields["id"]:
                return message

    async def closed_with(self) -> tuple[int, bytes]:
        """The server's close code, and what follows its close frame until the end of TCP."""
        with trio.fail_after(TIMEOUT):
            while True:
                for event in self._events:
                    if isinstance(event, CloseConnection):
                        after = b""
                        while data := await self.stream.receive_some(65536):
                            after += data
                        return event.code, after
                self._events = []
                data = await self.stream.receive_some(65536)
                assert data, "the stream ended without a close frame"
                self.ws.receive_data(data)
                self._events = list(self.ws.events())

    def compressed_frames(self) -> int:
        """How many frames received so far had RSV1 set (permessage-deflate)."""
        return sum(1 for first in frame_firsts(bytes(self.raw)) if first & 0x40)

    async def aclose(self) -> None:
        await self.stream.aclose()


def frame_firsts(data: bytes) -> list[int]:
    """The first byte of each whole frame in ``data``."""
    firsts = []
    while (header := read_header(data)) is not None and len(data) >= header.size + header.length:
        firsts.append(header.first)
        data = data[header.size + header.length:]
    return firsts


def by_type(messages: list[Message]) -> dict[str, list[Message]]:
    grouped: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        grouped[message["type"]].append(message)
    return dict(grouped)


SUBSCRIPTIONS = [
    {"action": "subscribe", "stream": "depth", "symbol": BTC, "id": 1},
    {"action": "subscribe", "stream": "orderbook", "symbol": BTC, "id": 2},
    {"action": "subscribe", "stream": "trades", "id": 3},
]


async def rest_a_book(gateway: Gateway, levels: int) -> None:
    for i in range(levels):
        await place(gateway, "maker", "buy", f"{49000 + i}.00", "0.01")
        await place(gateway, "maker", "sell", f"{51000 + i}.00", "0.02")


@pytest.fixture
async def deep_gateway(start_gateway) -> Gateway:
    return await start_gateway(websocket={"depth_levels": 50})


async def test_a_deflate_client_reads_the_same_json_as_a_plain_one(deep_gateway):
    gateway = deep_gateway
    await rest_a_book(gateway, 40)  # a depth snapshot of 80 levels: compression pays
    deflate = await DeflateClient.connect(gateway, extension=PerMessageDeflate())
    try:
        assert deflate.accepted is not None
        assert [type(e) for e in deflate.accepted.extensions] == [PerMessageDeflate]
        assert deflate.extension_header == (
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            b"server_max_window_bits=15")
        async with open_client(gateway) as plain:
            clients: dict[str, DeflateClient | Client] = {"deflate": deflate, "plain": plain}
            received: dict[str, list[Message]] = {name: [] for name in clients}
            for name, client in clients.items():
                for request in SUBSCRIPTIONS:
                    await client.send(request)
                # three replies, a depth and a top-of-book snapshot
                received[name] += [await client.receive() for _ in range(5)]
            # Each order trades and moves the top of book and the depth: three messages,
            # all received before the next order (so no two fan-out passes merge).
            for side, price, quantity in (("buy", "51000.00", "0.05"), ("sell", "49039.00",
                                                                        "0.01")):
                await place(gateway, "taker", side, price, quantity)
                for name, client in clients.items():
                    received[name] += [await client.receive() for _ in range(3)]
    finally:
        await deflate.aclose()
    assert by_type(received["deflate"]) == by_type(received["plain"])
    assert {"depth_snapshot", "orderbook_snapshot", "depth_update", "trade_executed"} <= set(
        by_type(received["plain"]))
    assert deflate.compressed_frames() >= 2  # the depth snapshot and updates at least
    assert (await stats(gateway))["messages_compressed"] > 0


async def test_a_compressed_client_message_is_understood(gateway):
    client = await DeflateClient.connect(gateway, extension=PerMessageDeflate())
    try:
        reply = await client.request(action="subscribe", stream="trades", symbol=BTC, id="c1")
        assert reply == {"type": "subscribed", "id": "c1", "stream": "trades", "symbol": BTC,
                         "epoch": gateway.epoch, "seq": 0}
        await client.send({"action": "ping", "id": "fragmented"}, fragments=3)
        assert await client.receive() == {"type": "pong", "id": "fragmented"}
    finally:
        await client.aclose()
    firsts = frame_firsts(masked_to_unmasked(bytes(client.sent)))
    assert firsts[0] & 0x40, "the subscribe went out compressed"
    assert [bool(first & 0x40) for first in firsts[1:]] == [True, False, False]  # 1st only


def masked_to_unmasked(data: bytes) -> bytes:
    """Client frames with their masks removed, so that :func:`frame_firsts` can read them."""
    out = b""
    while (header := read_header(data)) is not None:
        end = header.size + header.length
        payload = unmask(data[header.size:end], data[header.key])
        out += frame_header(header.first, header.length) + payload
        data = data[end:]
    return out


async def test_each_message_is_compressed_once_for_all_its_subscribers(gateway):
    clients = [await DeflateClient.connect(gateway, extension=PerMessageDeflate())
               for _ in range(3)]
    try:
        async with open_client(gateway) as plain:
            await plain.subscribe("trades", BTC)
            await place(gateway, "maker", "sell", "50000.00", "0.01")
            await place(gateway, "taker", "buy", "50000.00", "0.001")
            await plain.receive()
            assert (await stats(gateway))["messages_compressed"] == 0  # nobody asked for it
            for index, client in enumerate(clients):
                await client.request(action="subscribe", stream="trades", symbol=BTC, id=index)
            for _ in range(4):
                await place(gateway, "taker", "buy", "50000.00", "0.001")
            for client in clients:
                trades = [await client.receive() for _ in range(4)]
                assert [t["seq"] for t in trades] == [2, 3, 4, 5]
            plain_trades = [await plain.receive() for _ in range(4)]
            assert trades == plain_trades
    finally:
        for client in clients:
            await client.aclose()
    assert (await stats(gateway))["messages_compressed"] == 4  # not 12


async def test_each_client_gets_the_window_it_asked_for(deep_gateway):
    gateway = deep_gateway
    await rest_a_book(gateway, 40)
    small = await DeflateClient.connect(
        gateway, extension=PerMessageDeflate(server_max_window_bits=9))
    large = await DeflateClient.connect(gateway, extension=PerMessageDeflate())
    try:
        assert small.extension_header is not None
        assert small.extension_header.endswith(b"server_max_window_bits=9")
        async with open_client(gateway) as plain:
            expected = [await plain.subscribe("depth", BTC), await plain.receive()]
            for client in (small, large):  # wsproto inflates with the agreed window
                reply = await client.request(action="subscribe", stream="depth", symbol=BTC,
                                             id=expected[0]["id"])
                assert [reply, await client.receive()] == expected
                assert client.compressed_frames() == 1
    finally:
        for client in (small, large):
            await client.aclose()


@pytest.mark.parametrize("offer", [
    b"permessage-deflate; server_max_window_bits=8",
    b"permessage-deflate; unknown",
    b"x-webkit-deflate-frame",
])
async def test_an_offer_we_cannot_honour_is_declined(gateway, offer):
    client = await DeflateClient.connect(gateway, offer=offer)
    try:
        assert client.extension_header is None
        reply = await client.request(action="subscribe", stream="trades", id=1)
        assert reply["type"] == "subscribed"
    finally:
        await client.aclose()


async def test_compression_switched_off_is_never_agreed(start_gateway):
    gateway = await start_gateway(websocket={"compression": False})
    client = await DeflateClient.connect(gateway, extension=PerMessageDeflate())
    try:
        assert client.extension_header is None
        assert client.accepted is not None
        assert client.accepted.extensions == []
        reply = await client.request(action="subscribe", stream="depth", symbol=BTC, id=1)
        assert reply["type"] == "subscribed"
        assert (await client.receive())["type"] == "depth_snapshot"
        assert client.compressed_frames() == 0
        # A compressed frame now breaks the protocol: 1002.
        await client.stream.send_all(compressed_client_frame(b'{"action": "ping"}'))
        assert (await client.closed_with()) == (1002, b"")
    finally:
        await client.aclose()


def compressed_client_frame(payload: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    return client_frame(TEXT, data, rsv=RSV1, key=b"\x05\x06\x07\x08")


@pytest.mark.parametrize(("frame", "code"), [
    (client_frame(TEXT, b"\xff\xff\xff\xff", rsv=RSV1, key=b"\1\2\3\4"), 1007),
    (compressed_client_frame(b" " * 300_000), 1009),  # over 4 x 64 KiB once inflated
], ids=["invalid_deflate_data", "inflates_past_the_limit"])
async def test_a_bad_compressed_message_gets_its_close_code_then_eof(gateway, frame, code):
    client = await DeflateClient.connect(gateway, extension=PerMessageDeflate())
    try:
        await client.stream.send_all(frame)
        assert (await client.closed_with()) == (code, b"")
    finally:
        await client.aclose()
    await wait_for_stats(gateway, lambda s: s["connections"] == 0)

