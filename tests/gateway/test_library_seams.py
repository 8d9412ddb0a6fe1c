"""The behaviours of trio-websocket and wsproto that the gateway builds on still hold.

The gateway uses only trio-websocket's public API (``wrap_server_stream``,
``WebSocketRequest.accept(extra_headers=...)``, ``WebSocketConnection.closed``),
but it relies on how that API behaves (see ``gateway/_transport.py`` and
``gateway/_deflate.py``):

* the stream handed to ``wrap_server_stream`` carries every byte, and each
  wsproto event's bytes go to one ``send_all`` call: the 101 response, each
  ping, pong and close frame (the transport tells the handshake and the close
  frame apart by their first bytes);
* on a frame wsproto refuses, trio-websocket records the close code in
  ``closed`` and closes the stream without sending the close frame: the
  transport defers that ``aclose`` and sends the frame itself;
* ``accept`` never tells wsproto about an extension, so a compressed frame
  reaching wsproto fails the connection: the transport inflates first;
* ``request.headers`` leaves out the extension offers (and ``Host``), so the
  listener reads the request head itself before handing it on.

If a new release changes any of these, a test here fails before a client sees
a missing close frame or a refused compressed message. pyproject.toml pins
trio-websocket below 0.13 for the same reason.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from gateway._frames import client_frame_header, text_frame
from gateway._transport import State

PING_PAYLOAD = b"seam"


class Recorder(trio.abc.Stream):
    """A stream that records each ``send_all`` call and whether ``aclose`` was called."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.sent: list[bytes] = []
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.closed = True
        await self.stream.aclose()


@asynccontextmanager
async def server_and_raw_client(
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[tuple[WebSocketRequest, Recorder, trio.SocketStream]]:
    """A trio-websocket server request on a recorded socket, and the raw client socket."""
    left, right = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server, client = Recorder(trio.SocketStream(left)), trio.SocketStream(right)
    head = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + b"".join(name + b": " + value + b"\r\n" for name, value in headers or []) + b"\r\n")
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await client.send_all(head)
                request = await wrap_server_stream(nursery, server)
                yield request, server, client
                nursery.cancel_scope.cancel()
    finally:
        await server.stream.aclose()
        await client.aclose()


async def read_response_head(client: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await client.receive_some(4096)
    return data


def masked(first: int, payload: bytes) -> bytes:
    return client_frame_header(first, len(payload)) + payload


async def test_each_event_goes_out_in_one_send_all_call():
    async with server_and_raw_client() as (request, server, client):
        ws = await request.accept()
        head = await read_response_head(client)
        assert server.sent == [head]
        assert head.startswith(b"HTTP/1.1 101 ")  # how the transport sees the connection open
        await client.send_all(masked(0x89, b"hi"))  # a ping: its pong is one call
        with trio.fail_after(5):
            while len(server.sent) < 2:
                await trio.sleep(0.01)
        assert server.sent[1] == bytes([0x8A, 2]) + b"hi"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.aclose, 4321, "bye")
            with trio.fail_after(5):
                while len(server.sent) < 3:
                    await trio.sleep(0.01)
            assert server.sent[2] == bytes([0x88, 5]) + (4321).to_bytes(2, "big") + b"bye"
            await client.send_all(masked(0x88, (4321).to_bytes(2, "big")))


async def test_a_refused_frame_closes_the_stream_without_the_close_frame():
    async with server_and_raw_client() as (request, server, client):
        ws = await request.accept()
        await read_response_head(client)
        await client.send_all(bytes([0x81, 2]) + b"hi")  # unmasked: a protocol error
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await ws.get_message()
        assert ws.closed is not None
        assert ws.closed.code == 1002
        with trio.fail_after(5):
            while not server.closed:  # the library closes the stream...
                await trio.sleep(0.01)
        assert not any(data[:1] == b"\x88" for data in server.sent)  # ...without a close frame


async def test_accept_does_not_tell_wsproto_of_an_extension():
    offer = [(b"Sec-WebSocket-Extensions", b"permessage-deflate")]
    async with server_and_raw_client(offer) as (request, _server, client):
        # Not among the public headers either: the listener reads offers from the raw head.
        assert b"sec-websocket-extensions" not in dict(request.headers)
        answer = (b"sec-websocket-extensions", b"permessage-deflate")
        ws = await request.accept(extra_headers=[answer])
        assert b"sec-websocket-extensions: permessage-deflate" in (
            await read_response_head(client)).lower()
        # "hi" compressed, RSV1 set: wsproto, never told, refuses it.
        await client.send_all(masked(0xC1, b"\xcb\xc8\x04\x00"))
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await ws.get_message()
        assert ws.closed is not None
        assert ws.closed.code == 1002


# ----------------------------------------------------- through the gateway


async def server_connection(gateway):
    with trio.fail_after(5):
        while not gateway._ws._connections:
            await trio.sleep(0.01)
    (connection,) = gateway._ws._connections
    return connection


async def test_our_frames_and_the_librarys_share_one_ordered_stream(gateway, ws_connect):
    client: WebSocketConnection
    async with ws_connect(f"{gateway.endpoints.ws_url}/ws") as client:
        connection = await server_connection(gateway)
        assert connection._transport.state is State.OPEN
        # A frame written by us and a ping written by trio-websocket arrive whole, in order.
        assert connection.offer(text_frame(b'{"hello": 1}'))
        with trio.fail_after(5):
            await connection._ws.ping(PING_PAYLOAD)  # returns when the client's pong came back
            assert json.loads(await client.get_message()) == {"hello": 1}
